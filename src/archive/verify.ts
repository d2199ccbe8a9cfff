/**
 * Full verification of archived objects: every shard's checksum, a CES decode (which
 * authenticates every stripe under the archive key), the segment's structure and hash chain
 * (segment.ts) or the snapshot's frames (state/snapshot.ts), and, where the caller knows
 * them, the chain values of its own log. Without `repair`, an object with a shard missing or
 * wrong fails verification, and nothing it covers is pruned.
 *
 * With `repair`, once the object decodes and checks out from its good shards (so at most `m`
 * are lost), missing shards are rebuilt. With `moveDamaged` as well (the operator's command),
 * each shard present but wrong is first moved aside: copied to
 * `quarantine/<prefix>/shard-<i>.<sha256 prefix of the bad bytes>`, read back, and only then
 * deleted. Missing and moved shards are rebuilt: the decoded plaintext is encoded again,
 * which gives the same bytes (CES is deterministic), and only shards whose checksum matches
 * the manifest's are uploaded, create-if-absent. Nothing is ever overwritten in place, and
 * the damaged bytes stay in the store for whoever investigates.
 */
import { MemorySink, decodeShards, bufferSource, encodeStream, type CesKey, type CesParams, type KeyRing } from '../ces/index.js';
import { readSnapshot } from '../state/snapshot.js';
import { decodeEffects, digestOf, type EffectsRow } from './effects-object.js';
import { decodeSegment } from './segment.js';
import { fetchShards, sha256Hex, shardKey } from './objects.js';
import type { EffectsRecord, EncodedObject, ManifestBody, SegmentRecord, SnapshotRecord } from './manifest.js';
import { ObjectStoreError, type ObjectStore } from './store.js';

export interface ObjectReport {
  readonly kind: 'segment' | 'snapshot' | 'effects';
  readonly prefix: string;
  readonly ok: boolean;
  /** Bad, missing and rebuilt shards, and why the object failed, if it did. */
  readonly problems: readonly string[];
  readonly rebuiltShards: number;
  /** Where damaged shards were moved before they were rebuilt (repair only). */
  readonly quarantined: readonly string[];
}

export interface VerifyContext {
  readonly store: ObjectStore;
  readonly keys: KeyRing;
  /** Needed to rebuild shards. */
  readonly key?: CesKey;
  readonly cluster: string;
  readonly ces: CesParams;
  /** The chain value after `index` in this node's own log, when it knows it. */
  readonly ownChain?: (index: number) => Uint8Array | undefined;
  /** This node's own effects journal rows in (after, through], or null where it does not
   *  reach back that far. */
  readonly ownEffects?: (after: number, through: number) => EffectsRow[] | null;
  readonly repair?: boolean;
  /**
   * With `repair`, also move damaged shards aside and rebuild them (operators' `archive
   * verify --repair`). Running nodes leave damaged shards alone: several nodes moving the same
   * shard at once would delete each other's rebuilt copies.
   */
  readonly moveDamaged?: boolean;
}

export async function verifySegment(ctx: VerifyContext, rec: SegmentRecord): Promise<ObjectReport> {
  const bound = {
    first: rec.first,
    last: rec.last,
    chainBefore: Buffer.from(rec.chainBefore, 'hex'),
    chainAfter: Buffer.from(rec.chainAfter, 'hex'),
    bytes: 0,
  };
  const problems: string[] = [];
  if (ctx.ownChain !== undefined) {
    const after = ctx.ownChain(rec.last.index);
    if (after !== undefined && Buffer.compare(after, bound.chainAfter) !== 0) problems.push(`chain value at index ${rec.last.index} differs from this node's log`);
    const before = rec.first.index > 1 ? ctx.ownChain(rec.first.index - 1) : undefined;
    if (before !== undefined && Buffer.compare(before, bound.chainBefore) !== 0) problems.push(`chain value at index ${rec.first.index - 1} differs from this node's log`);
  }
  return verifyObject(ctx, 'segment', rec, problems, async (plain) => {
    const it = decodeSegment(plain, { cluster: ctx.cluster, bound });
    for (let r = await it.next(); !r.done; r = await it.next()) {
      // Slots are checked as they are read; the chain at the end.
    }
  });
}

