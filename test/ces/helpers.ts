/** Shared by the CES tests: keys, shard layout, damage, and an in-memory shard channel. */
import { createHash } from 'node:crypto';
import { cesKey, KeyRing, type CesKey, type ShardSink, type ShardSource } from '../../src/ces/index.js';
import { headerBytes, recordBytes } from '../../src/ces/format.js';

export function testKey(seed: number): CesKey {
  return cesKey(createHash('sha256').update(`ces test key ${seed}`).digest());
}
export const key1 = testKey(1);
export const ring1 = new KeyRing([key1]);

/** Byte ranges of a shard: header, each stripe's record + piece, trailer. */
export interface Layout {
  stripes: { start: number; end: number }[];
  trailerStart: number;
  length: number;
}

export function layout(shard: Uint8Array): Layout {
  const b = Buffer.from(shard);
  const stripes: { start: number; end: number }[] = [];
  let off = headerBytes;
  for (;;) {
    const pieceBytes = b.readUInt32BE(off + 16);
    const last = (b[off + 20]! & 1) === 1;
    stripes.push({ start: off, end: off + recordBytes + pieceBytes });
    off += recordBytes + pieceBytes;
    if (last) break;
  }
  return { stripes, trailerStart: off, length: b.length };
}

/** Damage to one shard. Positions are fractions of the shard length, in [0, 1). */
export type Damage =
  | { kind: 'missing' }
  | { kind: 'truncate'; at: number }
  | { kind: 'flip'; at: number[] };

export function applyDamage(shard: Buffer, d: Damage | undefined): Buffer | undefined {
  if (d === undefined) return shard;
  if (d.kind === 'missing') return undefined;
  if (d.kind === 'truncate') return shard.subarray(0, Math.floor(d.at * shard.length));
  const out = Buffer.from(shard);
  for (const pos of new Set(d.at.map((f) => Math.floor(f * shard.length)))) out[pos]! ^= 1 << (pos % 8);
  return out;
}

/** For each stripe, whether the damage spoils this shard's piece of it. */
export function spoiledStripes(l: Layout, d: Damage | undefined): boolean[] {
  const none = l.stripes.map(() => false);
  if (d === undefined) return none;
  if (d.kind === 'missing') return l.stripes.map(() => true);
  if (d.kind === 'truncate') {
    const kept = Math.floor(d.at * l.length);
    if (kept < headerBytes) return l.stripes.map(() => true);
    return l.stripes.map((s) => s.end > kept);
  }
  const positions = [...new Set(d.at.map((f) => Math.floor(f * l.length)))];
  if (positions.some((p) => p < headerBytes)) return l.stripes.map(() => true);
  return l.stripes.map((s) => positions.some((p) => p >= s.start && p < s.end));
}

/** Whether the damage changes the shard at all. */
export function isDamaged(l: Layout, d: Damage | undefined): boolean {
  if (d === undefined) return false;
  if (d.kind === 'truncate') return Math.floor(d.at * l.length) < l.length;
  return true;
}

/**
 * A bounded in-memory pipe: a ShardSink on one side, a ShardSource on the other, so an
 * encoder can feed a decoder without the shards ever being whole in memory.
 */
export class Channel implements ShardSink, ShardSource {
  private readonly queue: Uint8Array[] = [];
  private closed = false;
  private wake: (() => void) | undefined;
  private space: (() => void) | undefined;
  constructor(private readonly chunksMax = 8) {}

  async write(buf: Uint8Array): Promise<void> {
    while (this.queue.length >= this.chunksMax) await new Promise<void>((r) => (this.space = r));
    this.queue.push(Uint8Array.from(buf));
    this.wake?.();
  }
  close(): void {
    this.closed = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const c = this.queue.shift();
      if (c !== undefined) {
        this.space?.();
        yield c;
      } else if (this.closed) return;
      else await new Promise<void>((r) => (this.wake = r));
    }
  }
}

/** A sink that drops everything (a lost shard). */
export const nullSink: ShardSink = { write: async () => undefined };

export async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}
