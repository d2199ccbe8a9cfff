/**
 * zstd through zstd-napi's low-level binding: reusable contexts that compress into and
 * decompress out of caller-owned buffers, so a stripe costs no allocation. One zstd frame per
 * stripe, with the content size in the frame header.
 *
 * zstd is the slowest stage on compressible data (`npm run bench -- ces` shows it beside
 * levels 1 and -1 and, on Node >= 22.15, node:zlib's zstd). It stays: the archive keeps
 * segments for long, so the ratio pays for itself, and the level is a parameter for callers
 * that prefer speed. zstd-napi's binding is used rather than node:zlib's zstd because the
 * latter is missing on Node 20 and allocates its output per call.
 */
import { createRequire } from 'node:module';
import { assert } from './errors.js';

interface Binding {
  CCtx: new () => { setParameter(p: number, v: number): void; compress2(dst: Uint8Array, src: Uint8Array): number };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CParameter: { compressionLevel: number; checksumFlag: number; contentSizeFlag: number };
  compressBound(bytes: number): number;
  getFrameContentSize(frame: Uint8Array): number | null;
}
const zstd = createRequire(import.meta.url)('zstd-napi/binding') as Binding;

/** Upper bound of a compressed stripe of `plaintextBytes` (zstd's ZSTD_COMPRESSBOUND, pure). */
export function compressedBytesMax(plaintextBytes: number): number {
  const small = 128 * 1024;
  return plaintextBytes + (plaintextBytes >>> 8) + (plaintextBytes < small ? (small - plaintextBytes) >>> 11 : 0);
}

export class StripeCompressor {
  private readonly cctx = new zstd.CCtx();
  constructor(level: number) {
    this.cctx.setParameter(zstd.CParameter.compressionLevel, level);
    // The AEAD tag authenticates every byte; zstd's own checksum would be redundant work.
    this.cctx.setParameter(zstd.CParameter.checksumFlag, 0);
  }
  /** Compresses `src` into `dst` (at least `compressedBytesMax(src.length)` long); returns the length. */
  compress(dst: Uint8Array, src: Uint8Array): number {
    assert(dst.length >= compressedBytesMax(src.length), 'compress destination too small');
    assert(compressedBytesMax(src.length) >= zstd.compressBound(src.length), 'compress bound formula');
    return this.cctx.compress2(dst, src);
  }
}

export class StripeDecompressor {
  private readonly dctx = new zstd.DCtx();
  /**
   * Decompresses one frame into `dst`; returns the length or undefined if the frame is not
   * exactly one well-formed frame whose content fits `dst`.
   */
  decompress(dst: Uint8Array, frame: Uint8Array): number | undefined {
    try {
      const size = zstd.getFrameContentSize(frame);
      if (size === null || size > dst.length) return undefined;
      return this.dctx.decompress(dst, frame);
    } catch {
      return undefined;
    }
  }
}