/** A segment's effects object (effects-object.ts): shards, decode, rows against the
 *  manifest's digest, and the digest against this node's own journal where it has one. */
export async function verifyEffects(
  ctx: VerifyContext,
  seg: { readonly first: { readonly index: number }; readonly last: { readonly index: number }; readonly effects: EffectsRecord },
): Promise<ObjectReport> {
  const problems: string[] = [];
  const own = ctx.ownEffects?.(seg.first.index - 1, seg.last.index) ?? null;
  if (own !== null && digestOf(own) !== seg.effects.digest) problems.push(`effects of indexes ${seg.first.index}-${seg.last.index} differ from this node's journal`);
  return verifyObject(ctx, 'effects', seg.effects, problems, async (plain) => {
    await decodeEffects(plain, { cluster: ctx.cluster, first: seg.first.index, last: seg.last.index, digest: seg.effects.digest });
  });
}

export async function verifySnapshot(ctx: VerifyContext, rec: SnapshotRecord): Promise<ObjectReport> {
  return verifyObject(ctx, 'snapshot', rec, [], async (plain) => {
    const header = await readSnapshot(plain);
    const p = header.applied.point;
    if (p.slot !== rec.point.slot || p.index !== rec.point.index) throw new Error(`holds slot ${p.slot} index ${p.index}, the manifest says ${rec.point.slot}/${rec.point.index}`);
    if (JSON.stringify(p.epochs) !== JSON.stringify(rec.point.epochs)) throw new Error('its configurations differ from the manifest\'s record of it');
    if (Buffer.from(header.applied.chain).toString('hex') !== rec.chain) throw new Error('its chain value differs from the manifest');
    const own = ctx.ownChain?.(p.index);
    if (own !== undefined && Buffer.compare(own, header.applied.chain) !== 0) throw new Error(`chain value at index ${p.index} differs from this node's log`);
  });
}

async function verifyObject(
  ctx: VerifyContext,
  kind: ObjectReport['kind'],
  obj: EncodedObject,
  problems: string[],
  check: (plain: AsyncIterable<Uint8Array>) => Promise<void>,
): Promise<ObjectReport> {
  // What the caller found already (a chain value or digest that differs from this node's
  // own) fails the object whatever its shards say.
  const mismatched = problems.length > 0;
  const fetched = await fetchShards(ctx.store, obj);
  problems.push(...fetched.problems);
  let rebuiltShards = 0;
  const quarantined: string[] = [];
  const damaged = ctx.moveDamaged === true ? fetched.bad : [];
  const lost = fetched.missing.length + fetched.bad.length;
  let failed = lost > 0;
  let stage = 'does not decode';
  try {
    const plain = decodeShards(fetched.shards.map((s) => (s === undefined ? undefined : bufferSource(s))), ctx.keys, obj.label);
    if (ctx.repair === true && ctx.key !== undefined && fetched.missing.length + damaged.length > 0) {
      const chunks: Buffer[] = [];
      for await (const c of plain) chunks.push(c);
      await check(bufferSource(Buffer.concat(chunks)));
      // The object is whole without them: move the damaged shards aside, then rebuild.
      stage = 'repair failed';
      for (const { index, bytes } of damaged) quarantined.push(await moveAside(ctx.store, obj.prefix, index, bytes));
      if (quarantined.length > 0) problems.push(`moved ${quarantined.length} damaged shard(s) aside: ${quarantined.join(', ')}`);
      const redo = [...fetched.missing, ...damaged.map((b) => b.index)].sort((a, b) => a - b);
      rebuiltShards = await rebuild(ctx, obj, redo, chunks);
      problems.push(`rebuilt ${rebuiltShards} shard(s)`);
      failed = rebuiltShards < redo.length || damaged.length < fetched.bad.length;
    } else {
      await check(plain);
    }
  } catch (err) {
    if (err instanceof ObjectStoreError || !(err instanceof Error)) throw err;
    problems.push(`${stage}: ${err.message}`);
    failed = true;
  }
  return { kind, prefix: obj.prefix, ok: !failed && !mismatched, problems, rebuiltShards, quarantined };
}

