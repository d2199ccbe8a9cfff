/**
 * CES: compress, encrypt and erasure-code. Turns a byte stream into `k + m` self-describing
 * shards and any `k` of them back, in one pass with bounded memory. Depends on nothing else
 * in Pangea; the archive stores every log segment and snapshot through it.
 *
 * Pipeline per stripe (default 4 MiB): zstd -> XChaCha20-Poly1305 with a synthetic nonce ->
 * Reed-Solomon into `k` data + `m` parity pieces, each with a checksum. Byte format: format.ts.
 *
 * ```ts
 * const key = await readKeyFile('ces.key');
 * await encodeStream(createReadStream(path), sinks, key, 'cluster-7/log/1000-1999');
 * for await (const chunk of decodeShards(sources, new KeyRing([key]), 'cluster-7/log/1000-1999')) out.write(chunk);
 * ```
 */
export { CesError, type CesErrorCode } from './errors.js';
export { paramsDefault, resolveParams, type CesParams, dataShardsMax, parityShardsMax, stripeBytesMin, stripeBytesMax,
  levelMin, levelMax } from './params.js';
export { KeyRing, cesKey, parseKeyFile, readKeyFile, writeNewKeyFile, formatKeyFile, generateKeyBytes, type CesKey } from './keys.js';
export { encodeStream, encodeBuffer, type EncodeResult } from './encode.js';
export { decodeShards, decodeBuffers, verifyShards, type DecodeOptions, type ShardReport, type VerifyReport } from './decode.js';
export { MemorySink, FileSink, fileSource, bufferSource, type ShardSink, type ShardSource } from './io.js';
export { formatVersion } from './format.js';
