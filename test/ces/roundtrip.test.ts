import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CesError, bufferSource, decodeBuffers, encodeBuffer, encodeStream, MemorySink, verifyShards } from '../../src/ces/index.js';
import { applyDamage, isDamaged, key1, layout, ring1, spoiledStripes, type Damage } from './helpers.js';

const stripeBytesArb = fc.constantFrom(64, 100, 256, 1000, 4096);

/** Random, repetitive (compressible) or mixed bytes. */
const contentArb = (maxBytes: number) =>
  fc.tuple(fc.nat({ max: maxBytes }), fc.constantFrom('random', 'repetitive', 'mixed'), fc.integer()).map(([n, kind, seed]) => {
    const b = Buffer.alloc(n);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      b[i] = kind === 'random' || (kind === 'mixed' && (i >> 7) % 2 === 0) ? x & 0xff : 'log line '.charCodeAt(i % 9);
    }
    return b;
  });

const damageArb: fc.Arbitrary<Damage> = fc.oneof(
  fc.constant<Damage>({ kind: 'missing' }),
  fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }).map<Damage>((at) => ({ kind: 'truncate', at })),
  fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 4 })
    .map<Damage>((at) => ({ kind: 'flip', at })),
);

test('decode returns the input whenever at most m pieces per stripe are lost or corrupt, else a CesError', async () => {
  let succeeded = 0;
  let failed = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({ k: fc.integer({ min: 1, max: 24 }), m: fc.integer({ min: 0, max: 6 }), stripeBytes: stripeBytesArb,
        sizeStripes: fc.double({ min: 0, max: 4.5, noNaN: true }), content: contentArb(5 * 4096),
        damaged: fc.array(fc.tuple(fc.nat(), damageArb), { maxLength: 8 }) }),
      async (c) => {
        const input = c.content.subarray(0, Math.min(Math.floor(c.sizeStripes * c.stripeBytes), c.content.length));
        const n = c.k + c.m;
        const shards = await encodeBuffer(input, key1, 'prop', { dataShards: c.k, parityShards: c.m, stripeBytes: c.stripeBytes, level: 1 });
        assert.equal(shards.length, n);
        const damage = new Map<number, Damage>();
        for (const [i, d] of c.damaged) damage.set(i % n, d);
        const l = layout(shards[0]!);
        const spoiled = l.stripes.map(() => 0);
        for (let i = 0; i < n; i++) spoiledStripes(l, damage.get(i)).forEach((bad, j) => (spoiled[j]! += bad ? 1 : 0));
        const expectOk = spoiled.every((bad) => bad <= c.m);
        const given = shards.map((s, i) => applyDamage(s, damage.get(i)));
        try {
          const out = await decodeBuffers(given, ring1, 'prop');
          assert.ok(expectOk, `decoded although stripes lost ${spoiled.join(',')} pieces with m = ${c.m}`);
          assert.ok(out.equals(input), 'decoded bytes differ from the input');
          succeeded++;
        } catch (e) {
          if (!(e instanceof CesError)) throw e;
          assert.ok(!expectOk, `failed although every stripe lost at most m = ${c.m} pieces: ${e.message}`);
          assert.ok(['not_enough_shards', 'bad_header', 'unsupported_version'].includes(e.code), e.message);
          const firstBad = spoiled.findIndex((bad) => bad > c.m);
          if (e.code === 'not_enough_shards' && firstBad > 0) assert.match(e.message, new RegExp(`stripe ${firstBad}\\b`));
          failed++;
        }
        // Verification agrees, shard by shard.
        const report = await verifyShards(given.map((s) => (s === undefined ? undefined : bufferSource(s))), ring1);
        assert.equal(report.rebuildable, expectOk, report.error?.message);
        if (expectOk) {
          for (let i = 0; i < n; i++) {
            const r = report.shards.find((s) => s.shardIndex === i && s.status !== 'rejected');
            const d = damage.get(i);
            const want = d?.kind === 'missing' ? 'missing' : isDamaged(l, d) ? 'bad' : 'good';
            // A shard whose header is spoiled is rejected, so its index shows as missing.
            if (want === 'bad') assert.notEqual(r?.status, 'good', `shard ${i}: ${JSON.stringify(report.shards)}`);
            else assert.equal(r?.status, want, `shard ${i}: ${JSON.stringify(report.shards)}`);
          }
        }
      },
    ),
    { numRuns: 400 },
  );
  assert.ok(succeeded > 50 && failed > 10, `cases: ${succeeded} decoded, ${failed} failed`);
});

test('the same input, key, label and params give byte-identical shards, however the input is chunked', async () => {
  await fc.assert(
    fc.asyncProperty(contentArb(3000), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1 }), async (input, cuts) => {
      const params = { dataShards: 3, parityShards: 2, stripeBytes: 256, level: 3 };
      const whole = await encodeBuffer(input, key1, 'det', params);
      const sinks = whole.map(() => new MemorySink());
      async function* chunks(): AsyncGenerator<Uint8Array> {
        let off = 0;
        for (let i = 0; off < input.length; i++) {
          const n = cuts[i % cuts.length]!;
          yield input.subarray(off, off + n);
          off += n;
        }
      }
      await encodeStream(chunks(), sinks, key1, 'det', params);
      sinks.forEach((s, i) => assert.ok(s.bytes().equals(whole[i]!)));
      const other = await encodeBuffer(input, key1, 'det2', params);
      assert.ok(!other[0]!.equals(whole[0]!), 'another label gives another object');
    }),
    { numRuns: 50 },
  );
});
