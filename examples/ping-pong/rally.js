// Launcher: the build of examples/ping-pong/rally.ts lives in dist/ (npm run build).
import '../../dist/examples/ping-pong/rally.js';
