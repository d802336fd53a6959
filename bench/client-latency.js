// Launcher: the build of bench/client-latency.ts lives in dist/ (npm run build).
import '../dist/bench/client-latency.js';
