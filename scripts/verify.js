// Launcher: the build of scripts/verify.ts lives in dist/ (npm run build).
import '../dist/scripts/verify.js';
