/**
 * Encoding: bytes in, `k + m` shard streams out, in one pass with bounded memory.
 *
 * Per stripe: zstd, then XChaCha20-Poly1305 under a synthetic nonce (cipher.ts), zero padding
 * to `k * pieceBytes`, then Reed-Solomon parity. Memory is a few stripe-sized buffers reused
 * for every stripe, whatever the input size. A full stripe is held until more input arrives
 * or the input ends, because the last stripe is marked as such in its authenticated data.
 */
import { associatedData, headerBytes, labelHash, nonceBytes, pieceBytesFor, pieceBytesMax, pieceChecksum, recordBytes,
  stripesMax, tagBytes, trailerBytes, writeHeader, writeRecordShared, writeTrailer, type ShardHeader } from './format.js';
import { CesError, assert } from './errors.js';
import { resolveParams, type CesParams } from './params.js';
import { StripeCompressor, compressedBytesMax } from './compress.js';
import { sealInto, syntheticNonce } from './cipher.js';
import { Erasure } from './erasure.js';
import { bufferSource, MemorySink, type ShardSink } from './io.js';
import type { CesKey } from './keys.js';

export interface EncodeResult {
  params: CesParams;
  stripeCount: number;
  /** Plaintext bytes encoded. */
  totalBytes: number;
  /** Bytes after compression, before encryption, padding and parity. */
  compressedBytes: number;
  /** Bytes written to each shard (all shards have the same length). */
  shardBytes: number;
  /** Hex of the object id (the nonce of stripe 0), the same for the same input, key, label and params. */
  objectId: string;
}

/**
 * Encodes `input` into `sinks` (exactly `k + m` of them; sink `i` receives shard `i`).
 * `label` names the object's context (cluster id, index range...) and must be given again to
 * decode. Deterministic: the same input, key, label and params give byte-identical shards.
 * On failure the sinks hold partial shards, which the caller discards. The encoder is done
 * with an input chunk before it asks for the next one, so the input may reuse its buffers.
 */
export async function encodeStream(
  input: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  sinks: readonly ShardSink[],
  key: CesKey,
  label: string,
  params: Partial<CesParams> = {},
): Promise<EncodeResult> {
  const p = resolveParams(params);
  const k = p.dataShards;
  const m = p.parityShards;
  const n = k + m;
  if (sinks.length !== n) throw new CesError('bad_params', `need ${n} shard sinks (k + m), got ${sinks.length}`);
  const stripeBytes = p.stripeBytes;
  const lh = labelHash(label);
  const compressor = new StripeCompressor(p.level);
  const erasure = new Erasure(k, m);
  const pieceMax = pieceBytesMax(stripeBytes, k);
  const stripe = Buffer.allocUnsafe(stripeBytes);
  const compressed = Buffer.allocUnsafe(compressedBytesMax(stripeBytes));
  const data = Buffer.alloc(k * pieceMax);
  const parity = Buffer.alloc(Math.max(1, m) * pieceMax);
  const records = Array.from({ length: n }, () => Buffer.alloc(recordBytes));
  let headers: ShardHeader[] | undefined;
  let stripeIndex = 0;
  let prevNonce: Uint8Array = new Uint8Array(nonceBytes);
  let totalBytes = 0;
  let compressedTotal = 0;
  let shardBytes = 0;

  const emit = async (plaintext: Uint8Array, last: boolean): Promise<void> => {
    if (stripeIndex > stripesMax) throw new CesError('bad_params', `input exceeds ${stripesMax} stripes; use larger stripes`);
    const plaintextBytes = plaintext.length;
    assert(plaintextBytes === stripeBytes || last, 'only the last stripe is short');
    const frameBytes = compressor.compress(compressed, plaintext);
    const frame = compressed.subarray(0, frameBytes);
    const ad = associatedData({ labelHash: lh, stripeBytes, stripeIndex, plaintextBytes, last, prevNonce });
    const nonce = syntheticNonce(key.nonceKey, ad, frame);
    const ciphertextBytes = sealInto(data, key.cipherKey, nonce, ad, frame);
    assert(ciphertextBytes === frameBytes + tagBytes, 'ciphertext length');
    const pieceBytes = pieceBytesFor(ciphertextBytes, k);
    assert(pieceBytes <= pieceMax, 'piece within bound');
    data.fill(0, ciphertextBytes, k * pieceBytes);
    await erasure.encodeParity(data, parity, pieceBytes);
    const first = headers === undefined;
    headers ??= Array.from({ length: n }, (_, shardIndex) =>
      writeHeader({ dataShards: k, parityShards: m, shardIndex, stripeBytes, keyId: key.id, labelHash: lh, objectId: nonce }),
    );
    const hs = headers;
    const fields = { stripeIndex, plaintextBytes, ciphertextBytes, pieceBytes, last, nonce };
    const pieces = records.map((record, i) => {
      const piece = i < k ? data.subarray(i * pieceBytes, (i + 1) * pieceBytes)
        : parity.subarray((i - k) * pieceBytes, (i - k + 1) * pieceBytes);
      writeRecordShared(fields, record);
      record.set(pieceChecksum(hs[i]!.bytes, record, piece), 48);
      return piece;
    });
    await Promise.all(
      sinks.map(async (sink, i) => {
        if (first) await sink.write(hs[i]!.bytes);
        await sink.write(records[i]!);
        await sink.write(pieces[i]!);
      }),
    );
    shardBytes += (first ? headerBytes : 0) + recordBytes + pieceBytes;
    prevNonce = nonce;
    stripeIndex++;
    totalBytes += plaintextBytes;
    compressedTotal += frameBytes;
  };

  let fill = 0;
  for await (const chunk of input) {
    let off = 0;
    while (off < chunk.length) {
      if (fill === stripeBytes) {
        await emit(stripe, false);
        fill = 0;
      }
      if (fill === 0 && chunk.length - off > stripeBytes) {
        // A whole stripe with more input after it: encode it in place, saving a copy. The
        // source is suspended meanwhile, so the chunk cannot change under us.
        await emit(chunk.subarray(off, off + stripeBytes), false);
        off += stripeBytes;
        continue;
      }
      const take = Math.min(stripeBytes - fill, chunk.length - off);
      stripe.set(chunk.subarray(off, off + take), fill);
      fill += take;
      off += take;
    }
  }
  await emit(stripe.subarray(0, fill), true);
  const hs = headers!;
  await Promise.all(
    sinks.map((sink, i) => sink.write(writeTrailer(hs[i]!.bytes, { stripeCount: stripeIndex, totalBytes, lastNonce: prevNonce }))),
  );
  shardBytes += trailerBytes;
  return {
    params: p,
    stripeCount: stripeIndex,
    totalBytes,
    compressedBytes: compressedTotal,
    shardBytes,
    objectId: Buffer.from(hs[0]!.objectId).toString('hex'),
  };
}

/** Encodes a buffer held in memory; returns the `k + m` shards. */
export async function encodeBuffer(
  bytes: Uint8Array,
  key: CesKey,
  label: string,
  params: Partial<CesParams> = {},
): Promise<Buffer[]> {
  const p = resolveParams(params);
  const sinks = Array.from({ length: p.dataShards + p.parityShards }, () => new MemorySink());
  await encodeStream(bufferSource(bytes), sinks, key, label, p);
  return sinks.map((s) => s.bytes());
}
