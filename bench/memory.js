// Launcher: the build of bench/memory.ts lives in dist/ (npm run build).
import '../dist/bench/memory.js';
