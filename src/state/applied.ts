/** The state machine's applied record (kv.ts writes it with every apply; snapshots carry it). */
import type { ConfigEpoch, LogPoint } from '../consensus/index.js';
import { pack, u64Key } from '../storage/env.js';
import type { StateTables } from './staged.js';
import type { OpenSegment } from './segments.js';

/** What `sm.meta/applied` holds. */
export interface AppliedRecord {
  readonly point: LogPoint;
  readonly chain: Uint8Array;
  /** The log's clock (see the top of kv.ts). */
  readonly maxTime: number;
  /** Set by `cluster_settings`; absent: SESSION_TTL_MS_DEFAULT. */
  readonly sessionTtlMs?: number;
  /** Set by `cluster_settings`; absent: LEASES_MAX_DEFAULT. */
  readonly maxLeases?: number;
  /** Leases held, and keys attached to any of them (absent: none; kv.ts). */
  readonly leases?: number;
  readonly leasedKeys?: number;
  /** The cluster's apply level (command.ts), set by `cluster_level`; absent: APPLY_LEVEL_DEFAULT. */
  readonly level?: number;
  /** The archive segment being filled (segments.ts). */
  readonly open: OpenSegment;
}

/**
 * A row of `sm.chain`: the chain value after a command, then the slot it was chosen at (u64
 * big-endian). The slot lets a node vouch that no command lies between an index and a slot
 * (`chainAnswer` in src/sync/range-check.ts).
 */
export function chainRow(chain: Uint8Array, slot: number): Uint8Array {
  const row = Buffer.allocUnsafe(chain.byteLength + 8); // every byte is written below
  row.set(chain, 0);
  row.writeBigUInt64BE(BigInt(slot), chain.byteLength);
  return row;
}

export function readChainRow(row: Uint8Array): { chain: Uint8Array; slot: number } {
  const b = Buffer.from(row.buffer, row.byteOffset, row.byteLength);
  return { chain: new Uint8Array(b.subarray(0, b.byteLength - 8)), slot: Number(b.readBigUInt64BE(b.byteLength - 8)) };
}

/**
 * Records the newest of `epochs` in `sm.configs` (unless a record for its slot exists, or
 * `replace`): the configurations a node reports when a peer asks whom the voters follow
 * (src/sync/range-check.ts). Written at apply, at bootstrap and restore, and by
 * `--force-new-cluster`; a few bytes per membership change, never pruned.
 */
export function recordConfig(t: StateTables, epochs: readonly ConfigEpoch[], replace = false): void {
  const newest = epochs[epochs.length - 1];
  if (newest === undefined) return;
  const key = u64Key(newest.fromSlot);
  if (replace || t.get('configs', key) === undefined) t.put('configs', key, pack(newest.config.voters));
}
