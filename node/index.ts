/** Running nodes from code: `import { startNode } from 'statecraft/node'`. */
export { startNode, type NodeOptions, type NodeMetrics, type StatecraftNode, type CheckpointOptions } from './main/node.js';
export type { ClusterHooks, ClusterPort, CheckpointControl, RollBackResult } from './main/cluster-port.js';
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
