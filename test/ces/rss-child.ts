/**
 * Child process of memory.test.ts: encodes `argv[2]` MiB of incompressible bytes and decodes
 * them at the same time through bounded in-memory channels, with one data and one parity shard
 * lost (so every stripe is rebuilt). Prints one JSON line, then waits for stdin to close so
 * the parent can read this process's peak RSS from /proc.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { decodeShards, encodeStream, KeyRing, type ShardSink } from '../../src/ces/index.js';
import { Channel, key1, nullSink } from './helpers.js';

const mib = Number(process.argv[2] ?? '1024');
const chunkBytes = 1024 * 1024;
const inputHash = createHash('sha256');
const outputHash = createHash('sha256');

async function* incompressible(): AsyncGenerator<Uint8Array> {
  const ctr = createCipheriv('aes-256-ctr', Buffer.alloc(32, 1), Buffer.alloc(16));
  const zeros = Buffer.alloc(chunkBytes);
  for (let i = 0; i < mib; i++) {
    const chunk = ctr.update(zeros);
    inputHash.update(chunk);
    yield chunk;
  }
}

const k = 4;
const m = 2;
const lost = new Set([1, 5]);
const channels = Array.from({ length: k + m }, (_, i) => (lost.has(i) ? undefined : new Channel(4)));
const sinks: ShardSink[] = channels.map((c) => c ?? nullSink);
const t0 = performance.now();
const encoding = encodeStream(incompressible(), sinks, key1, 'rss', { dataShards: k, parityShards: m }).finally(() => {
  for (const c of channels) c?.close();
});
let outBytes = 0;
const decoding = (async () => {
  for await (const chunk of decodeShards(channels, new KeyRing([key1]), 'rss')) {
    outBytes += chunk.length;
    outputHash.update(chunk);
  }
})();
const [enc] = await Promise.all([encoding, decoding]);
const same = inputHash.digest('hex') === outputHash.digest('hex');
process.stdout.write(`${JSON.stringify({ same, inBytes: enc.totalBytes, outBytes, ms: Math.round(performance.now() - t0) })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
