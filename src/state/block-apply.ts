/**
 * Blocks on the log (API contract, "Blocks"): what `block_pend`, `block_commit` and
 * `block_cancel` do at apply, the reads beside them, and the blocks' history.
 *
 * State (in snapshots, equal on every replica):
 * - `sm.blocks`: id -> [revision, canonical body or null (a tombstone), revisions so far];
 * - `sm.actions`: action id -> a pending action (the blocks it holds, its reads and
 *   transform, when it lets go) or a committed one (its index: an action id commits once);
 * - `sm.block_holds`: block id -> the pending action holding it;
 * - `sm.action_expiry`: u64 expiry (log time) + action id, the order pends let go in.
 *
 * A pend holds every block it reads or changes, so that nothing it based its transform on
 * can change before it commits (holding only the changed ones would let two pends of a
 * write-skew pair both commit). Holds end by commit, cancel or expiry, which happens at apply
 * when log time passes the pend's `expiresAt` (its TTL plus LEASE_GRACE_MS, as leases': no
 * catch-up of log time lets go early), so a client that died holds nothing for long.
 *
 * History (`sm.block_log`, id + 0x00 + u64 revision, and `sm.block_revs` in revision order)
 * is local, as the effects journal is: written at apply, pruned with the hot log, not in
 * snapshots. A row holds the action and this block's part of its transform (`part`), and a
 * full copy of the body every HISTORY_FULL_EVERY revisions of the block (deletes and inserts
 * say the whole state by themselves), so any revision is rebuilt from at most that many
 * rows. A block whose previous revision has no row (its history was pruned, or the node was
 * restored from a snapshot) gets one holding the previous body before its next revision is
 * written; pruning keeps each block's newest row below the floor, as a full copy. So every
 * state from the floor on can be rebuilt.
 */
import canonicalize from 'canonicalize';
import { pack, readU64, u64Key, unpack } from '../storage/env.js';
import { ACTION_BLOCKS_MAX, LEASE_GRACE_MS, PEND_TTL_MS_MAX, type ApplyResult, type BlockCmd } from './command.js';
import type { Change } from './effects.js';
import { BlockError, applyTransform, canonicalBody, checkActionId, decodeBody, parseReads, parseTransform, replayPart, touchedBlocks, type Body, type BlockRead, type Transform } from './blocks.js';
import type { StateTables } from './staged.js';

/** A body is copied whole into a block's history once every this many revisions. */
export const HISTORY_FULL_EVERY = 32;
/** Pending actions let go in one command at most; the rest go with the next ones. */
export const ACTION_EXPIRIES_MAX = 1_000;
/** Bytes of stored bodies one action may change in all (each block is at most 1 MiB):
 *  decoding them costs apply time and heap on every replica (review: one small command
 *  updating 24 blocks of 1 MiB ran a 400 MB heap out). */
export const ACTION_BODY_BYTES_MAX = 8 * 1024 * 1024;
/** Missing transforms a conflict carries per block at most (API contract). */
export const CONFLICT_MISSING_MAX = 16;
/** Characters of transforms one page of history (or one block's missed transforms) holds
 *  at most, past its first item. */
export const REVISIONS_PAGE_BYTES_MAX = 1024 * 1024;
/** History rows a conflict's missing transforms are looked for in at most, per block. */
const MISSING_SCAN_MAX = 4_096;

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
// ignoreBOM: a name or key may start with U+FEFF, which the default decoder drops (helper-48:
// a provider "\uFEFFp" was reaped as "p", another lease's record).
const fromUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/** A block as `sm.blocks` holds it. */
export interface StoredBlock {
  readonly revision: number;
  /** Canonical JSON, or null: deleted (a tombstone at `revision`). */
  readonly body: Uint8Array | null;
  /** Revisions the block has had (its history's full copies are counted by it). */
  readonly n: number;
}

type PendingAction = { readonly s: 'p'; readonly blocks: readonly string[]; readonly reads: readonly BlockRead[]; readonly transform: string; readonly expiresAt: number };
type CommittedAction = { readonly s: 'c'; readonly index: number };
type StoredAction = PendingAction | CommittedAction;

