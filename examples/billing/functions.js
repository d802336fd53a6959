// Launcher: the build of this module lives in dist/ (npm run build); --functions takes this path.
export * from '../../dist/examples/billing/functions.js';
