// Launcher: the build of bench/client-driver.ts lives in dist/ (npm run build).
import '../dist/bench/client-driver.js';
