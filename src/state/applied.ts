/** The state machine's applied record (kv.ts writes it with every apply; snapshots carry it). */
import type { LogPoint } from '../consensus/index.js';
import type { OpenSegment } from './segments.js';

/** What `sm.meta/applied` holds. */
export interface AppliedRecord {
  readonly point: LogPoint;
  readonly chain: Uint8Array;
  /** The log's clock (see the top of kv.ts). */
  readonly maxTime: number;
  /** Set by `cluster_settings`; absent: SESSION_TTL_MS_DEFAULT. */
  readonly sessionTtlMs?: number;
  /** The archive segment being filled (segments.ts). */
  readonly open: OpenSegment;
}
