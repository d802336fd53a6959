/** Running nodes from code: `import { startNode } from 'statecraft/node'`. */
export { startNode, type NodeOptions, type NodeMetrics, type StatecraftNode, type CheckpointOptions } from './node.js';
export type { ClusterHooks, ClusterPort, CheckpointControl, RollBackResult } from './cluster-port.js';
export {
  openBlobStore,
  parseBlobStoreUrl,
  BlobStoreError,
  BlobCorruptError,
  BlobStoreUnavailableError,
  type BlobStore,
  type OpenBlobStoreOptions,
} from './blob-store.js';
export { FileBlobStore } from './file-blob-store.js';
