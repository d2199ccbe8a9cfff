import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Envelope } from '../../src/consensus/index.js';
import { validateEnvelope } from '../../src/consensus/validate.js';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameError, encodeBody, encodeFrames, joinFrames } from '../../src/codec/frames.js';

function envelope(i: number, dataBytes = 8): Envelope {
  const data = new Uint8Array(dataBytes).map((_, j) => (i + j) & 0xff);
  return {
    cluster: 'c1',
    from: 'a',
    to: 'b',
    msg: {
      type: 'accept',
      ballot: { round: 3, leader: 'a' },
      commit: i,
      values: [
        {
          slot: i + 1,
          batch: [
            { kind: 'app', data },
            { kind: 'config', change: { op: 'add_voter', node: 'c', meta: new Uint8Array([1, 2, 3]) } },
            { kind: 'config', change: { op: 'remove', node: 'd' } },
          ],
        },
      ],
    },
  };
}

function decodeAll(decoder: FrameDecoder, chunks: Uint8Array[]): unknown[] {
  const out: unknown[] = [];
  for (const c of chunks) for (const v of decoder.push(c)) out.push(v);
  return out;
}

test('roundtrip keeps Uint8Array data and passes validation', () => {
  const envs = [envelope(1), envelope(2, 0), envelope(3, 1000)];
  const out = decodeAll(new FrameDecoder(), [encodeFrames(envs)]);
  assert.equal(out.length, 3);
  for (let i = 0; i < envs.length; i++) {
    assert.ok(validateEnvelope(out[i]), 'valid envelope');
    assert.deepEqual(normalise(out[i]), normalise(envs[i]));
    const batch = (out[i] as { msg: { values: { batch: { data?: unknown; change?: { meta?: unknown } }[] }[] } }).msg.values[0]!.batch;
    assert.ok(batch[0]!.data instanceof Uint8Array);
    assert.ok(batch[1]!.change!.meta instanceof Uint8Array);
    assert.equal(batch[2]!.change!.meta, undefined, 'an absent meta stays absent, not null');
  }
});

/** Buffers (what msgpackr gives on Node) compared as plain byte arrays. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: [...v] };
  if (Array.isArray(v)) return v.map(normalise);
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}

test('decoded byte arrays do not alias the input chunk', () => {
  const bytes = encodeFrames([envelope(7)]);
  const [raw] = decodeAll(new FrameDecoder(), [bytes]);
  bytes.fill(0);
  const data = (raw as { msg: { values: { batch: { data: Uint8Array }[] }[] } }).msg.values[0]!.batch[0]!.data;
  assert.deepEqual([...data], [7, 8, 9, 10, 11, 12, 13, 14]);
});

test('frames split at every byte boundary decode the same', () => {
  const envs = [envelope(1), envelope(2, 40), envelope(3, 3)];
  const bytes = encodeFrames(envs);
  const whole = decodeAll(new FrameDecoder(), [bytes]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const out = decodeAll(new FrameDecoder(), [bytes.subarray(0, cut), bytes.subarray(cut)]);
    assert.deepEqual(out, whole, `cut at ${cut}`);
  }
  for (let cut = 1; cut < bytes.length; cut++) {
    const out = decodeAll(new FrameDecoder(), [bytes.subarray(0, cut), bytes.subarray(cut, cut + 1), bytes.subarray(cut + 1)]);
    assert.deepEqual(out, whole, `three pieces at ${cut}`);
  }
  const single = decodeAll(
    new FrameDecoder(),
    Array.from(bytes, (b) => new Uint8Array([b])),
  );
  assert.deepEqual(single, whole, 'one byte at a time');
});

test('accepts an iterable of chunks (Uint8ArrayList)', () => {
  const bytes = encodeFrames([envelope(1), envelope(2)]);
  const decoder = new FrameDecoder();
  const out = [...decoder.push([bytes.subarray(0, 5), bytes.subarray(5, 60), bytes.subarray(60)])];
  assert.equal(out.length, 2);
  assert.equal(decoder.bufferedBytes, 0);
});

test('a partial frame stays buffered until complete', () => {
  const bytes = encodeFrames([envelope(1)]);
  const decoder = new FrameDecoder();
  assert.deepEqual([...decoder.push(bytes.subarray(0, 10))], []);
  assert.equal(decoder.bufferedBytes, 10 - FRAME_HEADER_BYTES);
  assert.equal([...decoder.push(bytes.subarray(10))].length, 1);
});

test('an oversized length prefix throws frame_too_large before any body arrives', () => {
  const decoder = new FrameDecoder(1024);
  const header = new Uint8Array([0, 0, 4, 1]); // 1025
  assert.throws(
    () => [...decoder.push(header)],
    (err: unknown) => err instanceof FrameError && err.code === 'frame_too_large',
  );
  // Spent: later pushes throw the same error.
  assert.throws(() => [...decoder.push(encodeFrames([envelope(1)]))], FrameError);
  assert.throws(() => [...new FrameDecoder().push(new Uint8Array([0xff, 0xff, 0xff, 0xff]))], /exceeds the limit/);
  // At the limit is fine.
  const body = encodeBody(envelope(1));
  const ok = [...new FrameDecoder(body.length).push(joinFrames([body]))];
  assert.equal(ok.length, 1);
});

test('frames before a bad one are still yielded', () => {
  const good = encodeFrames([envelope(1), envelope(2)]);
  const bad = new Uint8Array([0, 0, 0, 2, 0xa5, 0x61]); // a truncated string
  const buf = new Uint8Array(good.length + bad.length);
  buf.set(good);
  buf.set(bad, good.length);
  const seen: unknown[] = [];
  assert.throws(() => {
    for (const v of new FrameDecoder().push(buf)) seen.push(v);
  }, (err: unknown) => err instanceof FrameError && err.code === 'frame_malformed');
  assert.equal(seen.length, 2);
});

test('bodies that are not exactly one msgpack value throw frame_malformed', () => {
  const cases: [string, number[]][] = [
    ['reserved byte', [0xc1]],
    ['truncated string', [0xa5, 0x61]],
    ['trailing bytes', [0x01, 0x02]],
    ['truncated map', [0x82, 0xa1, 0x61]],
    ['array claiming 2^32-1 items', [0xdd, 0xff, 0xff, 0xff, 0xff]],
    ['bin claiming 1 GiB', [0xc6, 0x40, 0, 0, 0]],
    ['empty frame', []],
  ];
  for (const [name, body] of cases) {
    const frame = new Uint8Array(FRAME_HEADER_BYTES + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, FRAME_HEADER_BYTES);
    assert.throws(
      () => [...new FrameDecoder().push(frame)],
      (err: unknown) => err instanceof FrameError && err.code === 'frame_malformed',
      name,
    );
  }
});

test('random garbage never escapes as anything but FrameError', () => {
  let seed = 1;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
  for (let i = 0; i < 2000; i++) {
    const n = 1 + Math.floor(random() * 64);
    const bytes = new Uint8Array(n).map(() => Math.floor(random() * 256));
    if (i % 2 === 0 && n >= 4) new DataView(bytes.buffer).setUint32(0, n - 4); // plausible lengths too
    try {
      for (const raw of new FrameDecoder(1 << 16).push(bytes)) validateEnvelope(raw);
    } catch (err) {
      assert.ok(err instanceof FrameError, `case ${i}: ${String(err)}`);
    }
  }
});

test('frameBytesMax is checked', () => {
  assert.throws(() => new FrameDecoder(0), RangeError);
  assert.throws(() => new FrameDecoder(2 ** 32), RangeError);
});
