/**
 * Pangea: a consensus-first replicated state machine server.
 * The package's public surface; the server itself is started with `pangea serve`.
 */
export { PangeaClient, PangeaError } from './client.js';
export type { PangeaClientOptions, GetResult, Item, ListOptions, TxnRequest, TxnCompare, TxnOp, TxnResult, Member, ClusterInfo } from './client.js';
