// Launcher: the build of bench/codec-bound.ts lives in dist/ (npm run build).
import '../dist/bench/codec-bound.js';
