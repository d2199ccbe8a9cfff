import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CesError, type CesErrorCode, bufferSource, cesKey, decodeBuffers, decodeShards, encodeBuffer, encodeStream, formatKeyFile, KeyRing,
  MemorySink, parseKeyFile, resolveParams, verifyShards } from '../../src/ces/index.js';
import { headerBytes, pieceChecksum, recordBytes, sha256 } from '../../src/ces/format.js';
import { key1, layout, ring1, testKey } from './helpers.js';

const params = { dataShards: 4, parityShards: 2, stripeBytes: 1000, level: 3 };
const input = Buffer.from(Array.from({ length: 400 }, (_, i) => `entry ${i} ${(i * 7919) % 1013}\n`).join('')); // ~6 stripes

async function rejects(p: Promise<unknown>, code: CesErrorCode, message?: RegExp): Promise<CesError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CesError, `not a CesError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** Rewrites record `j` of a shard with `edit`, then fixes its checksum (a forger with no key). */
function forgeRecord(shard: Buffer, j: number, edit: (record: Buffer, piece: Buffer) => void): Buffer {
  const out = Buffer.from(shard);
  const s = layout(out).stripes[j]!;
  const record = out.subarray(s.start, s.start + recordBytes);
  const piece = out.subarray(s.start + recordBytes, s.end);
  edit(record, piece);
  record.set(pieceChecksum(out.subarray(0, headerBytes), record, piece), 48);
  return out;
}

test('round trip with the defaults, and with any k good shards', async () => {
  const shards = await encodeBuffer(input, key1, 'a', params);
  assert.ok((await decodeBuffers(shards, ring1, 'a')).equals(input));
  assert.ok((await decodeBuffers([undefined, shards[1], shards[2], undefined, shards[4], shards[5]], ring1, 'a')).equals(input));
  assert.ok((await decodeBuffers([...shards].reverse(), ring1, 'a')).equals(input), 'order of sources does not matter');
  assert.ok((await decodeBuffers(await encodeBuffer(input, key1, 'a'), ring1, 'a')).equals(input));
});

test('wrong key: a key ring without the shards key id', async () => {
  const shards = await encodeBuffer(input, key1, 'a', params);
  await rejects(decodeBuffers(shards, new KeyRing([testKey(2)]), 'a'), 'wrong_key', new RegExp(key1.idHex));
  assert.ok((await decodeBuffers(shards, new KeyRing([testKey(2), key1]), 'a')).equals(input), 'the ring picks the key by id');
});

test('wrong label', async () => {
  const shards = await encodeBuffer(input, key1, 'cluster-1/log/0-99', params);
  await rejects(decodeBuffers(shards, ring1, 'cluster-1/log/100-199'), 'wrong_label');
});

test('shards of another object: left out when the object has enough, foreign_shard when mixed evenly', async () => {
  const a = await encodeBuffer(input, key1, 'a', params);
  const b = await encodeBuffer(Buffer.concat([input, Buffer.from('more')]), key1, 'a', params);
  const c = await encodeBuffer(input, key1, 'c', params);
  // One foreign shard (same label) in place of shard 2: a has 5, decodes.
  const mixed = [a[0], a[1], b[2], a[3], a[4], a[5]];
  assert.ok((await decodeBuffers(mixed, ring1, 'a')).equals(input));
  const report = await verifyShards(mixed.map((s) => bufferSource(s!)), ring1, 'a');
  assert.ok(report.rebuildable);
  assert.match(report.shards.find((s) => s.name === 'source 2')!.problems.join(), /another object/);
  // Half and half: no majority.
  await rejects(decodeBuffers([a[0], a[1], a[2], b[3], b[4], b[5]], ring1, 'a'), 'foreign_shard');
  // Three of a and three under another label: not enough of a.
  await rejects(decodeBuffers([a[0], a[1], a[2], c[3], c[4], c[5]], ring1, 'a'), 'foreign_shard');
});

test('objects that share their first stripe and differ later are told apart stripe by stripe', async () => {
  const other = Buffer.from(input);
  other[3500]! ^= 1; // stripe 3
  const a = await encodeBuffer(input, key1, 'a', params);
  const b = await encodeBuffer(other, key1, 'a', params);
  assert.ok(a[0]!.subarray(0, headerBytes).equals(b[0]!.subarray(0, headerBytes)), 'same headers');
  assert.ok((await decodeBuffers([a[0], a[1], a[2], a[3], b[4], undefined], ring1, 'a')).equals(input));
  await rejects(decodeBuffers([a[0], a[1], a[2], b[3], b[4], b[5]], ring1, 'a'), 'foreign_shard', /stripe 3/);
});

test('future format version, and malformed headers', async () => {
  const shards = await encodeBuffer(input, key1, 'a', params);
  const future = shards.map((s) => {
    const c = Buffer.from(s);
    c.writeUInt16BE(2, 8);
    c.set(sha256(c.subarray(0, 96)), 96);
    return c;
  });
  await rejects(decodeBuffers(future, ring1, 'a'), 'unsupported_version', /version 2/);
  const flipped = shards.map((s) => {
    const c = Buffer.from(s);
    c[40]! ^= 1; // inside the label hash: the header checksum fails
    return c;
  });
  await rejects(decodeBuffers(flipped, ring1, 'a'), 'bad_header', /checksum/);
  await rejects(decodeBuffers(shards.map(() => Buffer.from('not a shard at all')), ring1, 'a'), 'bad_header', /shorter|magic/);
  await rejects(decodeBuffers(shards.map(() => Buffer.alloc(0)), ring1, 'a'), 'bad_header');
  await rejects(decodeBuffers([], ring1, 'a'), 'not_enough_shards');
});

test('not enough shards: the error names the shards, or the stripe and what was wrong with each shard', async () => {
  const shards = await encodeBuffer(input, key1, 'a', params);
  await rejects(decodeBuffers([shards[0], undefined, shards[2], undefined, undefined, shards[5]], ring1, 'a'), 'not_enough_shards',
    /3 usable shards.*shard 1 missing; shard 3 missing; shard 4 missing/);
  const damaged = shards.map((s) => Buffer.from(s));
  for (const i of [0, 3, 5]) {
    const st = layout(damaged[i]!).stripes[2]!;
    damaged[i]![st.end - 1]! ^= 0xff;
  }
  await rejects(decodeBuffers(damaged, ring1, 'a'), 'not_enough_shards',
    /stripe 2: 3 good pieces, need k = 4: source 0 \(shard 0\) checksum mismatch in stripe 2; source 3 .*; source 5/);
  const truncated = shards.map((s, i) => (i < 3 ? s.subarray(0, layout(s).stripes[4]!.start + 100) : s));
  await rejects(decodeBuffers(truncated, ring1, 'a'), 'not_enough_shards', /stripe 4: 3 good pieces.*truncated in stripe 4/);
});

test('stripes cannot be altered, swapped, moved between objects, re-marked last or truncated away', async () => {
  const shards = await encodeBuffer(input, key1, 'a', { ...params, parityShards: 0 });
  const other = await encodeBuffer(Buffer.from(input).reverse(), key1, 'a', { ...params, parityShards: 0 });
  // Ciphertext altered by someone who can fix checksums but has no key.
  const altered = [forgeRecord(shards[0]!, 1, (_r, piece) => (piece[0]! ^= 1)), ...shards.slice(1)];
  await rejects(decodeBuffers(altered, ring1, 'a'), 'auth_failed', /stripe 1/);
  // Stripes 1 and 2 swapped (indices rewritten).
  const swapped = shards.map((s) => {
    const l = layout(s);
    const [s1, s2] = [l.stripes[1]!, l.stripes[2]!];
    const x = Buffer.concat([s.subarray(0, s1.start), s.subarray(s2.start, s2.end), s.subarray(s1.start, s1.end), s.subarray(s2.end)]);
    const y = forgeRecord(x, 1, (r) => r.writeUInt32BE(1, 4));
    return forgeRecord(y, 2, (r) => r.writeUInt32BE(2, 4));
  });
  await rejects(decodeBuffers(swapped, ring1, 'a'), 'auth_failed', /stripe 1/);
  // Stripe 1 taken from another object under the same label and key.
  const moved = shards.map((s, i) => {
    const l = layout(s);
    const lo = layout(other[i]!);
    const x = Buffer.concat([s.subarray(0, l.stripes[1]!.start), other[i]!.subarray(lo.stripes[1]!.start, lo.stripes[1]!.end), s.subarray(l.stripes[1]!.end)]);
    return forgeRecord(x, 1, () => undefined);
  });
  await rejects(decodeBuffers(moved, ring1, 'a'), 'auth_failed', /stripe 1/);
  // Stripe 2 re-marked as the last one, the rest cut off.
  const cut = shards.map((s) => forgeRecord(s, 2, (r) => (r[20] = 1)).subarray(0, layout(s).stripes[2]!.end));
  await rejects(decodeBuffers(cut, ring1, 'a'), 'auth_failed', /stripe 2/);
  // Last stripes dropped from every shard.
  const dropped = shards.map((s) => s.subarray(0, layout(s).stripes[3]!.start));
  await rejects(decodeBuffers(dropped, ring1, 'a'), 'not_enough_shards', /stripe 3.*ends before stripe 3/);
});

test('parameters out of range', async () => {
  for (const bad of [{ dataShards: 0 }, { dataShards: 25 }, { parityShards: 7 }, { parityShards: -1 }, { stripeBytes: 10 },
    { stripeBytes: 2 ** 30 }, { level: 30 }, { dataShards: 1.5 }]) {
    assert.throws(() => resolveParams(bad), (e: unknown) => e instanceof CesError && e.code === 'bad_params');
  }
  await rejects(encodeStream([input], [new MemorySink()], key1, 'a', params), 'bad_params', /need 6 shard sinks/);
  for (const [k, m] of [[1, 0], [24, 6], [1, 6], [24, 0]] as const) {
    const shards = await encodeBuffer(input, key1, 'a', { dataShards: k, parityShards: m, stripeBytes: 1000 });
    const given = shards.map((s, i) => (i < m ? undefined : s));
    assert.ok((await decodeBuffers(given, ring1, 'a')).equals(input), `k = ${k}, m = ${m}`);
  }
});

test('key files: raw or hex, with a checked id; anything else is bad_key', () => {
  const raw = Buffer.alloc(32, 5);
  const key = cesKey(raw);
  assert.equal(parseKeyFile(raw).idHex, key.idHex);
  assert.equal(parseKeyFile(Buffer.from(formatKeyFile(raw))).idHex, key.idHex);
  assert.equal(parseKeyFile(Buffer.from(`  ${raw.toString('hex').toUpperCase()}\r\n`)).idHex, key.idHex);
  const bad = (text: string | Buffer, re: RegExp) =>
    assert.throws(() => parseKeyFile(Buffer.from(text)), (e: unknown) => e instanceof CesError && e.code === 'bad_key' && re.test(e.message));
  bad(Buffer.alloc(31, 1), /32 raw bytes or 64 hex/);
  // What a power cut leaves of a key file written without fsync.
  bad(Buffer.alloc(0), /empty .*lost in a crash.*copy the key file from another node/);
  bad(Buffer.alloc(102), /empty/);
  bad('zz'.repeat(32), /hex/);
  bad(`# pangea ces key id 0000000000000000\n${raw.toString('hex')}\n`, /damaged/);
});

