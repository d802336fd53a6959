// Launcher: the build of bench/function-to-function.ts lives in dist/ (npm run build).
import '../dist/bench/function-to-function.js';
