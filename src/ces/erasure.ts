/**
 * Reed-Solomon through @ronomon/reed-solomon (Cauchy matrices, native, runs in libuv's
 * threadpool). A stripe's `k` data pieces lie back to back in one buffer and its `m` parity
 * pieces in another, each `pieceBytes` long, a multiple of 8 as the library requires.
 */
import { createRequire } from 'node:module';
import { assert } from './errors.js';
import { dataShardsMax, parityShardsMax } from './params.js';

interface ReedSolomon {
  create(k: number, m: number): Buffer;
  encode(
    context: Buffer,
    sources: number,
    targets: number,
    buffer: Uint8Array,
    bufferOffset: number,
    bufferSize: number,
    parity: Uint8Array,
    parityOffset: number,
    paritySize: number,
    callback: (error?: Error) => void,
  ): void;
  MAX_K: number;
  MAX_M: number;
}
const rs = createRequire(import.meta.url)('@ronomon/reed-solomon') as ReedSolomon;
assert(rs.MAX_K === dataShardsMax && rs.MAX_M === parityShardsMax, 'reed-solomon limits changed');

const contexts = new Map<string, Buffer>();

export class Erasure {
  private readonly context: Buffer | undefined;
  constructor(
    readonly dataShards: number,
    readonly parityShards: number,
  ) {
    const key = `${dataShards}+${parityShards}`;
    let context = contexts.get(key);
    if (context === undefined && parityShards > 0) {
      context = rs.create(dataShards, parityShards);
      contexts.set(key, context);
    }
    this.context = context;
  }

  /** Computes the parity pieces from the data pieces. No-op when m = 0. */
  encodeParity(data: Uint8Array, parity: Uint8Array, pieceBytes: number): Promise<void> {
    const k = this.dataShards;
    const m = this.parityShards;
    if (m === 0) return Promise.resolve();
    const dataMask = (1 << k) - 1;
    const parityMask = ((1 << m) - 1) << k;
    return this.run(dataMask, parityMask, data, parity, pieceBytes);
  }

  /**
   * Rebuilds the data pieces absent from `present` (a bit per piece, data first then parity)
   * in place. Needs at least `k` present pieces; present pieces must be correct.
   */
  rebuild(data: Uint8Array, parity: Uint8Array, pieceBytes: number, present: number): Promise<void> {
    const k = this.dataShards;
    const dataMask = (1 << k) - 1;
    const targets = ~present & dataMask;
    if (targets === 0) return Promise.resolve();
    assert(popcount(present) >= k && this.parityShards > 0, 'rebuild needs k present pieces');
    return this.run(present, targets, data, parity, pieceBytes);
  }

  private run(sources: number, targets: number, data: Uint8Array, parity: Uint8Array, pieceBytes: number): Promise<void> {
    const k = this.dataShards;
    const m = this.parityShards;
    assert(pieceBytes > 0 && pieceBytes % 8 === 0, 'piece bytes a positive multiple of 8');
    assert(data.length >= k * pieceBytes && parity.length >= m * pieceBytes, 'stripe buffers too small');
    return new Promise((resolve, reject) => {
      rs.encode(this.context!, sources, targets, data, 0, k * pieceBytes, parity, 0, m * pieceBytes, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }
}

export function popcount(mask: number): number {
  let n = 0;
  for (let x = mask >>> 0; x !== 0; x &= x - 1) n++;
  return n;
}
