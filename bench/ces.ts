/**
 * `npm run bench -- ces [MiB]`: CES throughput on one core, on log-like and on random data
 * (64 MiB each by default). Every figure is MB/s of *input* bytes (1 MB = 10^6 bytes), best
 * of a few runs so that a busy machine disturbs it less.
 *
 * Stages are measured alone on the same stripes the pipeline sees: zstd, the cipher (with
 * @noble/ciphers' pure-JS XChaCha20-Poly1305 beside ours), the synthetic nonce (HMAC-SHA256),
 * Reed-Solomon, and the piece checksums (SHA-256, with zlib's CRC-32 beside it where Node
 * has it). Then the whole pipeline: encode, decode, and decode with `m` data shards missing.
 * Ends with one JSON line; for log-like data, `encode_MBps` should be >= 150 and >= 70% of
 * `slowest_stage_MBps`, and `decode_missing_MBps` >= 60% of it.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { decodeShards, encodeStream, KeyRing, MemorySink, cesKey, paramsDefault, type ShardSink } from '../src/ces/index.js';
import { StripeCompressor, StripeDecompressor, compressedBytesMax } from '../src/ces/compress.js';
import { seal, syntheticNonce } from '../src/ces/cipher.js';
import { Erasure } from '../src/ces/erasure.js';
import { associatedData, pieceBytesFor, pieceBytesMax, tagBytes } from '../src/ces/format.js';
import { bufferSource } from '../src/ces/io.js';

/** Each figure is the best of this many runs. */
const runs = 3;

