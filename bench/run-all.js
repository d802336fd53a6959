// Launcher: the build of bench/run-all.ts lives in dist/ (npm run build).
import '../dist/bench/run-all.js';
