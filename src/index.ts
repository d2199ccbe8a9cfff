/**
 * Pangea: a consensus-first replicated state machine server.
 * The package's public surface; the server itself is started with `pangea serve`.
 */
export { PangeaClient, PangeaError } from './client.js';
export type { PangeaClientOptions, GetResult, Item, ListOptions, TxnRequest, TxnCompare, TxnOp, TxnResult, Member, ClusterInfo, LeaseInfo } from './client.js';
export { Election, Lease, Lock, type Leader, type LockOptions } from './recipes.js';
