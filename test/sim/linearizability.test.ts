import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkLinearizable,
  kvModel,
  SearchBudgetExhaustedError,
  type KvInput,
  type KvOutput,
  type Model,
  type Operation,
} from './linearizability.js';

type KvOp = Operation<KvInput, KvOutput>;

const put = (clientId: number, key: string, value: string, call: number, ret: number): KvOp => ({
  clientId,
  input: { kind: 'put', key, value },
  call,
  output: {},
  ret,
});
const get = (clientId: number, key: string, value: string | null, call: number, ret: number): KvOp => ({
  clientId,
  input: { kind: 'get', key },
  call,
  output: { value },
  ret,
});
const cas = (clientId: number, key: string, expect: string | null, value: string, ok: boolean, call: number, ret: number): KvOp => ({
  clientId,
  input: { kind: 'cas', key, expect, value },
  call,
  output: { ok },
  ret,
});

function assertLinearizable(history: KvOp[]): void {
  const result = checkLinearizable(kvModel, history);
  assert.deepEqual(result, { ok: true });
}

function assertNotLinearizable(history: KvOp[], partition = 'x'): string {
  const result = checkLinearizable(kvModel, history);
  assert.equal(result.ok, false);
  assert.equal(result.partition, partition);
  return result.explanation;
}

test('an empty history and sequential histories are linearizable', () => {
  assertLinearizable([]);
  assertLinearizable([get(1, 'x', null, 0, 1), put(1, 'x', 'a', 2, 3), get(2, 'x', 'a', 4, 5)]);
});

test('a stale read after a completed write is not linearizable', () => {
  const explanation = assertNotLinearizable([
    put(1, 'x', 'a', 0, 1),
    put(1, 'x', 'b', 2, 3),
    get(2, 'x', 'a', 4, 5),
  ]);
  assert.match(explanation, /partition "x"/);
  assert.match(explanation, /t=5/);
  assert.match(explanation, /"kind":"get"/);
});

test('a read of a value never written is not linearizable', () => {
  assertNotLinearizable([put(1, 'x', 'a', 0, 10), get(2, 'x', 'zzz', 1, 2)]);
});

test('two readers seeing concurrent writes in opposite orders is not linearizable', () => {
  const writes = [put(1, 'x', 'a', 0, 100), put(2, 'x', 'b', 0, 100)];
  assertNotLinearizable([
    ...writes,
    get(3, 'x', 'a', 10, 11),
    get(3, 'x', 'b', 12, 13),
    get(4, 'x', 'b', 10, 11),
    get(4, 'x', 'a', 12, 13),
  ]);
  // One reader alone may see both orders' first value then the other: fine.
  assertLinearizable([...writes, get(3, 'x', 'a', 10, 11), get(3, 'x', 'b', 12, 13), get(4, 'x', 'b', 14, 15)]);
});

test('concurrent operations are fine in some order', () => {
  assertLinearizable([
    put(1, 'x', 'a', 0, 10),
    put(2, 'x', 'b', 1, 9),
    get(3, 'x', 'a', 2, 12),
    get(4, 'x', 'b', 3, 4),
    get(5, 'x', 'a', 11, 13),
  ]);
  // Operations that touch at one instant count as concurrent.
  assertLinearizable([put(1, 'x', 'a', 0, 5), get(2, 'x', null, 5, 6)]);
  assertNotLinearizable([put(1, 'x', 'a', 0, 5), get(2, 'x', null, 6, 7)]);
});

test('an unknown-outcome write may be seen, or not, but not before its call', () => {
  const lost = put(1, 'x', 'a', 5, Infinity);
  assertLinearizable([lost, get(2, 'x', null, 10, 11)]);
  assertLinearizable([lost, get(2, 'x', 'a', 10, 11)]);
  assertLinearizable([lost, get(2, 'x', null, 10, 11), get(2, 'x', 'a', 12, 13)]);
  // Seen, it cannot be unseen: once linearized, it stays.
  assertNotLinearizable([lost, get(2, 'x', 'a', 10, 11), get(2, 'x', null, 12, 13)]);
  // It cannot take effect before it was called.
  assertNotLinearizable([lost, get(2, 'x', 'a', 0, 1)]);
  // Its output is ignored, and it need not be linearized at all (the history ends fine without it).
  assertLinearizable([{ ...get(1, 'x', 'junk', 0, Infinity) }, put(2, 'x', 'b', 1, 2), { ...put(3, 'x', 'c', 3, Infinity) }]);
});

