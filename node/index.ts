/** Running nodes from code: `import { startNode } from 'statecraft/node'`. */
export { startNode, type StatecraftNode } from './main/start-node.js';
export { ClientTokens, type Grant } from './main/client-tokens.js';
export type { NodeOptions, CheckpointOptions } from './main/options.js';
export type { NodeMetrics } from './main/node-metrics.js';
export type { ClusterHooks, ClusterPort, CheckpointControl, KeyGroupRoute, RollBackResult } from './main/cluster-port.js';
export { isCheckpointRef, type CheckpointRef } from './checkpoint/terms.js';
export {
  openBlobStore,
  parseBlobStoreUrl,
  BlobStoreError,
  BlobCorruptError,
  BlobStoreUnavailableError,
  type BlobStore,
  type OpenBlobStoreOptions,
} from './storage/blob-store.js';
export { FileBlobStore } from './storage/file-blob-store.js';
