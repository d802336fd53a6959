// Launcher: the build of bench/cluster-throughput.ts lives in dist/ (npm run build).
import '../dist/bench/cluster-throughput.js';
