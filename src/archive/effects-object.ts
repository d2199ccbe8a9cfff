/**
 * A segment's effects, archived beside it (issue 14): the effects journal's rows
 * (state/effects.ts) for the segment's indexes, so a watch can resume below the hot-log
 * floor. Framed like segments (u32 length + msgpack, codec/frames.ts):
 *
 *   { t: 'header', v: 1, cluster, first, last }       first and last index of the segment
 *   { t: 'rows', r: [[index, changes], ...] }         the journal's stored bytes, in order
 *   { t: 'end', rows: N, digest }
 *
 * `digest` is a hash chain over the rows (effectsDigest): the manifest records it, so a
 * reader checks the object against the manifest, and every node checks the manifest against
 * its own journal before it prunes (archiver.ts), as it checks the log's chain values.
 */
import { createHash } from 'node:crypto';
import { FrameDecoder, joinFrames } from '../codec/frames.js';
import { decodeChanges, type Effects, type EffectsRow } from '../state/effects.js';
import { pack } from '../storage/env.js';

export const EFFECTS_VERSION = 1;
const FRAME_BYTES_TARGET = 1024 * 1024;
const FRAME_BYTES_MAX = 64 * 1024 * 1024;

export type { EffectsRow };

export class EffectsObjectError extends Error {
  override readonly name = 'EffectsObjectError';
}

/** The hash chain over rows: sha256(previous ‖ u64 index ‖ bytes), from 32 zero bytes. */
export class EffectsDigest {
  private value: Uint8Array = new Uint8Array(32);
  private readonly index = Buffer.alloc(8);

  add(row: EffectsRow): void {
    this.index.writeBigUInt64BE(BigInt(row.index));
    this.value = createHash('sha256').update(this.value).update(this.index).update(row.bytes).digest();
  }

  hex(): string {
    return Buffer.from(this.value).toString('hex');
  }
}

/** The digest of `rows` (effectsDigest over a node's own journal). */
export function digestOf(rows: Iterable<EffectsRow>): string {
  const d = new EffectsDigest();
  for (const r of rows) d.add(r);
  return d.hex();
}

/** The object's frames; `rows` are the journal's rows for indexes `first..last`, in order. */
export async function* encodeEffects(cluster: string, first: number, last: number, rows: Iterable<EffectsRow>): AsyncGenerator<Uint8Array, void, undefined> {
  yield joinFrames([pack({ t: 'header', v: EFFECTS_VERSION, cluster, first, last })]);
  const digest = new EffectsDigest();
  let batch: unknown[] = [];
  let bytes = 0;
  let count = 0;
  let prev = first - 1;
  for (const row of rows) {
    if (row.index <= prev || row.index > last) throw new EffectsObjectError(`effects ${first}-${last}: row ${row.index} out of order or range`);
    prev = row.index;
    digest.add(row);
    batch.push([row.index, row.bytes]);
    bytes += row.bytes.byteLength;
    count++;
    if (bytes >= FRAME_BYTES_TARGET) {
      yield joinFrames([pack({ t: 'rows', r: batch })]);
      batch = [];
      bytes = 0;
    }
  }
  if (batch.length > 0) yield joinFrames([pack({ t: 'rows', r: batch })]);
  yield joinFrames([pack({ t: 'end', rows: count, digest: digest.hex() })]);
}

/**
 * Decodes and checks an effects object against what the manifest says of it: its cluster,
 * first and last index, and digest. Resolves with its rows, decoded, only once all is checked.
 */
export async function decodeEffects(source: AsyncIterable<Uint8Array>, expect: { cluster: string; first: number; last: number; digest: string }): Promise<Effects[]> {
  const name = `effects ${expect.first}-${expect.last}`;
  const decoder = new FrameDecoder(FRAME_BYTES_MAX);
  const digest = new EffectsDigest();
  const out: Effects[] = [];
  let header = false;
  let ended = false;
  let prev = expect.first - 1;
  for await (const chunk of source) {
    for (const frame of decoder.push(chunk)) {
      const f = frame as Record<string, unknown>;
      if (ended) throw new EffectsObjectError(`${name}: data after the end frame`);
      if (!header) {
        if (f.t !== 'header' || f.v !== EFFECTS_VERSION || f.cluster !== expect.cluster || f.first !== expect.first || f.last !== expect.last) {
          throw new EffectsObjectError(`${name}: missing, unknown or another object's header`);
        }
        header = true;
        continue;
      }
      if (f.t === 'end') {
        if (f.rows !== out.length || f.digest !== digest.hex() || f.digest !== expect.digest) throw new EffectsObjectError(`${name}: its rows do not match the manifest's digest`);
        ended = true;
        continue;
      }
      if (f.t !== 'rows' || !Array.isArray(f.r)) throw new EffectsObjectError(`${name}: malformed frame`);
      for (const rec of f.r as unknown[]) {
        if (!Array.isArray(rec) || !Number.isSafeInteger(rec[0]) || !(rec[1] instanceof Uint8Array)) throw new EffectsObjectError(`${name}: malformed row`);
        const index = rec[0] as number;
        if (index <= prev || index > expect.last) throw new EffectsObjectError(`${name}: row ${index} out of order or range`);
        prev = index;
        digest.add({ index, bytes: rec[1] });
        let changes;
        try {
          changes = decodeChanges(rec[1]);
        } catch (err) {
          throw new EffectsObjectError(`${name}: row ${index} does not decode (${(err as Error).message})`);
        }
        out.push({ index, changes });
      }
    }
  }
  if (!header || !ended || decoder.bufferedBytes > 0) throw new EffectsObjectError(`${name}: stream ends early`);
  return out;
}
