/**
 * The wire format of consensus frames on `/pangea/consensus/1.0.0`:
 *
 *     frame = u32 big-endian body length | body (msgpack of one Envelope)
 *
 * Byte arrays travel as msgpack `bin` and decode as Uint8Array (a Buffer on Node). Decoding
 * yields `unknown`: the consensus core validates structure (`validateEnvelope`). Anything
 * that is not a sequence of well-formed frames within `frameBytesMax` is a `FrameError`, and
 * the stream that carried it is closed: there is no resynchronising inside a byte stream.
 *
 * ```ts
 * const bytes = encodeFrames([env1, env2]);
 * const decoder = new FrameDecoder();
 * for (const raw of decoder.push(bytes)) handle(raw);
 * ```
 */
import { C1, Packr } from 'msgpackr';
import type { Envelope } from '../consensus/index.js';

/** What travels on the consensus link: the core's envelopes, and the driver's own frames
 *  (writes forwarded to the leader, driver.ts), which share the cluster/from/to header. */
export type WireEnvelope = Envelope | { readonly cluster: string; readonly from: string; readonly to: string; readonly msg: { readonly type: string } };

/** The length prefix. */
export const FRAME_HEADER_BYTES = 4;
/** Default bound on one frame's body: well above the largest catch-up message the core
 *  builds (bounded by LIMITS), small enough that a hostile peer cannot make us buffer much. */
export const FRAME_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** What the u32 prefix can express. */
const FRAME_BYTES_LIMIT = 0xffff_ffff;

export type FrameErrorCode = 'frame_too_large' | 'frame_malformed';

/** A peer sent bytes that are not a valid frame; close the stream that carried them. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    readonly code: FrameErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Records off (each frame stands alone, no shared structures between peers); maps decode as
 * plain objects; decoded byte arrays are copies, so a held command does not pin the
 * transport's receive buffers; `undefined` stays `undefined` (optional fields such as
 * `meta` must not become null).
 */
const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  variableMapSize: true,
  copyBuffers: true,
  structuredClone: false,
});

/** The msgpack body of one envelope (no length prefix). */
export function encodeBody(envelope: WireEnvelope): Uint8Array {
  return packr.pack(envelope);
}

/** The msgpack body of any other message (requests and responses between peers). */
export function encodeMessage(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Concatenates bodies into one buffer of frames (one allocation, one copy of each body). */
export function joinFrames(bodies: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const b of bodies) total += FRAME_HEADER_BYTES + b.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let at = 0;
  for (const b of bodies) {
    if (b.length > FRAME_BYTES_LIMIT) throw new RangeError(`frame body of ${b.length} bytes exceeds the u32 prefix`);
    view.setUint32(at, b.length);
    out.set(b, at + FRAME_HEADER_BYTES);
    at += FRAME_HEADER_BYTES + b.length;
  }
  return out;
}

/** The frames of `envelopes`, in order, as one buffer. */
export function encodeFrames(envelopes: readonly Envelope[]): Uint8Array {
  return joinFrames(envelopes.map(encodeBody));
}

/**
 * Incremental decoder for one stream. Feed it chunks as they arrive; it yields each complete
 * frame's decoded body, in order. Buffers at most one frame (`frameBytesMax` + header) plus
 * the unread part of the last chunk. After it throws a FrameError it is spent: every later
 * `push` throws again.
 */
export class FrameDecoder {
  private readonly chunks: Uint8Array[] = [];
  /** The first unread chunk, and the read offset into it. */
  private head = 0;
  private offset = 0;
  /** Unread bytes across `chunks`. */
  private buffered = 0;
  /** Body length of the frame being read, or -1 while waiting for its header. */
  private bodyBytes = -1;
  private failed: FrameError | null = null;

  constructor(readonly frameBytesMax: number = FRAME_BYTES_MAX_DEFAULT) {
    if (!Number.isSafeInteger(frameBytesMax) || frameBytesMax < 1 || frameBytesMax > FRAME_BYTES_LIMIT) {
      throw new RangeError(`frameBytesMax must be an integer in 1..${FRAME_BYTES_LIMIT}, got ${frameBytesMax}`);
    }
  }

  /** Unread bytes held (a partial frame). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Appends `chunk` (a Uint8Array, or an iterable of them such as a Uint8ArrayList) and yields
   * every frame it completes. Chunks are held by reference until consumed: do not reuse them.
   * Throws FrameError on an oversized length or a body that is not exactly one msgpack value.
   */
  *push(chunk: Uint8Array | Iterable<Uint8Array>): Generator<unknown, void, undefined> {
    if (this.failed !== null) throw this.failed;
    if (chunk instanceof Uint8Array) this.append(chunk);
    else for (const c of chunk) this.append(c);
    for (;;) {
      if (this.bodyBytes < 0) {
        if (this.buffered < FRAME_HEADER_BYTES) return;
        const h = this.take(FRAME_HEADER_BYTES);
        const length = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
        if (length > this.frameBytesMax) {
          throw this.fail(new FrameError('frame_too_large', `frame of ${length} bytes exceeds the limit of ${this.frameBytesMax}`));
        }
        if (length === 0) throw this.fail(new FrameError('frame_malformed', 'empty frame'));
        this.bodyBytes = length;
      }
      if (this.buffered < this.bodyBytes) return;
      const body = this.take(this.bodyBytes);
      this.bodyBytes = -1;
      let value: unknown;
      try {
        // Throws unless the body is exactly one msgpack value (trailing bytes included).
        value = packr.unpack(body);
      } catch (err) {
        throw this.fail(new FrameError('frame_malformed', `frame body is not msgpack: ${(err as Error).message}`, { cause: err }));
      }
      // msgpackr decodes the never-used byte 0xc1 as a marker object instead of failing. At
      // the top level we reject it here; nested, it fails the core's structural validation.
      if (value === C1) throw this.fail(new FrameError('frame_malformed', 'frame body is the reserved byte 0xc1'));
      yield value;
    }
  }

  private fail(err: FrameError): FrameError {
    this.failed = err;
    this.chunks.length = 0;
    this.head = 0;
    this.offset = 0;
    this.buffered = 0;
    return err;
  }

  private append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Removes `n` <= buffered bytes from the front; zero-copy when one chunk holds them. */
  private take(n: number): Uint8Array {
    const first = this.chunks[this.head]!;
    let out: Uint8Array;
    if (first.length - this.offset >= n) {
      out = first.subarray(this.offset, this.offset + n);
      this.advance(n);
    } else {
      out = new Uint8Array(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[this.head]!;
        const part = Math.min(c.length - this.offset, n - at);
        out.set(c.subarray(this.offset, this.offset + part), at);
        at += part;
        this.advance(part);
      }
    }
    this.buffered -= n;
    return out;
  }

  /** Moves the read position by `n` bytes within chunks[head]. */
  private advance(n: number): void {
    this.offset += n;
    if (this.offset < this.chunks[this.head]!.length) return;
    this.offset = 0;
    this.head += 1;
    // Drop consumed chunks in bulk so a stream of tiny chunks stays linear.
    if (this.head === this.chunks.length) {
      this.chunks.length = 0;
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks.splice(0, this.head);
      this.head = 0;
    }
  }
}
