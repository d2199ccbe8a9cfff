/**
 * Cold reads: ranges of the log served from the archive to block sync, and the effects of
 * indexes below the hot journal to watch (net/watch.ts), through the best manifest. An
 * object is fetched, decoded and checked whole (segment.ts: slots, indexes and hash chain
 * against the manifest; effects-object.ts: rows against the manifest's digest) and kept in
 * one small cache shared by both, since readers ask for consecutive stretches of it.
 */
import { KeyRing, type CesKey } from '../ces/index.js';
import { batchBytes, type SlotValue } from '../consensus/index.js';
import { RANGE_BYTES_MAX, type ColdSource } from '../sync/blocksync.js';
import { nextChain } from '../state/command.js';
import type { ColdEffects, Effects } from '../state/effects.js';
import { readBestManifest, type EffectsRecord, type ManifestBody, type SegmentRecord } from './manifest.js';
import { readEncoded } from './objects.js';
import { decodeEffects } from './effects-object.js';
import { decodeSegment } from './segment.js';
import type { ObjectStore } from './store.js';

/** Decoded objects kept (each up to a segment's slots, or its effects, in memory). */
const CACHED_SEGMENTS_MAX = 4;

export type { ColdEffects };
/** A manifest older than this is read again when a range lies past its end. */
const MANIFEST_REFRESH_MS = 2_000;

export class ArchiveColdSource implements ColdSource {
  private readonly keys: KeyRing;
  private manifest: ManifestBody | null = null;
  private manifestAt = 0;
  private readonly cache = new Map<string, Promise<SlotValue[] | Effects[]>>();

  constructor(
    private readonly store: ObjectStore,
    key: CesKey,
    private readonly cluster: string,
    private readonly trusted: (signer: string) => boolean,
    private readonly now: () => number = Date.now,
  ) {
    this.keys = new KeyRing([key]);
  }

  async read(fromSlot: number, fromIndex: number, toSlot: number): Promise<{ values: SlotValue[]; lastIndex: number; chainAfter: Uint8Array } | null> {
    let seg = this.find(fromSlot);
    if (seg === null && this.now() - this.manifestAt > MANIFEST_REFRESH_MS) {
      await this.refresh();
      seg = this.find(fromSlot);
    }
    if (seg === null) return null;
    const slots = await this.segment(seg);
    let chain: Uint8Array = Buffer.from(seg.chainBefore, 'hex');
    let index = seg.first.index - 1;
    const values: SlotValue[] = [];
    let bytes = 0;
    for (const s of slots) {
      if (s.slot > toSlot) break;
      if (s.slot === fromSlot && index + 1 !== fromIndex) throw new Error(`slot ${fromSlot} starts at index ${index + 1}, not ${fromIndex}`);
      if (s.slot >= fromSlot) {
        const size = batchBytes(s.batch);
        if (values.length > 0 && bytes + size > RANGE_BYTES_MAX) break;
        values.push(s);
        bytes += size;
      }
      for (const cmd of s.batch) chain = nextChain(chain, s.slot, cmd);
      index += s.batch.length;
    }
    return { values, lastIndex: index, chainAfter: chain };
  }

  /**
   * The effects of indexes after `after`, from the segment that holds index `after + 1`.
   * Throws when the archive cannot be read (the watcher is told `archive_unavailable`).
   */
  async effects(after: number, limit: number): Promise<ColdEffects> {
    let seg = this.findIndex(after + 1);
    if (seg === null && this.now() - this.manifestAt > MANIFEST_REFRESH_MS) {
      await this.refresh();
      seg = this.findIndex(after + 1);
    }
    if (seg === null) {
      const first = this.manifest?.segments[0]?.first.index;
      return { missing: first === undefined || after + 1 < first ? `the archive holds no history at index ${after + 1}` : `the archive ends before index ${after + 1}` };
    }
    if (seg.effects === undefined) return { missing: `the archive's segment of indexes ${seg.first.index}-${seg.last.index} was archived without its effects` };
    const rows = (await this.cached(seg.effects.prefix, () => this.decodeEffects(seg, seg.effects!))) as Effects[];
    // Rows are in index order: the first after `after` by bisection (a segment may hold
    // 100,000 rows, read a page at a time).
    let lo = 0;
    let hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rows[mid]!.index <= after) lo = mid + 1;
      else hi = mid;
    }
    const page = rows.slice(lo, lo + limit);
    return { rows: page, through: lo + limit < rows.length ? page.at(-1)!.index : seg.last.index };
  }

  private findIndex(index: number): SegmentRecord | null {
    return this.manifest?.segments.find((s) => s.first.index <= index && index <= s.last.index) ?? null;
  }

  private find(slot: number): SegmentRecord | null {
    return this.manifest?.segments.find((s) => s.first.slot <= slot && slot <= s.last.slot) ?? null;
  }

  private async refresh(): Promise<void> {
    const at = this.now();
    this.manifest = (await readBestManifest(this.store, this.cluster, this.trusted)).best?.body ?? this.manifest;
    this.manifestAt = at; // only once read: a failed read is tried again at the next ask
  }

  private segment(seg: SegmentRecord): Promise<SlotValue[]> {
    return this.cached(seg.prefix, () => this.decode(seg)) as Promise<SlotValue[]>;
  }

  private cached(prefix: string, load: () => Promise<SlotValue[] | Effects[]>): Promise<SlotValue[] | Effects[]> {
    let hit = this.cache.get(prefix);
    if (hit === undefined) {
      hit = load();
      this.cache.set(prefix, hit);
      hit.catch(() => this.cache.delete(prefix));
      while (this.cache.size > CACHED_SEGMENTS_MAX) this.cache.delete(this.cache.keys().next().value!);
    } else {
      // Most recently used last.
      this.cache.delete(prefix);
      this.cache.set(prefix, hit);
    }
    return hit;
  }

  private decodeEffects(seg: SegmentRecord, rec: EffectsRecord): Promise<Effects[]> {
    return decodeEffects(readEncoded(this.store, rec, this.keys), { cluster: this.cluster, first: seg.first.index, last: seg.last.index, digest: rec.digest });
  }

  private async decode(seg: SegmentRecord): Promise<SlotValue[]> {
    const bound = { first: seg.first, last: seg.last, chainBefore: Buffer.from(seg.chainBefore, 'hex'), chainAfter: Buffer.from(seg.chainAfter, 'hex'), bytes: 0 };
    const out: SlotValue[] = [];
    const it = decodeSegment(readEncoded(this.store, seg, this.keys), { cluster: this.cluster, bound });
    for (let r = await it.next(); !r.done; r = await it.next()) out.push(...r.value);
    return out;
  }
}
