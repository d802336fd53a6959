// Launcher: the build of scripts/cluster.ts lives in dist/ (npm run build).
import '../dist/scripts/cluster.js';
