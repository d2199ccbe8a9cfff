/**
 * Provider records on the log (API contract, "Providers"): who holds what, netabase's
 * provider records kept consistently. A record is (key, provider) -> addresses, on a lease:
 * when the lease ends (expiry or revoke) its records go with it, at apply, in the budget of
 * keys lease expiry deletes a command (kv.ts dropLease), as `provider` deletes with cause
 * `lease` in the journal. At most PROVIDERS_PER_KEY_MAX providers a key.
 *
 * Tables (in snapshots): `sm.providers` (u16 key length, key, provider -> [revision, addrs,
 * lease]), `sm.provided` (u16 provider length, provider, key: what a provider provides),
 * `sm.lease_providers` (u64 lease, u16 key length, key, provider: a lease's records).
 */
import { wellFormed } from '../text.js';
import { pack, prefixEnd, u64Key, unpack } from '../storage/env.js';
import { KEY_BYTES_MAX, PROVIDER_ADDR_BYTES_MAX, PROVIDER_BYTES_MAX, PROVIDERS_PER_KEY_MAX, type ApplyResult, type ProviderCmd } from './command.js';
import type { Change } from './effects.js';
import type { StateTables } from './staged.js';

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
// ignoreBOM: a name or key may start with U+FEFF, which the default decoder drops (helper-48:
// a provider "\uFEFFp" was reaped as "p", another lease's record).
const fromUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

export interface ProviderRecord {
  readonly key: Uint8Array;
  readonly provider: string;
  readonly addrs: readonly string[];
  readonly lease: number;
  readonly revision: number;
}

/** What apply needs around it: the tables, this index, the journal's changes, and whether a
 *  lease is live now (and a way to count a record on it or off it). */
export interface ProviderApplyContext {
  readonly t: StateTables;
  readonly index: number;
  readonly changes: Change[];
  /** Keys (records included) the lease may still take, or null when it is not live. */
  readonly leaseRoom: (lease: number) => number | null;
  readonly onLease: (lease: number, delta: number) => void;
}

function lengthPrefixed(head: Uint8Array, tail: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + head.byteLength + tail.byteLength);
  out[0] = head.byteLength >> 8;
  out[1] = head.byteLength & 0xff;
  out.set(head, 2);
  out.set(tail, 2 + head.byteLength);
  return out;
}

/** Every record of `key` sorts under this prefix (the key's length comes first). */
const keyPrefix = (key: Uint8Array): Uint8Array => lengthPrefixed(key, EMPTY);
const recordKey = (key: Uint8Array, provider: string): Uint8Array => lengthPrefixed(key, utf8.encode(provider));
const providedKey = (provider: string, key: Uint8Array): Uint8Array => lengthPrefixed(utf8.encode(provider), key);
const leaseRow = (lease: number, key: Uint8Array, provider: string): Uint8Array => u64Key(lease, recordKey(key, provider));


/** Why a provider command is malformed, or null. */
function problem(op: ProviderCmd): string | null {
  if (op.key.byteLength < 1 || op.key.byteLength > KEY_BYTES_MAX) return `key must be 1 to ${KEY_BYTES_MAX} bytes`;
  const p = utf8.encode(op.provider).byteLength;
  if (p < 1 || p > PROVIDER_BYTES_MAX || op.provider.includes('/') || !wellFormed(op.provider)) return `provider must be 1 to ${PROVIDER_BYTES_MAX} bytes of UTF-8 without "/"`;
  if (op.t === 'provider_put' && op.addrs.some((a) => a.length < 1 || utf8.encode(a).byteLength > PROVIDER_ADDR_BYTES_MAX)) return `addresses must be 1 to ${PROVIDER_ADDR_BYTES_MAX} bytes`;
  return null;
}

function readRecord(t: StateTables, key: Uint8Array, provider: string): ProviderRecord | undefined {
  const v = t.get('providers', recordKey(key, provider));
  if (v === undefined) return undefined;
  const [revision, addrs, lease] = unpack(v) as [number, string[], number];
  return { key, provider, addrs, lease, revision };
}

