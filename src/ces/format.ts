/**
 * The byte format of a CES shard, version 1. Everything in it is checked before use; a
 * decoder needs only any `k` shards of an object and the key ring.
 *
 * Glossary: an *object* is the byte stream given to the encoder. It is cut into *stripes* of
 * `stripeBytes` plaintext bytes (the last may be shorter; an empty object has one empty
 * stripe). Each stripe is compressed (one zstd frame), encrypted (XChaCha20-Poly1305, tag
 * appended), zero-padded to `k * pieceBytes` and cut into `k` data *pieces*, from which
 * Reed-Solomon computes `m` parity pieces. Shard `i` is the stream of piece `i` of every stripe.
 *
 * A shard is: header, then one record per stripe (record head + piece), then the trailer.
 * Integers are unsigned big-endian. "zero" fields must be zero.
 *
 * Header, {@link headerBytes} = 128:
 * ```
 *   0   8  magic 89 50 43 45 53 0D 0A 1A ("\x89PCES\r\n\x1a", catches text-mode mangling)
 *   8   2  format version (1); a larger one is refused as unsupported_version
 *  10   2  header bytes (128)
 *  12   1  k, data shards (1..24)
 *  13   1  m, parity shards (0..6)
 *  14   1  shard index (0..k+m-1; data pieces first)
 *  15   1  zero
 *  16   4  stripe bytes
 *  20   4  zero
 *  24   8  key id (see keys.ts)
 *  32  32  label hash: SHA-256("pangea-ces/1 label\0" || UTF-8 label)
 *  64  24  object id: the nonce of stripe 0
 *  88   8  zero
 *  96  32  SHA-256 of bytes 0..96
 * ```
 * Record head, {@link recordBytes} = 80, followed by `piece bytes` of piece:
 * ```
 *   0   4  magic "PCSR"
 *   4   4  stripe index (0, 1, 2, ...)
 *   8   4  plaintext bytes of this stripe (= stripe bytes unless last)
 *  12   4  ciphertext bytes (zstd frame + 16-byte Poly1305 tag)
 *  16   4  piece bytes = ceil(ciphertext bytes / k) rounded up to a multiple of 8
 *  20   1  flags: bit 0 set on the last stripe, other bits zero
 *  21   3  zero
 *  24  24  nonce of the stripe (the same in every shard)
 *  48  32  checksum: SHA-256(shard header || record bytes 0..48 || piece)
 * ```
 * Bytes 0..48 of a record are the same in every shard of the object; the checksum binds the
 * piece to its shard (through the header) and position, so a corrupt or misplaced piece is an
 * erasure, found without decrypting. SHA-256 rather than CRC-32: node:crypto's SHA-256 uses
 * the CPU's SHA extensions (several GB/s, and it hashes compressed bytes), it resists
 * deliberate collisions, and zlib.crc32 exists only from Node 20.15 (the benchmark shows both).
 *
 * Trailer, {@link trailerBytes} = 80, after the last record:
 * ```
 *   0   4  magic "PCST"
 *   4   4  stripe count
 *   8   8  total plaintext bytes (a stream does not know it at the start)
 *  16  24  nonce of the last stripe (nonces chain, so it names the whole content)
 *  40   8  zero
 *  48  32  SHA-256(shard header || trailer bytes 0..48)
 * ```
 * Authentication (see cipher.ts): the associated data of stripe `i` is {@link associatedData}
 * (label hash, stripe bytes, `i`, plaintext bytes, last flag, nonce of stripe `i - 1`), so
 * stripes cannot be swapped, dropped, truncated away or moved between objects, and the total
 * length is authenticated by the last stripe.
 */
import { createHash } from 'node:crypto';
import { assert } from './errors.js';
import { dataShardsMax, parityShardsMax, stripeBytesMax, stripeBytesMin } from './params.js';
import { compressedBytesMax } from './compress.js';

export const formatVersion = 1;
export const headerBytes = 128;
export const recordBytes = 80;
export const trailerBytes = 80;
export const nonceBytes = 24;
export const tagBytes = 16;
export const keyIdBytes = 8;
export const labelHashBytes = 32;
export const checksumBytes = 32;
/** Bytes 0..48 of a record head and trailer: what the checksum covers besides the header. */
export const recordCoveredBytes = 48;
/** Stripe indices are u32. */
export const stripesMax = 0xffffffff;

const magic = Uint8Array.from([0x89, 0x50, 0x43, 0x45, 0x53, 0x0d, 0x0a, 0x1a]);
const recordMagic = 0x50435352; // "PCSR"
const trailerMagic = 0x50435354; // "PCST"
const flagLast = 1;

export interface ShardHeader {
  version: number;
  dataShards: number;
  parityShards: number;
  shardIndex: number;
  stripeBytes: number;
  keyId: Uint8Array;
  labelHash: Uint8Array;
  objectId: Uint8Array;
  /** The 128 header bytes as stored, covered by every checksum of the shard. */
  bytes: Uint8Array;
}