test('compare-and-set histories', () => {
  assertLinearizable([
    cas(1, 'x', null, 'a', true, 0, 1),
    cas(2, 'x', null, 'b', false, 2, 3),
    get(3, 'x', 'a', 4, 5),
  ]);
  // Two concurrent cas from null: exactly one may win.
  assertLinearizable([cas(1, 'x', null, 'a', true, 0, 10), cas(2, 'x', null, 'b', false, 0, 10), get(3, 'x', 'a', 11, 12)]);
  assertNotLinearizable([cas(1, 'x', null, 'a', true, 0, 10), cas(2, 'x', null, 'b', true, 0, 10)]);
  // A cas that failed although the expected value was there.
  assertNotLinearizable([put(1, 'x', 'a', 0, 1), cas(2, 'x', 'a', 'b', false, 2, 3)]);
  // An unknown-outcome cas explains a later read only if its expectation held.
  assertLinearizable([put(1, 'x', 'a', 0, 1), { ...cas(2, 'x', 'a', 'b', false, 2, Infinity) }, get(3, 'x', 'b', 5, 6)]);
  assertNotLinearizable([put(1, 'x', 'a', 0, 1), { ...cas(2, 'x', 'q', 'b', true, 2, Infinity) }, get(3, 'x', 'b', 5, 6)]);
});

test('keys are checked separately and the failing key is named', () => {
  assertNotLinearizable([put(1, 'x', 'a', 0, 1), get(1, 'y', 'a', 2, 3), put(2, 'y', 'b', 0, 1)], 'y');
});

test('a malformed operation is rejected', () => {
  assert.throws(() => checkLinearizable(kvModel, [put(1, 'x', 'a', 5, 4)]), RangeError);
  assert.throws(() => checkLinearizable(kvModel, [put(1, 'x', 'a', Infinity, Infinity)]), RangeError);
});

test('running out of search budget throws instead of answering', () => {
  const history: KvOp[] = [];
  for (let i = 0; i < 12; i++) history.push(put(i, 'x', `v${i}`, 0, 100));
  history.push(get(99, 'x', 'never', 101, 102));
  assert.throws(() => checkLinearizable(kvModel, history, { maxSteps: 1000 }), SearchBudgetExhaustedError);
  assert.throws(() => checkLinearizable(kvModel, history, { maxSteps: 1000 }), /search budget exhausted/);
});

// ---- Randomized: histories from a real sequential execution ----

/** mulberry32: a small seeded PRNG, so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `opsCount` operations of `clients` clients against a real map. Each operation takes
 * effect at one instant between its call and its return, so the history is linearizable by
 * construction. With probability `lostRate` the client never hears back (ret = Infinity);
 * such an operation takes effect or not at random.
 */
function generateHistory(random: () => number, opts: { clients: number; opsCount: number; keys: number; lostRate: number }): KvOp[] {
  const store = new Map<string, string>();
  const history: KvOp[] = [];
  type Active = { op: KvOp; applied: boolean; lost: boolean };
  const active = new Map<number, Active>();
  let started = 0;
  let written = 0;
  let time = 0;
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  while (started < opts.opsCount || active.size > 0) {
    time++;
    const clientId = Math.floor(random() * opts.clients);
    const current = active.get(clientId);
    if (current === undefined) {
      if (started === opts.opsCount) continue;
      started++;
      const key = `k${Math.floor(random() * opts.keys)}`;
      const r = random();
      const value = `v${written++}`;
      const input: KvInput =
        r < 0.4
          ? { kind: 'get', key }
          : r < 0.75
            ? { kind: 'put', key, value }
            : { kind: 'cas', key, expect: random() < 0.5 ? (store.get(key) ?? null) : pick([null, `v${Math.floor(random() * written)}`]), value };
      const op: KvOp = { clientId, input, call: time, output: {}, ret: Infinity };
      active.set(clientId, { op, applied: false, lost: random() < opts.lostRate });
    } else if (!current.applied) {
      current.applied = true;
      if (current.lost && random() < 0.5) continue; // never takes effect
      const input = current.op.input;
      const now = store.get(input.key) ?? null;
      if (input.kind === 'get') current.op.output = { value: now };
      else if (input.kind === 'put') store.set(input.key, input.value);
      else {
        current.op.output = { ok: now === input.expect };
        if (now === input.expect) store.set(input.key, input.value);
      }
    } else {
      if (!current.lost) current.op.ret = time;
      history.push(current.op);
      active.delete(clientId);
    }
  }
  return history;
}