/** A row of a block's history. */
interface HistoryRow {
  /** The action and this block's part of its transform (absent in a row that only keeps a
   *  body whose own revision is below the history). */
  readonly a?: string;
  readonly t?: string;
  /** The body after this revision, whole; `x`: the block is absent after it. */
  readonly f?: Uint8Array;
  readonly x?: true;
  /** The block's revision before this one, when it had one: rows are walked back by it
   *  (point reads only: a range over the history staged in one prune was quadratic). */
  readonly p?: number;
}

/** A block's state at a revision: its body, or null when absent (deleted or never made). */
export interface BlockState {
  readonly revision: number;
  readonly body: Body | null;
}

/** A revision as history lists it. */
export interface BlockRevision {
  readonly revision: number;
  readonly actionId: string;
  readonly transform: string;
}

/** What one command's block work needs from the apply around it (kv.ts ApplyBatch). */
export interface BlockApplyContext {
  readonly t: StateTables;
  /** Log time as of this command. */
  readonly now: number;
  readonly index: number;
  /** The journal's changes of this command (effects.ts). */
  readonly changes: Change[];
}

/** Recent ids' UTF-8 bytes: one command encodes its action's and blocks' ids up to eight
 *  times each (a tenth of a one-shot commit's apply, profiled). The bytes are shared: nothing
 *  may write into them (the tables copy keys they keep). */
const idCache = new Map<string, Uint8Array>();
const ID_CACHE_MAX = 256;
function idBytes(id: string): Uint8Array {
  let b = idCache.get(id);
  if (b === undefined) {
    if (idCache.size >= ID_CACHE_MAX) idCache.clear();
    idCache.set(id, (b = utf8.encode(id)));
  }
  return b;
}

/** A block as `sm.blocks` holds it: u64 revision, u32 revisions so far, a byte (1: a
 *  tombstone), then the canonical body. Not msgpack: its revision is read without decoding a
 *  body of up to 1 MiB (review: a stale-read check unpacked every body it named). */
export function encodeBlock(revision: number, body: Uint8Array | null, n: number): Uint8Array {
  const out = new Uint8Array(13 + (body?.byteLength ?? 0));
  out.set(u64Key(revision));
  new DataView(out.buffer).setUint32(8, n);
  out[12] = body === null ? 1 : 0;
  if (body !== null) out.set(body, 13);
  return out;
}

export function readBlock(t: StateTables, id: string): StoredBlock | undefined {
  return storedBlock(t.get('blocks', idBytes(id)));
}

/** The blocks of one command as `sm.blocks` held them when it started (decide). */
type Stored = Map<string, Uint8Array | undefined>;

function storedBlock(v: Uint8Array | undefined): StoredBlock | undefined {
  if (v === undefined) return undefined;
  const n = new DataView(v.buffer, v.byteOffset, v.byteLength).getUint32(8);
  return { revision: readU64(v), body: v[12] === 1 ? null : v.subarray(13), n };
}

/** A block's revision and stored body size, without its body. */
export function blockHead(t: StateTables, id: string): { revision: number; bytes: number } {
  const v = t.get('blocks', idBytes(id));
  return v === undefined ? { revision: 0, bytes: 0 } : { revision: readU64(v), bytes: v.byteLength - 13 };
}

function readAction(t: StateTables, actionId: string): StoredAction | undefined {
  const v = t.get('actions', idBytes(actionId));
  return v === undefined ? undefined : (unpack(v) as StoredAction);
}

function historyKey(id: string, revision: number): Uint8Array {
  const head = idBytes(id);
  const out = new Uint8Array(head.byteLength + 9);
  out.set(head);
  out.set(u64Key(revision), head.byteLength + 1);
  return out;
}

/** The bounds of one block's history rows: [id + 0x00, id + 0x01). */
function historyBounds(id: string): { lo: Uint8Array; hi: Uint8Array } {
  const head = idBytes(id);
  const lo = new Uint8Array(head.byteLength + 1);
  lo.set(head);
  const hi = Uint8Array.prototype.slice.call(lo);
  hi[head.byteLength] = 1;
  return { lo, hi };
}

const revisionOf = (key: Uint8Array): number => readU64(key, key.byteLength - 8);

