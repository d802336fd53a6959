// Launcher: the build of bench/checkpoints.ts lives in dist/ (npm run build).
import '../dist/bench/checkpoints.js';
