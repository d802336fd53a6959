// Launcher: the build of bench/cluster-failover.ts lives in dist/ (npm run build).
import '../dist/bench/cluster-failover.js';