/** The part of `t` that touches block `id`, as a transform of its own (canonical JSON). */
export function partOf(t: Transform, id: string): string {
  const part: Record<string, unknown> = {};
  if (Object.hasOwn(t.inserts, id)) part.inserts = { [id]: t.inserts[id] };
  if (Object.hasOwn(t.updates, id)) part.updates = { [id]: t.updates[id] };
  if (t.deletes.includes(id)) part.deletes = [id];
  return canonicalize(part) as string;
}

/** A transform as a command carries it (canonical JSON), parsed and judged; BlockError
 *  when it is not one. */
export function transformOf(json: string): Transform {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    throw new BlockError('bad_request', 'transform: not JSON');
  }
  return parseTransform(v);
}

/** Applies one block command (the caller has reaped expired pends first, up to
 *  ACTION_EXPIRIES_MAX of them: any left past their time are treated as gone here). */
export function applyBlockCmd(ctx: BlockApplyContext, op: BlockCmd): ApplyResult {
  const { t, index } = ctx;
  try {
    checkActionId(op.actionId);
    const action = live(ctx, op.actionId);
    if (op.t === 'block_cancel') {
      if (action?.s !== 'p') return { kind: 'action_not_found', index, actionId: op.actionId };
      drop(t, op.actionId, action);
      return { kind: 'block_cancelled', index, cancelled: true };
    }
    if (op.t === 'block_commit' && op.transform === undefined) {
      if (action?.s !== 'p') return { kind: 'action_not_found', index, actionId: op.actionId };
      // Its blocks were held since the pend: its reads still hold and its transform still
      // applies. Judged again all the same, before anything changes.
      const decided = decide(ctx, action.reads, transformOf(action.transform));
      if ('refused' in decided) return decided.refused;
      drop(t, op.actionId, action);
      return commit(ctx, op.actionId, action.transform, transformOf(action.transform), decided.changed, decided.stored);
    }
    if (action?.s === 'c') return { kind: 'action_reused', index, actionId: op.actionId, committed: action.index };
    if (action?.s === 'p') {
      // The same pend again (a retry after an unknown outcome): its first answer.
      if (op.t === 'block_pend' && op.transform === action.transform && sameReads(op.reads, action.reads)) return { kind: 'block_pended', index, actionId: op.actionId, expiresAt: action.expiresAt };
      return { kind: 'block_pending', index, pending: action.blocks.map((id) => ({ id, actionId: op.actionId, expiresAt: action.expiresAt })) };
    }
    const transform = transformOf(op.transform!);
    const reads = parseReads(op.reads, transform);
    const blocks = [...new Set([...reads.map((r) => r.id), ...touchedBlocks(transform)])].sort();
    if (blocks.length > ACTION_BLOCKS_MAX) throw new BlockError('bad_request', `an action reads or changes ${blocks.length} blocks; at most ${ACTION_BLOCKS_MAX}`);
    const pending: { id: string; actionId: string; expiresAt: number }[] = [];
    for (const id of blocks) {
      const holder = t.get('blockHolds', idBytes(id));
      if (holder === undefined) continue;
      // The hold names its action and when it lets go: the action itself (its reads and
      // transform, up to megabytes) is read only to drop it (review: 5 s a command).
      const [actionId, expiresAt] = unpack(holder) as [string, number];
      if (expiresAt > ctx.now) pending.push({ id, actionId, expiresAt });
      else live(ctx, actionId);
    }
    if (pending.length > 0) return { kind: 'block_pending', index, pending };
    const decided = decide(ctx, reads, transform);
    if ('refused' in decided) return decided.refused;
    if (op.t === 'block_commit') return commit(ctx, op.actionId, op.transform!, transform, decided.changed, decided.stored);
    if (!Number.isSafeInteger(op.ttlMs) || op.ttlMs < 1 || op.ttlMs > PEND_TTL_MS_MAX) throw new BlockError('bad_request', `a pend's ttl is 1 ms to ${PEND_TTL_MS_MAX / 1000} s`);
    const expiresAt = ctx.now + op.ttlMs + LEASE_GRACE_MS;
    const stored: PendingAction = { s: 'p', blocks, reads, transform: op.transform!, expiresAt };
    t.put('actions', idBytes(op.actionId), pack(stored));
    t.put('actionExpiry', u64Key(expiresAt, idBytes(op.actionId)), EMPTY);
    const hold = pack([op.actionId, expiresAt]);
    for (const id of blocks) t.put('blockHolds', idBytes(id), hold);
    return { kind: 'block_pended', index, actionId: op.actionId, expiresAt };
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
    return e.code === 'invalid_operation' ? { kind: 'invalid_operation', index, message: e.message } : { kind: 'invalid', index, message: e.message };
  }
}

