/**
 * Errors of the CES codec. Every failure a caller can meet is a {@link CesError} whose `code`
 * says what went wrong; the message names the stripes and shards concerned. Decoding never
 * returns wrong bytes instead of throwing, and never crashes on hostile input.
 */

/** What went wrong, one code per cause an operator must tell apart. */
export type CesErrorCode =
  /** No key in the key ring has the key id the shards were encoded with. */
  | 'wrong_key'
  /** The shards were encoded under another label than the one the caller expects. */
  | 'wrong_label'
  /** Shards of different objects are mixed and no object has enough of them. */
  | 'foreign_shard'
  /** A shard was written by a newer format version than this code reads. */
  | 'unsupported_version'
  /** No shard has a well-formed header (bad magic, bad checksum, impossible fields). */
  | 'bad_header'
  /** Some stripe has fewer than `k` good pieces, so it cannot be rebuilt. */
  | 'not_enough_shards'
  /** A rebuilt stripe failed authentication: tampering, or a key with a colliding id. */
  | 'auth_failed'
  /** A stripe authenticated but did not decompress to its recorded length (encoder bug). */
  | 'corrupt'
  /** Encoding parameters out of range. */
  | 'bad_params'
  /** A key file that is not 32 bytes raw or 64 hex digits, or whose recorded id is wrong. */
  | 'bad_key';

export class CesError extends Error {
  override readonly name = 'CesError';
  constructor(
    readonly code: CesErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Throws a plain Error for a broken invariant: a bug in this module, not bad input. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`ces invariant violated: ${message}`);
}