/** The key a damaged shard is moved to: named by its bytes, so a second run finds it there. */
export function quarantineKey(prefix: string, i: number, bytes: Uint8Array): string {
  return `quarantine/${shardKey(prefix, i)}.${sha256Hex(bytes).slice(0, 16)}`;
}

/** Copies a damaged shard to its quarantine key, checks the copy, then deletes the shard. */
async function moveAside(store: ObjectStore, prefix: string, i: number, bytes: Uint8Array): Promise<string> {
  const to = quarantineKey(prefix, i, bytes);
  await store.putIfAbsent(to, bytes);
  const back = await store.get(to);
  if (Buffer.compare(back, bytes) !== 0) throw new Error(`${to} holds other bytes than the damaged ${shardKey(prefix, i)}; left both in place`);
  await store.delete(shardKey(prefix, i));
  return to;
}

/** Encodes the plaintext again and uploads the shards that were missing; returns how many
 *  were created. */
async function rebuild(ctx: VerifyContext, obj: EncodedObject, missing: readonly number[], plain: readonly Buffer[]): Promise<number> {
  const sinks = obj.shards.map(() => new MemorySink());
  await encodeStream(plain, sinks, ctx.key!, obj.label, ctx.ces);
  let rebuilt = 0;
  for (const i of missing) {
    const rec = obj.shards[i]!;
    const bytes = sinks[i]!.bytes();
    if (bytes.byteLength !== rec.size || sha256Hex(bytes) !== rec.sha256) {
      throw new Error(`${shardKey(obj.prefix, i)}: re-encoding does not give the recorded shard (other parameters or key?)`);
    }
    if ((await ctx.store.putIfAbsent(shardKey(obj.prefix, i), bytes)) === 'created') rebuilt++;
  }
  return rebuilt;
}

export interface ArchiveReport {
  readonly ok: boolean;
  readonly objects: readonly ObjectReport[];
}

/**
 * Verifies the segments covering slots `fromSlot..toSlot` (all when not given) and the
 * snapshots at or below `toSlot` that are at or after `fromSlot`. `onProgress` is told after
 * each object (done, total).
 */
export async function verifyArchive(
  ctx: VerifyContext,
  manifest: ManifestBody,
  range: { fromSlot?: number; toSlot?: number } = {},
  onProgress?: (done: number, total: number, report: ObjectReport) => void,
): Promise<ArchiveReport> {
  const from = range.fromSlot ?? 0;
  const to = range.toSlot ?? Number.MAX_SAFE_INTEGER;
  const segments = manifest.segments.filter((s) => s.last.slot >= from && s.first.slot <= to);
  const snapshots = manifest.snapshots.filter((s) => s.point.slot >= from && s.point.slot <= to);
  const total = segments.length + segments.filter((s) => s.effects !== undefined).length + snapshots.length;
  const objects: ObjectReport[] = [];
  for (const s of segments) {
    objects.push(await verifySegment(ctx, s));
    onProgress?.(objects.length, total, objects[objects.length - 1]!);
    if (s.effects === undefined) continue;
    objects.push(await verifyEffects(ctx, { first: s.first, last: s.last, effects: s.effects }));
    onProgress?.(objects.length, total, objects[objects.length - 1]!);
  }
  for (const s of snapshots) {
    objects.push(await verifySnapshot(ctx, s));
    onProgress?.(objects.length, total, objects[objects.length - 1]!);
  }
  return { ok: objects.every((o) => o.ok), objects };
}