test('randomized histories from a sequential execution are linearizable, and a corrupted read is caught', () => {
  const random = prng(0x5eed);
  let corrupted = 0;
  for (let round = 0; round < 300; round++) {
    const history = generateHistory(random, { clients: 2 + (round % 5), opsCount: 40 + (round % 5) * 40, keys: 1 + (round % 3), lostRate: round % 2 ? 0.03 : 0 });
    assert.deepEqual(checkLinearizable(kvModel, history), { ok: true }, `round ${round}`);
    const reads = history.filter((op) => op.input.kind === 'get' && op.ret !== Infinity);
    if (reads.length === 0) continue;
    const victim = reads[Math.floor(random() * reads.length)]!;
    const mutated = history.map((op) => (op === victim ? { ...op, output: { value: 'never-written' } } : op));
    const result = checkLinearizable(kvModel, mutated);
    assert.equal(result.ok, false, `round ${round}`);
    assert.equal(result.partition, victim.input.key);
    assert.match(result.explanation, /never-written/);
    corrupted++;
  }
  assert.ok(corrupted > 250);
});

test('a history of a few hundred operations is checked quickly', () => {
  const random = prng(7);
  const history = generateHistory(random, { clients: 10, opsCount: 500, keys: 1, lostRate: 0.05 });
  const started = performance.now();
  assert.deepEqual(checkLinearizable(kvModel, history), { ok: true });
  assert.ok(performance.now() - started < 500);
});

// ---- Against a brute-force oracle on small random histories ----

/**
 * Tries every subset of unknown-outcome operations and every order of the chosen operations
 * that respects real time (a before b when a returned before b was called).
 */
function bruteForce<S, In, Out>(model: Model<S, In, Out>, ops: Operation<In, Out>[]): boolean {
  const n = ops.length;
  const required = ops.map((op) => op.ret !== Infinity);
  const used = new Array<boolean>(n).fill(false);
  const order: number[] = [];
  const go = (state: S): boolean => {
    if (required.every((r, i) => !r || used[i])) return true;
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      // Every operation that must precede i is already placed.
      if (ops.some((o, j) => !used[j] && j !== i && o.ret < ops[i]!.call)) continue;
      const op = ops[i]!;
      const { ok, next } = model.step(state, op.input, op.ret === Infinity ? undefined : op.output);
      if (!ok) continue;
      used[i] = true;
      order.push(i);
      if (go(next)) return true;
      order.pop();
      used[i] = false;
    }
    return false;
  };
  return go(model.init());
}

test('agrees with a brute-force search on small random histories', () => {
  const random = prng(42);
  const values = [null, 'a', 'b', 'c'];
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  let failures = 0;
  for (let round = 0; round < 3000; round++) {
    const n = 1 + Math.floor(random() * 7);
    const history: KvOp[] = [];
    for (let i = 0; i < n; i++) {
      const call = Math.floor(random() * 10);
      const ret = random() < 0.15 ? Infinity : call + Math.floor(random() * 5);
      const r = random();
      if (r < 0.4) history.push(get(i, 'x', pick(values), call, ret));
      else if (r < 0.75) history.push(put(i, 'x', pick(['a', 'b', 'c']), call, ret));
      else history.push(cas(i, 'x', pick(values), pick(['a', 'b', 'c']), random() < 0.5, call, ret));
    }
    const expected = bruteForce(kvModel, history);
    const result = checkLinearizable(kvModel, history);
    assert.equal(result.ok, expected, JSON.stringify(history));
    if (!expected) failures++;
  }
  // Both outcomes are well represented.
  assert.ok(failures > 300 && failures < 2700, `failures ${failures}`);
});
