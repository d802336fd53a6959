// Launcher: the build of bench/commit-point.ts lives in dist/ (npm run build).
import '../dist/bench/commit-point.js';
