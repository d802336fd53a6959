// Launcher: the build of bench/remote.ts lives in dist/ (npm run build).
import '../dist/bench/remote.js';