test('hostile shards never crash the decoder and never decode', async () => {
  const shards = await encodeBuffer(input.subarray(0, 2500), key1, 'a', params);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.option(fc.uint8Array({ maxLength: 600 }), { nil: undefined }), { maxLength: 7 }), fc.boolean(), async (junk, keepHeader) => {
      const sources = junk.map((j, i) => (j === undefined ? undefined : keepHeader && shards[i % 6] ? Buffer.concat([shards[i % 6]!.subarray(0, headerBytes + (j.length % 200)), j]) : Buffer.from(j)));
      try {
        await decodeBuffers(sources, ring1, 'a');
        assert.fail('decoded junk');
      } catch (e) {
        assert.ok(e instanceof CesError, String(e));
      }
      const report = await verifyShards(sources.map((s) => (s === undefined ? undefined : bufferSource(s))), ring1);
      assert.equal(report.rebuildable, false);
    }),
    { numRuns: 200 },
  );
});

test('a source that fails while being read is an erasure, not a crash', async () => {
  const shards = await encodeBuffer(input, key1, 'a', params);
  const failing = (bytes: Buffer, after: number): AsyncIterable<Uint8Array> => ({
    async *[Symbol.asyncIterator]() {
      yield bytes.subarray(0, after);
      throw new Error('connection reset');
    },
  });
  const sources = shards.map((s, i) => (i === 1 ? failing(s, 500) : i === 4 ? failing(s, 10) : bufferSource(s)));
  const chunks: Buffer[] = [];
  for await (const c of decodeShards(sources, ring1, 'a')) chunks.push(c);
  assert.ok(Buffer.concat(chunks).equals(input));
  const report = await verifyShards(shards.map((s, i) => (i === 1 ? failing(s, 500) : bufferSource(s))), ring1);
  assert.ok(report.rebuildable);
  assert.match(report.shards[1]!.problems.join(), /unreadable in stripe \d+: connection reset/);
});
