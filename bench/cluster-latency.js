// Launcher: the build of bench/cluster-latency.ts lives in dist/ (npm run build).
import '../dist/bench/cluster-latency.js';
