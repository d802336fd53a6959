// Launcher: the build of bench/shard-loop.ts lives in dist/ (npm run build).
import '../dist/bench/shard-loop.js';
