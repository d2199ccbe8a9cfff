/**
 * The effects journal: what each applied command changed, written by apply in the same
 * transaction as the change itself (table `sm.effects`, keyed by the command's index; only
 * commands that changed a key have a row). Watch (src/net/watch.ts) serves this journal and
 * never re-reads commands: which branch of a txn ran, and whether a delete found its key,
 * depend on the state at that index.
 *
 * A put's revision is its index, so it is not stored. A delete is recorded only when the
 * key existed (as in etcd), with its cause: a `delete` command, a `txn` branch, or (leases)
 * a `lease` expiry. The journal holds every index after its floor (`journalFrom`): the
 * applied point a store was bootstrapped, restored or opened at before the journal existed,
 * raised as the hot log is pruned (LmdbStateStore.pruneChain).
 */
import { pack, unpack } from '../storage/env.js';

export type DeleteCause = 'delete' | 'txn' | 'lease';

export type Change =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array; readonly lease?: number }
  | { readonly type: 'delete'; readonly key: Uint8Array; readonly cause: DeleteCause }
  /** A block changed (block-apply.ts): `transform` is its part of the action's transform,
   *  canonical JSON (`{"inserts":{id:body}}`, `{"updates":{id:[ops]}}` or `{"deletes":[id]}`). */
  | BlockChange
  | ProviderChange
  | RecordChange;

/** A record written (`record`: its canonical JSON) or deleted (no `record`), records.ts. */
export interface RecordChange {
  readonly type: 'record';
  readonly collection: string;
  readonly pk: string | number;
  readonly record?: string;
}

/** A provider record written (`addrs`, `lease`) or deleted (`cause`: a delete command, or its
 *  lease's end). */
export interface ProviderChange {
  readonly type: 'provider';
  readonly key: Uint8Array;
  readonly provider: string;
  readonly addrs?: readonly string[];
  readonly lease?: number;
  readonly cause?: 'delete' | 'lease';
}

export interface BlockChange {
  readonly type: 'block';
  readonly id: string;
  readonly transform: string;
}

/** The key/value changes (puts and deletes), as opposed to blocks'. */
export type KeyChange = Exclude<Change, BlockChange | ProviderChange | RecordChange>;

/** One journal row as stored: its index and the encoded changes (the archive's unit,
 *  archive/effects-object.ts). */
export interface EffectsRow {
  readonly index: number;
  readonly bytes: Uint8Array;
}

/** What a cold read of archived effects found (archive/cold.ts, read by net/watch.ts): at
 *  most `limit` rows after the index asked for, and every change through `through` is in
 *  them (the segment's end when they are its last); `missing` when the archive holds no
 *  effects there. */
export type ColdEffects = { readonly rows: readonly Effects[]; readonly through: number } | { readonly missing: string };

/** The changes of one index, in the order they were applied. */
export interface Effects {
  readonly index: number;
  readonly changes: readonly Change[];
}

const CAUSES: readonly DeleteCause[] = ['delete', 'txn', 'lease'];

/** Stored as a msgpack list of `[0, key, value]` or `[0, key, value, lease]` (put),
 *  `[1, key, cause]` (delete), `[2, id, transform]` (block), `[3, key, provider, addrs,
 *  lease]` (a provider record written), `[4, key, provider, cause]` (deleted), `[5,
 *  collection, pk, record]` (a record written) and `[6, collection, pk]` (deleted). */
export function encodeChanges(changes: readonly Change[]): Uint8Array {
  return pack(changes.map((c) => {
    if (c.type === 'block') return [2, c.id, c.transform];
    if (c.type === 'record') return c.record === undefined ? [6, c.collection, c.pk] : [5, c.collection, c.pk, c.record];
    if (c.type === 'provider') return c.cause === undefined ? [3, c.key, c.provider, c.addrs ?? [], c.lease ?? 0] : [4, c.key, c.provider, c.cause === 'lease' ? 1 : 0];
    return c.type === 'put' ? (c.lease === undefined ? [0, c.key, c.value] : [0, c.key, c.value, c.lease]) : [1, c.key, CAUSES.indexOf(c.cause)];
  }));
}

export function decodeChanges(stored: Uint8Array): Change[] {
  const rows = unpack(stored) as [number, Uint8Array | string, Uint8Array | number | string, unknown?, number?][];
  return rows.map(([t, key, x, y, z]): Change => {
    const lease = y as number | undefined;
    if (t === 2) return { type: 'block', id: key as string, transform: x as string };
    if (t === 5) return { type: 'record', collection: key as string, pk: x as string | number, record: y as string };
    if (t === 6) return { type: 'record', collection: key as string, pk: x as string | number };
    if (t === 3) return { type: 'provider', key: key as Uint8Array, provider: x as string, addrs: y as string[], lease: z! };
    if (t === 4) return { type: 'provider', key: key as Uint8Array, provider: x as string, cause: y === 1 ? 'lease' : 'delete' };
    if (t === 0) return lease === undefined ? { type: 'put', key: key as Uint8Array, value: x as Uint8Array } : { type: 'put', key: key as Uint8Array, value: x as Uint8Array, lease };
    return { type: 'delete', key: key as Uint8Array, cause: CAUSES[x as number] ?? 'delete' };
  });
}