/** Action `actionId` as of this command: a pend whose time has come is let go here, as the
 *  reaper would have (which lets go of at most ACTION_EXPIRIES_MAX a command). */
function live(ctx: BlockApplyContext, actionId: string): StoredAction | undefined {
  const action = readAction(ctx.t, actionId);
  if (action?.s === 'p' && action.expiresAt <= ctx.now) {
    drop(ctx.t, actionId, action);
    return undefined;
  }
  return action;
}

function sameReads(a: readonly { id: string; revision: number }[], b: readonly BlockRead[]): boolean {
  return a.length === b.length && a.every((r, i) => r.id === b[i]!.id && r.revision === b[i]!.revision);
}

/** The blocks `transform` changes, or the answer that refuses it: a stale read (conflict)
 *  or an op that cannot apply. */
function decide(ctx: BlockApplyContext, reads: readonly BlockRead[], transform: Transform): { refused: ApplyResult } | { changed: Map<string, Uint8Array | null>; stored: Stored } {
  // Each block read once for the whole command (nothing is written until commit).
  const stored: Stored = new Map();
  const raw = (id: string): Uint8Array | undefined => {
    if (!stored.has(id)) stored.set(id, ctx.t.get('blocks', idBytes(id)));
    return stored.get(id);
  };
  const conflicts: { id: string; expected: number; current: number }[] = [];
  for (const r of reads) {
    const v = raw(r.id);
    const current = v === undefined ? 0 : readU64(v);
    if (current !== r.revision) conflicts.push({ id: r.id, expected: r.revision, current });
  }
  if (conflicts.length > 0) return { refused: { kind: 'block_conflict', index: ctx.index, conflicts } };
  let bytes = 0;
  for (const id of touchedBlocks(transform)) bytes += Math.max(0, (raw(id)?.byteLength ?? 13) - 13);
  if (bytes > ACTION_BODY_BYTES_MAX) {
    return { refused: { kind: 'invalid_operation', index: ctx.index, message: `the action changes blocks of ${bytes} bytes in all; at most ${ACTION_BODY_BYTES_MAX}` } };
  }
  try {
    return { changed: applyTransform((id) => bodyOf(storedBlock(raw(id))), transform, true), stored };
  } catch (e) {
    if (e instanceof BlockError) return { refused: { kind: e.code === 'invalid_operation' ? 'invalid_operation' : 'invalid', index: ctx.index, message: e.message } };
    throw e;
  }
}

function bodyOf(b: StoredBlock | undefined): Body | undefined {
  return b?.body == null ? undefined : decodeBody(b.body);
}

/** Writes what `decide` found `transform` changes, at this index: new revisions, history,
 *  the journal. */
function commit(ctx: BlockApplyContext, actionId: string, _json: string, transform: Transform, changed: Map<string, Uint8Array | null>, stored: Stored): ApplyResult {
  const { t, index } = ctx;
  // No prototype: a block may be called __proto__ (review of the blocks apply).
  const revisions = Object.create(null) as Record<string, number>;
  for (const [id, bytes] of changed) {
    const old = stored.has(id) ? storedBlock(stored.get(id)) : readBlock(t, id);
    const n = (old?.n ?? 0) + 1;
    if (old !== undefined && t.get('blockLog', historyKey(id, old.revision)) === undefined) {
      // The previous revision's row is gone (pruned, or before a restore): keep its body,
      // so the revisions from here on can be rebuilt.
      putHistory(t, id, old.revision, old.body === null ? { x: true } : { f: old.body });
    }
    const part = partOf(transform, id);
    const full = bytes === null ? { x: true as const } : n % HISTORY_FULL_EVERY === 0 ? { f: bytes } : {};
    putHistory(t, id, index, { a: actionId, t: part, ...full, ...(old === undefined ? {} : { p: old.revision }) });
    t.put('blocks', idBytes(id), encodeBlock(index, bytes, n));
    ctx.changes.push({ type: 'block', id, transform: part });
    revisions[id] = index;
  }
  t.put('actions', idBytes(actionId), pack({ s: 'c', index } satisfies CommittedAction));
  return { kind: 'block_committed', index, revisions };
}

