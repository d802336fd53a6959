// Launcher: the build of examples/billing/demo.ts lives in dist/ (npm run build).
import '../../dist/examples/billing/demo.js';
