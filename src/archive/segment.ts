/**
 * A log segment as a byte stream (the plaintext CES encodes): whole chosen slots between two
 * boundaries the state machine recorded (state/segments.ts), framed like snapshots
 * (u32 length + msgpack, codec/frames.ts):
 *
 *   { t: 'header', v: 1, cluster, first, last, chainBefore, chainAfter }
 *   { t: 'slots', r: [[slot, commands], ...] }     slots in order, about 1 MiB a frame
 *   { t: 'end', slots: N }
 *
 * Decoding checks everything a reader can: slots are exactly `first.slot..last.slot`, their
 * commands take exactly the indexes up to `last.index`, and the hash chain recomputed from
 * `chainBefore` over every command ends at `chainAfter`. A segment that decodes is the log.
 */
import { batchBytes, type Batch, type SlotValue } from '../consensus/index.js';
import { FrameDecoder, joinFrames } from '../codec/frames.js';
import { pack } from '../storage/env.js';
import { batchOf, commandsValue } from '../log/slot-codec.js';
import { nextChain } from '../state/command.js';
import type { SegmentBound } from '../state/segments.js';

export const SEGMENT_VERSION = 1;
const FRAME_BYTES_TARGET = 1024 * 1024;
/** A slot is at most one consensus frame (16 MiB); a records frame holds at least one. */
const FRAME_BYTES_MAX = 64 * 1024 * 1024;

export class SegmentError extends Error {
  override readonly name = 'SegmentError';
}

/** The segment's frames, from its bound and its slots (in order, exactly the bound's). */
export async function* encodeSegment(
  cluster: string,
  bound: SegmentBound,
  slots: AsyncIterable<SlotValue> | Iterable<SlotValue>,
): AsyncGenerator<Uint8Array, void, undefined> {
  const { first, last, chainBefore, chainAfter } = bound;
  yield joinFrames([pack({ t: 'header', v: SEGMENT_VERSION, cluster, first, last, chainBefore, chainAfter })]);
  let batch: unknown[] = [];
  let bytes = 0;
  let expect = first.slot;
  for await (const s of slots) {
    if (s.slot !== expect) throw new SegmentError(`segment ${first.slot}-${last.slot}: the log gave slot ${s.slot}, expected ${expect}`);
    expect++;
    batch.push([s.slot, commandsValue(s.batch)]);
    bytes += batchBytes(s.batch);
    if (bytes >= FRAME_BYTES_TARGET) {
      yield joinFrames([pack({ t: 'slots', r: batch })]);
      batch = [];
      bytes = 0;
    }
  }
  if (batch.length > 0) yield joinFrames([pack({ t: 'slots', r: batch })]);
  if (expect !== last.slot + 1) throw new SegmentError(`segment ${first.slot}-${last.slot}: the log ended at slot ${expect - 1}`);
  yield joinFrames([pack({ t: 'end', slots: last.slot - first.slot + 1 })]);
}

export interface SegmentHeader extends SegmentBound {
  readonly cluster: string;
}

/**
 * Decodes and checks a segment stream, yielding its slots in runs as they are read. The
 * checks at the end (chain, counts) run before the generator finishes: a consumer must
 * treat what it received as unverified until the generator returns without throwing.
 * `expect`, when given, must match the header (the manifest's record of the segment).
 */
export async function* decodeSegment(
  source: AsyncIterable<Uint8Array>,
  expect?: { cluster: string; bound: SegmentBound },
): AsyncGenerator<SlotValue[], SegmentHeader, undefined> {
  const decoder = new FrameDecoder(FRAME_BYTES_MAX);
  let header: SegmentHeader | null = null;
  let chain: Uint8Array = new Uint8Array(0);
  let slot = 0;
  let index = 0;
  let ended = false;
  const name = (): string => (header ? `segment ${header.first.slot}-${header.last.slot}` : 'segment');
  for await (const chunk of source) {
    for (const frame of decoder.push(chunk)) {
      const f = frame as Record<string, unknown>;
      if (ended) throw new SegmentError(`${name()}: data after the end frame`);
      if (header === null) {
        header = readHeader(f);
        if (expect !== undefined) checkExpected(header, expect.cluster, expect.bound);
        chain = header.chainBefore;
        slot = header.first.slot;
        index = header.first.index - 1;
        continue;
      }
      if (f.t === 'end') {
        if (f.slots !== header.last.slot - header.first.slot + 1) throw new SegmentError(`${name()}: bad end frame`);
        ended = true;
        continue;
      }
      if (f.t !== 'slots' || !Array.isArray(f.r)) throw new SegmentError(`${name()}: malformed frame`);
      const out: SlotValue[] = [];
      for (const rec of f.r as unknown[]) {
        if (!Array.isArray(rec) || rec[0] !== slot || !Array.isArray(rec[1])) throw new SegmentError(`${name()}: expected slot ${slot}`);
        let batch: Batch;
        try {
          batch = batchOf(slot, rec[1] as unknown[]);
        } catch (err) {
          throw new SegmentError(`${name()}: ${(err as Error).message}`);
        }
        for (const cmd of batch) chain = nextChain(chain, slot, cmd);
        index += batch.length;
        out.push({ slot, batch });
        slot++;
      }
      if (slot > header.last.slot + 1) throw new SegmentError(`${name()}: slots past the last one`);
      if (out.length > 0) yield out;
    }
  }
  if (header === null || !ended || decoder.bufferedBytes > 0) throw new SegmentError(`${name()}: stream ends early`);
  if (slot !== header.last.slot + 1 || index !== header.last.index) throw new SegmentError(`${name()}: slots or indexes do not add up`);
  if (Buffer.compare(chain, header.chainAfter) !== 0) throw new SegmentError(`${name()}: the hash chain does not end at the recorded value`);
  return header;
}

function readHeader(f: Record<string, unknown>): SegmentHeader {
  const point = (v: unknown): v is { slot: number; index: number } =>
    typeof v === 'object' && v !== null && Number.isSafeInteger((v as { slot: unknown }).slot) && Number.isSafeInteger((v as { index: unknown }).index);
  const bytes32 = (v: unknown): v is Uint8Array => v instanceof Uint8Array && v.byteLength === 32;
  if (f.t !== 'header' || f.v !== SEGMENT_VERSION || typeof f.cluster !== 'string' || !point(f.first) || !point(f.last) ||
    !bytes32(f.chainBefore) || !bytes32(f.chainAfter) || f.last.slot < f.first.slot) {
    throw new SegmentError('segment: missing or unknown header');
  }
  return { cluster: f.cluster, first: f.first, last: f.last, chainBefore: f.chainBefore, chainAfter: f.chainAfter, bytes: 0 };
}

function checkExpected(h: SegmentHeader, cluster: string, b: SegmentBound): void {
  const same = h.cluster === cluster && h.first.slot === b.first.slot && h.first.index === b.first.index && h.last.slot === b.last.slot &&
    h.last.index === b.last.index && Buffer.compare(h.chainBefore, b.chainBefore) === 0 && Buffer.compare(h.chainAfter, b.chainAfter) === 0;
  if (!same) throw new SegmentError(`segment ${b.first.slot}-${b.last.slot}: its header differs from the manifest's record of it`);
}
