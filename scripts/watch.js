// Launcher: the build of scripts/watch.ts lives in dist/ (npm run build).
import '../dist/scripts/watch.js';
