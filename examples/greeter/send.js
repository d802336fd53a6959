// Launcher: the build of examples/greeter/send.ts lives in dist/ (npm run build).
import '../../dist/examples/greeter/send.js';
