/**
 * Cold reads for block sync: ranges of the log served from the archive, through the best
 * manifest. A segment is fetched, decoded and checked whole (segment.ts: slots, indexes and
 * hash chain against the manifest) and kept in a small cache, since requesters ask for
 * consecutive ranges of it.
 */
import { KeyRing, type CesKey } from '../ces/index.js';
import { batchBytes, type SlotValue } from '../consensus/index.js';
import { RANGE_BYTES_MAX, type ColdSource } from '../sync/blocksync.js';
import { nextChain } from '../state/command.js';
import { readBestManifest, type ManifestBody, type SegmentRecord } from './manifest.js';
import { readEncoded } from './objects.js';
import { decodeSegment } from './segment.js';
import type { ObjectStore } from './store.js';

/** Decoded segments kept (each up to a segment's slots in memory). */
const CACHED_SEGMENTS_MAX = 4;
/** A manifest older than this is read again when a range lies past its end. */
const MANIFEST_REFRESH_MS = 2_000;

export class ArchiveColdSource implements ColdSource {
  private readonly keys: KeyRing;
  private manifest: ManifestBody | null = null;
  private manifestAt = 0;
  private readonly cache = new Map<string, Promise<SlotValue[]>>();

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

  private find(slot: number): SegmentRecord | null {
    return this.manifest?.segments.find((s) => s.first.slot <= slot && slot <= s.last.slot) ?? null;
  }

  private async refresh(): Promise<void> {
    this.manifestAt = this.now();
    this.manifest = (await readBestManifest(this.store, this.cluster, this.trusted)).best?.body ?? this.manifest;
  }

  private segment(seg: SegmentRecord): Promise<SlotValue[]> {
    let hit = this.cache.get(seg.prefix);
    if (hit === undefined) {
      hit = this.decode(seg);
      this.cache.set(seg.prefix, hit);
      hit.catch(() => this.cache.delete(seg.prefix));
      while (this.cache.size > CACHED_SEGMENTS_MAX) this.cache.delete(this.cache.keys().next().value!);
    } else {
      // Most recently used last.
      this.cache.delete(seg.prefix);
      this.cache.set(seg.prefix, hit);
    }
    return hit;
  }

  private async decode(seg: SegmentRecord): Promise<SlotValue[]> {
    const bound = { first: seg.first, last: seg.last, chainBefore: Buffer.from(seg.chainBefore, 'hex'), chainAfter: Buffer.from(seg.chainAfter, 'hex'), bytes: 0 };
    const out: SlotValue[] = [];
    const it = decodeSegment(readEncoded(this.store, seg, this.keys), { cluster: this.cluster, bound });
    for (let r = await it.next(); !r.done; r = await it.next()) out.push(...r.value);
    return out;
  }
}
