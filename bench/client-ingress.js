// Launcher: the build of bench/client-ingress.ts lives in dist/ (npm run build).
import '../dist/bench/client-ingress.js';