/** The fields of a record head; `bytes` is the 80-byte head as stored. */
export interface RecordHead extends RecordFields {
  checksum: Uint8Array;
  bytes: Uint8Array;
}

export interface Trailer {
  stripeCount: number;
  totalBytes: number;
  lastNonce: Uint8Array;
}

export function labelHash(label: string): Uint8Array {
  return sha256(Buffer.from('pangea-ces/1 label\0', 'latin1'), Buffer.from(label, 'utf8'));
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Piece bytes for a ciphertext: the Reed-Solomon library wants multiples of 8. */
export function pieceBytesFor(ciphertextBytes: number, dataShards: number): number {
  return Math.ceil(Math.ceil(ciphertextBytes / dataShards) / 8) * 8;
}

export function ciphertextBytesMax(stripeBytes: number): number {
  return compressedBytesMax(stripeBytes) + tagBytes;
}

export function pieceBytesMax(stripeBytes: number, dataShards: number): number {
  return pieceBytesFor(ciphertextBytesMax(stripeBytes), dataShards);
}

export function writeHeader(h: Omit<ShardHeader, 'bytes' | 'version'>): ShardHeader {
  assert(h.keyId.length === keyIdBytes && h.labelHash.length === labelHashBytes, 'header field sizes');
  assert(h.objectId.length === nonceBytes, 'object id size');
  const b = Buffer.alloc(headerBytes);
  b.set(magic, 0);
  b.writeUInt16BE(formatVersion, 8);
  b.writeUInt16BE(headerBytes, 10);
  b.writeUInt8(h.dataShards, 12);
  b.writeUInt8(h.parityShards, 13);
  b.writeUInt8(h.shardIndex, 14);
  b.writeUInt32BE(h.stripeBytes, 16);
  b.set(h.keyId, 24);
  b.set(h.labelHash, 32);
  b.set(h.objectId, 64);
  b.set(sha256(b.subarray(0, 96)), 96);
  return { ...h, version: formatVersion, bytes: b };
}

export type HeaderResult =
  | { ok: true; header: ShardHeader }
  | { ok: false; code: 'bad_header' | 'unsupported_version'; reason: string };

/** Parses and checks a header; never throws on bad bytes. */
export function parseHeader(bytes: Uint8Array): HeaderResult {
  const bad = (reason: string): HeaderResult => ({ ok: false, code: 'bad_header', reason });
  if (bytes.length < headerBytes) return bad(`shard shorter than its ${headerBytes}-byte header (${bytes.length} bytes)`);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, headerBytes);
  if (!b.subarray(0, 8).equals(magic)) return bad('not a CES shard (bad magic)');
  const version = b.readUInt16BE(8);
  const checksumOk = Buffer.from(sha256(b.subarray(0, 96))).equals(b.subarray(96, 128));
  if (version !== formatVersion) {
    if (version > formatVersion) {
      return {
        ok: false,
        code: 'unsupported_version',
        reason: `format version ${version} is newer than this reader (version ${formatVersion})` +
          (checksumOk ? '' : ' or the header is corrupt'),
      };
    }
    return bad(`format version ${version} does not exist`);
  }
  if (!checksumOk) return bad('header checksum mismatch');
  const dataShards = b.readUInt8(12);
  const parityShards = b.readUInt8(13);
  const shardIndex = b.readUInt8(14);
  const stripeBytes = b.readUInt32BE(16);
  if (b.readUInt16BE(10) !== headerBytes) return bad(`header bytes ${b.readUInt16BE(10)} != ${headerBytes}`);
  if (dataShards < 1 || dataShards > dataShardsMax) return bad(`k = ${dataShards} out of range`);
  if (parityShards > parityShardsMax) return bad(`m = ${parityShards} out of range`);
  if (shardIndex >= dataShards + parityShards) return bad(`shard index ${shardIndex} >= k + m`);
  if (stripeBytes < stripeBytesMin || stripeBytes > stripeBytesMax) return bad(`stripe bytes ${stripeBytes} out of range`);
  if (b[15] !== 0 || b.readUInt32BE(20) !== 0 || b.readBigUInt64BE(88) !== 0n) return bad('nonzero reserved field');
  const copy = Uint8Array.from(b);
  return {
    ok: true,
    header: {
      version,
      dataShards,
      parityShards,
      shardIndex,
      stripeBytes,
      keyId: copy.subarray(24, 32),
      labelHash: copy.subarray(32, 64),
      objectId: copy.subarray(64, 88),
      bytes: copy,
    },
  };
}

/** A string equal for two headers iff they describe the same object (any shard index). */
export function objectIdentity(h: ShardHeader): string {
  const b = Buffer.from(h.bytes.subarray(0, 96));
  b[14] = 0;
  return b.toString('hex');
}