function putHistory(t: StateTables, id: string, revision: number, row: HistoryRow): void {
  t.put('blockLog', historyKey(id, revision), pack(row));
  t.put('blockRevs', u64Key(revision, idBytes(id)), EMPTY);
}

/** Lets go of a pending action: its holds, its expiry row, itself. */
function drop(t: StateTables, actionId: string, action: PendingAction): void {
  for (const id of action.blocks) t.remove('blockHolds', idBytes(id));
  t.remove('actionExpiry', u64Key(action.expiresAt, idBytes(actionId)));
  t.remove('actions', idBytes(actionId));
}

/**
 * Lets go of pends whose expiry log time `now` has reached, oldest first, at most
 * ACTION_EXPIRIES_MAX; returns a lower bound on the next expiry (`now` when some are left).
 */
export function expireActions(t: StateTables, now: number): number {
  const due = [...t.keys('actionExpiry', { end: u64Key(now + 1), limit: ACTION_EXPIRIES_MAX })].map((k) => Uint8Array.prototype.slice.call(k as Uint8Array));
  for (const row of due) {
    const actionId = fromUtf8.decode(row.subarray(8));
    const action = readAction(t, actionId);
    if (action?.s === 'p' && action.expiresAt === readU64(row)) drop(t, actionId, action);
    else t.remove('actionExpiry', row);
  }
  if (due.length === ACTION_EXPIRIES_MAX) return now;
  const next = [...t.keys('actionExpiry', { limit: 1 })][0] as Uint8Array | undefined;
  return next === undefined ? Number.MAX_SAFE_INTEGER : readU64(next);
}

// --- reads (not at apply: on the applied state) --------------------------------------------

/** The newest history row of `id` at or below `revision`, and its revision. */
function rowAtOrBelow(t: StateTables, id: string, revision: number): { revision: number; row: HistoryRow } | undefined {
  const { lo } = historyBounds(id);
  for (const { key, value } of t.range('blockLog', { start: historyKey(id, revision), end: lo, reverse: true, limit: 1 })) {
    return { revision: revisionOf(key as Uint8Array), row: unpack(value) as HistoryRow };
  }
  return undefined;
}

/** The state a row says by itself (a full copy, a deletion, or an insert: the block was
 *  absent before it), or undefined when it needs the rows before it. */
function stateOfRow(id: string, r: HistoryRow): Body | null | undefined {
  if (r.f !== undefined) return decodeBody(r.f);
  if (r.x === true) return null;
  if (r.t === undefined) return undefined;
  const part = transformOf(r.t);
  if (!Object.hasOwn(part.inserts, id)) return undefined;
  return replayPart(null, part, id);
}

/** The body after a history row, rebuilt from the rows before it when it has no copy (at
 *  most HISTORY_FULL_EVERY of them); undefined when a row it needs is gone. */
function stateAt(t: StateTables, id: string, row: HistoryRow): Body | null | undefined {
  const own = stateOfRow(id, row);
  if (own !== undefined) return own;
  const chain: HistoryRow[] = [row];
  // No row before says the state: the block was absent before its first row.
  let body: Body | null = null;
  for (let prev = row.p; prev !== undefined; ) {
    const v = t.get('blockLog', historyKey(id, prev));
    if (v === undefined) return undefined;
    const r = unpack(v) as HistoryRow;
    const known = stateOfRow(id, r);
    if (known !== undefined) {
      body = known;
      break;
    }
    chain.push(r);
    prev = r.p;
  }
  // The base is this call's own copy: every revision after it applies in place.
  for (let i = chain.length - 1; i >= 0; i--) {
    const r = chain[i]!;
    if (r.t !== undefined) body = replayPart(body, transformOf(r.t), id);
  }
  return body;
}

/**
 * Block `id` as of index `at`: its state then, `'unavailable'` when that is below `floor`
 * (the history's start, the journal's floor) and not the current state.
 */
