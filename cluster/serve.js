#!/usr/bin/env node
// Launcher: the build of cluster/serve.ts lives in dist/ (npm run build).
import '../dist/cluster/serve.js';
