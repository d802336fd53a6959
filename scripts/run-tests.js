// Launcher: the build of scripts/run-tests.ts lives in dist/ (npm run build).
import '../dist/scripts/run-tests.js';
