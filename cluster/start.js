#!/usr/bin/env node
// Launcher: the build of cluster/start.ts lives in dist/ (npm run build).
import '../dist/cluster/start.js';