function logLike(bytes: number): Buffer {
  const levels = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN'];
  const msgs = ['accepted value', 'sent prepare', 'promise received', 'committed entry', 'applied to state machine', 'lease renewed'];
  const parts: string[] = [];
  let x = 0x9e3779b9;
  let len = 0;
  for (let i = 0; len < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const ms = 1_700_000_000_000 + i * 3;
    const line = `${new Date(ms).toISOString()} ${levels[x % 5]} replica=${x % 5} slot=${1000 + i} ballot=${(i >> 8) + 1}.${x % 3} ` +
      `msg="${msgs[(x >>> 8) % 6]}" bytes=${(x >>> 4) % 65536} req=${x.toString(16).padStart(8, '0')}\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

async function best(f: () => Promise<void> | void): Promise<number> {
  let ms = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    ms = Math.min(ms, performance.now() - t0);
  }
  return ms;
}

const mbps = (bytes: number, ms: number): number => Math.round(bytes / 1e3 / ms);

async function measure(name: string, input: Buffer): Promise<Record<string, number>> {
  const p = paramsDefault;
  const { dataShards: k, parityShards: m, stripeBytes } = p;
  const key = cesKey(randomBytes(32));
  const stripes: Buffer[] = [];
  for (let o = 0; o < input.length; o += stripeBytes) stripes.push(input.subarray(o, o + stripeBytes));
  const bytes = input.length;

  // Stage: zstd.
  const comp = new StripeCompressor(p.level);
  const dst = Buffer.allocUnsafe(compressedBytesMax(stripeBytes));
  const zstdAlone = (): void => {
    for (const s of stripes) comp.compress(dst, s);
  };
  let zstdMs = await best(zstdAlone);
  const frames = stripes.map((s) => Buffer.from(dst.subarray(0, comp.compress(dst, s))));
  const compressedBytes = frames.reduce((a, f) => a + f.length, 0);
  // Alternatives to the default level, and node:zlib's own zstd where Node has it (>= 22.15).
  const alt: string[] = [];
  for (const level of [1, -1]) {
    const c = new StripeCompressor(level);
    let z = 0;
    const ms = await best(() => {
      z = 0;
      for (const s of stripes) z += c.compress(dst, s);
    });
    alt.push(`level ${level}: ${mbps(bytes, ms)} (ratio ${(bytes / z).toFixed(2)})`);
  }
  const zlibZstd = (zlib as unknown as { zstdCompressSync?: (b: Uint8Array) => Buffer }).zstdCompressSync;
  if (zlibZstd !== undefined) {
    const ms = await best(() => {
      for (const s of stripes) zlibZstd(s);
    });
    alt.push(`node:zlib zstd (level 3): ${mbps(bytes, ms)}`);
  } else alt.push('node:zlib zstd: n/a before Node 22.15');
  const dec = new StripeDecompressor();
  const out = Buffer.allocUnsafe(stripeBytes);
  const unzstdMs = await best(() => {
    for (const f of frames) dec.decompress(out, f);
  });

  // Stage: cipher (ours and noble's) and nonce, on the compressed frames.
  const ad = associatedData({ labelHash: new Uint8Array(32), stripeBytes, stripeIndex: 0, plaintextBytes: stripeBytes, last: false, prevNonce: new Uint8Array(24) });
  const nonce = new Uint8Array(24).fill(1);
  const cipherMs = await best(() => {
    for (const f of frames) seal(key.cipherKey, nonce, ad, f);
  });
  const nobleMs = await best(() => {
    for (const f of frames) xchacha20poly1305(key.cipherKey, nonce, ad).encrypt(f);
  });
  const nonceMs = await best(() => {
    for (const f of frames) syntheticNonce(key.nonceKey, ad, f);
  });

  // Stage: Reed-Solomon, encode and rebuild of m data pieces.
  const erasure = new Erasure(k, m);
  const pmax = pieceBytesMax(stripeBytes, k);
  const data = Buffer.alloc(k * pmax);
  const parity = Buffer.alloc(m * pmax);
  const pieces = frames.map((f) => pieceBytesFor(f.length + tagBytes, k));
  const rsMs = await best(async () => {
    for (const pb of pieces) await erasure.encodeParity(data, parity, pb);
  });
  const present = ((1 << (k + m)) - 1) & ~((1 << m) - 1); // data pieces 0..m-1 lost
  const rebuildMs = await best(async () => {
    for (const pb of pieces) await erasure.rebuild(data, parity, pb, present);
  });

  // Stage: checksums of all k + m pieces.
  const shardBytesPerStripe = pieces.map((pb) => (k + m) * pb);
  const all = Buffer.alloc(Math.max(...shardBytesPerStripe));
  const sumMs = await best(() => {
    for (const sb of shardBytesPerStripe) for (let i = 0; i < k + m; i++) createHash('sha256').update(all.subarray(i * (sb / (k + m)), (i + 1) * (sb / (k + m)))).digest();
  });
  const crc32 = (zlib as unknown as { crc32?: (b: Uint8Array) => number }).crc32;
  const crcMs = crc32 === undefined ? NaN : await best(() => {
    for (const sb of shardBytesPerStripe) for (let i = 0; i < k + m; i++) crc32(all.subarray(i * (sb / (k + m)), (i + 1) * (sb / (k + m))));
  });

  // Whole pipeline.
  const nullSinks: ShardSink[] = Array.from({ length: k + m }, () => ({ write: async () => undefined }));
  // The pipeline and its slowest stage alternate, so that load from elsewhere hits both alike.
  let encodeMs = Infinity;
  for (let i = 0; i < runs + 2; i++) {
    encodeMs = Math.min(encodeMs, await best(() => encodeStream([input], nullSinks, key, 'bench').then(() => undefined)));
    zstdMs = Math.min(zstdMs, await best(zstdAlone));
  }
  const sinks = Array.from({ length: k + m }, () => new MemorySink());
  await encodeStream([input], sinks, key, 'bench');
  const shards = sinks.map((s) => s.bytes());
  const ring = new KeyRing([key]);
  const decodeWith = async (given: (Buffer | undefined)[]): Promise<void> => {
    let n = 0;
    for await (const c of decodeShards(given.map((s) => s && bufferSource(s)), ring, 'bench')) n += c.length;
    if (n !== bytes) throw new Error('decode length');
  };
  const decodeMs = await best(() => decodeWith(shards));
  const decodeMissingMs = await best(() => decodeWith(shards.map((s, i) => (i < m ? undefined : s))));

  const f = {
    zstd_MBps: mbps(bytes, zstdMs),
    unzstd_MBps: mbps(bytes, unzstdMs),
    cipher_MBps: mbps(bytes, cipherMs),
    cipher_noble_MBps: mbps(bytes, nobleMs),
    nonce_MBps: mbps(bytes, nonceMs),
    rs_encode_MBps: mbps(bytes, rsMs),
    rs_rebuild_MBps: mbps(bytes, rebuildMs),
    checksum_sha256_MBps: mbps(bytes, sumMs),
    checksum_crc32_MBps: Number.isNaN(crcMs) ? 0 : mbps(bytes, crcMs),
    encode_MBps: mbps(bytes, encodeMs),
    decode_MBps: mbps(bytes, decodeMs),
    decode_missing_MBps: mbps(bytes, decodeMissingMs),
    compression_ratio: Math.round((bytes / compressedBytes) * 100) / 100,
  };
  const slowest = Math.min(f.zstd_MBps, f.cipher_MBps, f.nonce_MBps, f.rs_encode_MBps, f.checksum_sha256_MBps);
  const r = { ...f, slowest_stage_MBps: slowest };
  console.log(`\n${name}: ${(bytes / 2 ** 20).toFixed(0)} MiB, k = ${k}, m = ${m}, stripes of ${stripeBytes >> 20} MiB, zstd level ${p.level}; ` +
    `compression ratio ${f.compression_ratio}`);
  console.log('  stage alone (MB/s of input):');
  console.log(`    zstd compress ${f.zstd_MBps}   (decompress ${f.unzstd_MBps}; ${alt.join(', ')})`);
  console.log(`    XChaCha20-Poly1305, HChaCha20 + node:crypto ${f.cipher_MBps}   (@noble/ciphers alone: ${f.cipher_noble_MBps})`);
  console.log(`    synthetic nonce HMAC-SHA256 ${f.nonce_MBps}`);
  console.log(`    Reed-Solomon parity ${f.rs_encode_MBps}   (rebuild of ${m} data pieces: ${f.rs_rebuild_MBps})`);
  console.log(`    checksums SHA-256 ${f.checksum_sha256_MBps}   (CRC-32: ${f.checksum_crc32_MBps || 'n/a'})`);
  console.log(`  slowest stage ${slowest}`);
  console.log(`  pipeline: encode ${f.encode_MBps} (${pct(f.encode_MBps, slowest)} of slowest stage), decode ${f.decode_MBps}, ` +
    `decode with ${m} data shards missing ${f.decode_missing_MBps} (${pct(f.decode_missing_MBps, slowest)})`);
  return r;
}

const pct = (a: number, b: number): string => `${Math.round((100 * a) / b)}%`;

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[0] ?? '64');
  const bytes = mib * 2 ** 20;
  const log = await measure('log-like', logLike(bytes));
  const rnd = await measure('random', randomBytes(bytes));
  const json: Record<string, number> = { ...log };
  for (const [k, v] of Object.entries(rnd)) json[`random_${k}`] = v;
  console.log(JSON.stringify(json));
}