export interface RecordFields {
  stripeIndex: number;
  plaintextBytes: number;
  ciphertextBytes: number;
  pieceBytes: number;
  last: boolean;
  nonce: Uint8Array;
}

/** Writes the 48 shared bytes of a record head (everything but the checksum) into `out`. */
export function writeRecordShared(f: RecordFields, out: Buffer): void {
  assert(out.length === recordBytes && f.nonce.length === nonceBytes, 'record sizes');
  out.fill(0);
  out.writeUInt32BE(recordMagic, 0);
  out.writeUInt32BE(f.stripeIndex, 4);
  out.writeUInt32BE(f.plaintextBytes, 8);
  out.writeUInt32BE(f.ciphertextBytes, 12);
  out.writeUInt32BE(f.pieceBytes, 16);
  out.writeUInt8(f.last ? flagLast : 0, 20);
  out.set(f.nonce, 24);
}

/** The checksum of a piece, stored at record bytes 48..80. */
export function pieceChecksum(header: Uint8Array, record: Uint8Array, piece: Uint8Array): Uint8Array {
  return createHash('sha256')
    .update(header)
    .update(record.subarray(0, recordCoveredBytes))
    .update(piece)
    .digest();
}

/**
 * Parses a record head and checks that its fields are consistent with the header, so that
 * reading `pieceBytes` after it stays within bounds. Returns undefined if not; the checksum is
 * checked later, with the piece.
 */
export function parseRecordHead(bytes: Uint8Array, header: ShardHeader): RecordHead | undefined {
  if (bytes.length !== recordBytes) return undefined;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b.readUInt32BE(0) !== recordMagic) return undefined;
  const flags = b.readUInt8(20);
  if ((flags & ~flagLast) !== 0 || b[21] !== 0 || b[22] !== 0 || b[23] !== 0) return undefined;
  const r: RecordHead = {
    stripeIndex: b.readUInt32BE(4),
    plaintextBytes: b.readUInt32BE(8),
    ciphertextBytes: b.readUInt32BE(12),
    pieceBytes: b.readUInt32BE(16),
    last: (flags & flagLast) !== 0,
    nonce: bytes.subarray(24, 48),
    checksum: bytes.subarray(48, 80),
    bytes,
  };
  if (r.plaintextBytes > header.stripeBytes) return undefined;
  if (!r.last && r.plaintextBytes !== header.stripeBytes) return undefined;
  if (r.ciphertextBytes <= tagBytes || r.ciphertextBytes > ciphertextBytesMax(header.stripeBytes)) return undefined;
  if (r.pieceBytes !== pieceBytesFor(r.ciphertextBytes, header.dataShards)) return undefined;
  return r;
}

export function writeTrailer(header: Uint8Array, t: Trailer): Buffer {
  assert(Number.isSafeInteger(t.totalBytes) && t.totalBytes >= 0, 'total bytes');
  const b = Buffer.alloc(trailerBytes);
  b.writeUInt32BE(trailerMagic, 0);
  b.writeUInt32BE(t.stripeCount, 4);
  b.writeBigUInt64BE(BigInt(t.totalBytes), 8);
  b.set(t.lastNonce, 16);
  b.set(sha256(header, b.subarray(0, recordCoveredBytes)), recordCoveredBytes);
  return b;
}

/** Parses a trailer; undefined if malformed or its checksum fails. */
export function parseTrailer(header: Uint8Array, bytes: Uint8Array): Trailer | undefined {
  if (bytes.length !== trailerBytes) return undefined;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b.readUInt32BE(0) !== trailerMagic || b.readBigUInt64BE(40) !== 0n) return undefined;
  if (!Buffer.from(sha256(header, b.subarray(0, recordCoveredBytes))).equals(b.subarray(recordCoveredBytes))) return undefined;
  const total = b.readBigUInt64BE(8);
  if (total > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return { stripeCount: b.readUInt32BE(4), totalBytes: Number(total), lastNonce: Uint8Array.from(b.subarray(16, 40)) };
}

/** Associated data of a stripe; see the format description above. */
export function associatedData(a: {
  labelHash: Uint8Array;
  stripeBytes: number;
  stripeIndex: number;
  plaintextBytes: number;
  last: boolean;
  prevNonce: Uint8Array;
}): Buffer {
  const b = Buffer.alloc(88);
  b.write('pangea-ces/1 ad\0', 0, 'latin1');
  b.set(a.labelHash, 16);
  b.writeUInt32BE(a.stripeBytes, 48);
  b.writeUInt32BE(a.stripeIndex, 52);
  b.writeUInt32BE(a.plaintextBytes, 56);
  b.writeUInt8(a.last ? flagLast : 0, 60);
  b.set(a.prevNonce, 64);
  return b;
}
