/**
 * Encoding parameters and their bounds. The bounds are those of the libraries
 * (@ronomon/reed-solomon: k <= 24, m <= 6) and of the memory budget: encoding and decoding
 * each hold about `(3 + m / k) * stripeBytes` of buffers whatever the object size (plus the
 * sinks' and sources' own buffering), so `stripeBytesMax` bounds memory.
 */
import { CesError } from './errors.js';

export interface CesParams {
  /** `k`: data shards; any `k` of the `k + m` shards rebuild the object. */
  dataShards: number;
  /** `m`: parity shards; up to `m` pieces per stripe may be lost or corrupt. 0 stores plain shards. */
  parityShards: number;
  /** Plaintext bytes per stripe (the last stripe may be shorter). */
  stripeBytes: number;
  /** zstd compression level. */
  level: number;
}

export const dataShardsMin = 1;
export const dataShardsMax = 24;
export const parityShardsMax = 6;
export const stripeBytesMin = 64;
/** Bounds memory: see above; at most 64 MiB * (3 + 6) with k = 1 and m = 6. */
export const stripeBytesMax = 64 * 1024 * 1024;
/** Below this zstd gets close to no compression; levels above 19 ("ultra") want windows of up to 128 MiB. */
export const levelMin = -7;
export const levelMax = 19;

export const paramsDefault: Readonly<CesParams> = Object.freeze({
  dataShards: 4,
  parityShards: 2,
  stripeBytes: 4 * 1024 * 1024,
  level: 3,
});

/** Fills defaults and checks bounds; throws `bad_params`. */
export function resolveParams(partial: Partial<CesParams> = {}): CesParams {
  const p: CesParams = { ...paramsDefault, ...definedOnly(partial) };
  checkInt('dataShards', p.dataShards, dataShardsMin, dataShardsMax);
  checkInt('parityShards', p.parityShards, 0, parityShardsMax);
  checkInt('stripeBytes', p.stripeBytes, stripeBytesMin, stripeBytesMax);
  checkInt('level', p.level, levelMin, levelMax);
  return p;
}

function definedOnly(o: Partial<CesParams>): Partial<CesParams> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<CesParams>;
}

function checkInt(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new CesError('bad_params', `${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
}