export function blockAt(t: StateTables, id: string, at: number, floor: number): BlockState | 'unavailable' {
  const cur = readBlock(t, id);
  if (cur === undefined) return { revision: 0, body: null };
  if (cur.revision <= at) return { revision: cur.revision, body: cur.body === null ? null : decodeBody(cur.body) };
  if (at < floor) return 'unavailable';
  const found = rowAtOrBelow(t, id, at);
  if (found === undefined) return { revision: 0, body: null };
  const body = stateAt(t, id, found.row);
  return body === undefined ? 'unavailable' : { revision: found.revision, body };
}

/** The revisions of `id` after `after`, oldest first, at most `limit` (and none past
 *  `through`). History starts at `floor`: below it `complete` is false. */
export function blockRevisions(t: StateTables, id: string, after: number, limit: number, floor: number, through = Number.MAX_SAFE_INTEGER): { items: BlockRevision[]; more: boolean; complete: boolean } {
  const items: BlockRevision[] = [];
  const complete = after >= floor;
  if (after >= Number.MAX_SAFE_INTEGER) return { items, more: false, complete };
  const { hi } = historyBounds(id);
  let scanned = 0;
  let bytes = 0;
  for (const { key, value } of t.range('blockLog', { start: historyKey(id, after + 1), end: hi })) {
    const revision = revisionOf(key as Uint8Array);
    if (revision > through) break;
    if (++scanned > MISSING_SCAN_MAX && through !== Number.MAX_SAFE_INTEGER) return { items, more: true, complete };
    const row = unpack(value) as HistoryRow;
    if (row.t === undefined || row.a === undefined) continue;
    // A page always carries one item; past REVISIONS_PAGE_BYTES_MAX of transforms (an insert's
    // holds its whole body), the rest is `more`.
    if (items.length === limit || (items.length > 0 && bytes + row.t.length > REVISIONS_PAGE_BYTES_MAX)) return { items, more: true, complete };
    bytes += row.t.length;
    items.push({ revision, actionId: row.a, transform: row.t });
  }
  return { items, more: false, complete };
}

/** The transforms a read at `expected` missed, up to the block's revision `current` (a
 *  conflict's `missing`); `more` when they are not all here (past CONFLICT_MISSING_MAX, or
 *  below the history's `floor`: a rebase on them would lose the ones not listed). */
export function blockMissing(t: StateTables, id: string, expected: number, current: number, floor: number): { items: BlockRevision[]; more: boolean } {
  const { items, more, complete } = blockRevisions(t, id, expected, CONFLICT_MISSING_MAX, floor, current);
  return { items, more: more || !complete };
}

/**
 * Prunes history at or below `floor`: each block keeps its newest row there, made a full
 * copy, and loses the rows before it (walked back by their `p`: point reads and writes only).
 * Walks `sm.block_revs` up to the floor once (rows made copies are taken off it).
 */
export function pruneBlockHistory(t: StateTables, floor: number): void {
  const newest = new Map<string, number>();
  const visited: Uint8Array[] = [];
  for (const k of t.keys('blockRevs', { end: u64Key(floor + 1) })) {
    const key = Uint8Array.prototype.slice.call(k as Uint8Array);
    visited.push(key);
    newest.set(fromUtf8.decode(key.subarray(8)), readU64(key));
  }
  for (const key of visited) t.remove('blockRevs', key);
  for (const [id, revision] of newest) {
    const stored = t.get('blockLog', historyKey(id, revision));
    if (stored === undefined) continue;
    const row = unpack(stored) as HistoryRow;
    const body = stateAt(t, id, row);
    if (body === undefined) continue; // cannot happen: the rows it needs are above the last floor
    const { p: _p, f: _f, x: _x, ...rest } = row;
    t.put('blockLog', historyKey(id, revision), pack({ ...rest, ...(body === null ? { x: true } : { f: canonicalBody(body) }) }));
    for (let prev = row.p; prev !== undefined; ) {
      const v = t.get('blockLog', historyKey(id, prev));
      if (v === undefined) break;
      t.remove('blockLog', historyKey(id, prev));
      prev = (unpack(v) as HistoryRow).p;
    }
  }
}