export function applyProviderCmd(ctx: ProviderApplyContext, op: ProviderCmd): ApplyResult {
  const { t, index } = ctx;
  const bad = problem(op);
  if (bad !== null) return { kind: 'invalid', index, message: bad };
  const old = readRecord(t, op.key, op.provider);
  if (op.t === 'provider_delete') {
    if (old === undefined) return { kind: 'provider_deleted', index, deleted: false };
    remove(ctx, old, 'delete');
    return { kind: 'provider_deleted', index, deleted: true };
  }
  const room = ctx.leaseRoom(op.lease);
  if (room === null) return { kind: 'lease_not_found', index, id: op.lease };
  if (old?.lease !== op.lease && room < 1) return { kind: 'limit_reached', index, message: `lease ${op.lease} holds as many keys and provider records as a lease may` };
  if (old === undefined) {
    let n = 0;
    const prefix = keyPrefix(op.key);
    for (const _ of t.keys('providers', { start: prefix, end: prefixEnd(prefix)!, limit: PROVIDERS_PER_KEY_MAX })) n++;
    if (n >= PROVIDERS_PER_KEY_MAX) return { kind: 'limit_reached', index, message: `this key has ${PROVIDERS_PER_KEY_MAX} providers, the most it may have` };
  }
  if (old !== undefined && old.lease !== op.lease) {
    t.remove('leaseProviders', leaseRow(old.lease, op.key, op.provider));
    ctx.onLease(old.lease, -1);
  }
  if (old?.lease !== op.lease) {
    t.put('leaseProviders', leaseRow(op.lease, op.key, op.provider), EMPTY);
    ctx.onLease(op.lease, 1);
  }
  t.put('providers', recordKey(op.key, op.provider), pack([index, [...op.addrs], op.lease]));
  t.put('provided', providedKey(op.provider, op.key), EMPTY);
  ctx.changes.push({ type: 'provider', key: op.key, provider: op.provider, addrs: [...op.addrs], lease: op.lease });
  return { kind: 'provider_put', index, revision: index };
}

function remove(ctx: ProviderApplyContext, r: ProviderRecord, cause: 'delete' | 'lease'): void {
  const { t } = ctx;
  t.remove('providers', recordKey(r.key, r.provider));
  t.remove('provided', providedKey(r.provider, r.key));
  t.remove('leaseProviders', leaseRow(r.lease, r.key, r.provider));
  if (cause === 'delete') ctx.onLease(r.lease, -1);
  ctx.changes.push({ type: 'provider', key: r.key, provider: r.provider, cause });
}

/** Deletes up to `budget` of the records on `lease` (its end), returns how many it did. The
 *  caller counts them off the lease. */
export function dropLeaseProviders(ctx: ProviderApplyContext, lease: number, budget: number): number {
  if (budget <= 0) return 0;
  const rows: Uint8Array[] = [];
  for (const k of ctx.t.keys('leaseProviders', { start: u64Key(lease), end: u64Key(lease + 1), limit: budget })) rows.push(Uint8Array.prototype.slice.call(k as Uint8Array));
  for (const row of rows) {
    const rec = row.subarray(8);
    const keyLength = (rec[0]! << 8) | rec[1]!;
    const key = rec.slice(2, 2 + keyLength);
    const provider = fromUtf8.decode(rec.subarray(2 + keyLength));
    const r = readRecord(ctx.t, key, provider);
    // A row whose record is gone or on another lease is stale: never another lease's record.
    if (r === undefined || r.lease !== lease) ctx.t.remove('leaseProviders', row);
    else remove(ctx, r, 'lease');
  }
  return rows.length;
}

/** The providers of `key`, by provider name. */
export function providersOf(t: StateTables, key: Uint8Array): ProviderRecord[] {
  const out: ProviderRecord[] = [];
  const prefix = keyPrefix(key);
  for (const { key: k, value } of t.range('providers', { start: prefix, end: prefixEnd(prefix)! })) {
    const [revision, addrs, lease] = unpack(value) as [number, string[], number];
    out.push({ key, provider: fromUtf8.decode((k as Uint8Array).subarray(prefix.byteLength)), addrs, lease, revision });
  }
  return out;
}

/** What `provider` provides, by key, after `after` (exclusive), at most `limit`. */
export function providedBy(t: StateTables, provider: string, after: Uint8Array | null, limit: number): { items: ProviderRecord[]; more: boolean } {
  const items: ProviderRecord[] = [];
  const prefix = lengthPrefixed(utf8.encode(provider), EMPTY);
  const start = after === null ? prefix : lengthPrefixed(utf8.encode(provider), Uint8Array.of(...after, 0));
  for (const k of t.keys('provided', { start, end: prefixEnd(prefix)! })) {
    const key = (k as Uint8Array).slice(prefix.byteLength);
    const r = readRecord(t, key, provider);
    if (r === undefined) continue;
    if (items.length === limit) return { items, more: true };
    items.push(r);
  }
  return { items, more: false };
}
