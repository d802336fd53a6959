// Launcher: the build of bench/cluster-handover.ts lives in dist/ (npm run build).
import '../dist/bench/cluster-handover.js';
