import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BALLOT_NONE, type LogPoint, type StoredSlot } from '../../src/consensus/index.js';
import { LmdbLogStore } from '../../src/log/lmdb.js';
import { openStores, type OpenStoresOptions } from '../../src/stores.js';
import type { StoreEnv } from '../../src/storage/env.js';
import { MemoryLogStore } from '../../src/log/memory.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'pangea-log-'));
  dirs.push(d);
  return d;
}

function open(dir: string, opts: OpenStoresOptions = {}) {
  return openStores(dir, opts);
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const ballot = (round: number, leader = 'a') => ({ round, leader });

function slot(n: number, chosen = false, round = 1): StoredSlot {
  return {
    slot: n,
    ballot: ballot(round),
    chosen,
    batch: [
      { kind: 'app', data: bytes(`cmd ${n}`) },
      { kind: 'config', change: { op: 'add_learner', node: `n${n}`, meta: bytes('meta') } },
      { kind: 'config', change: { op: 'remove', node: 'x' } },
    ],
  };
}

const point = (s: number): LogPoint => ({ slot: s, index: s * 3, epochs: [{ fromSlot: 1, config: { voters: ['a'], learners: [] } }] });

test('an empty log loads as nothing promised, nothing compacted', async () => {
  const stores = open(tempDir());
  assert.deepEqual(stores.log.load(), { promised: BALLOT_NONE, slots: [], compacted: null, commit: 0 });
  await stores.close();
});

test('promise, slots and commit marker survive a reopen, byte for byte', async () => {
  const dir = tempDir();
  let stores = open(dir);
  await stores.log.write([{ kind: 'promise', ballot: ballot(3, 'b') }, { kind: 'slot', slot: slot(1) }, { kind: 'slot', slot: slot(2, true) }]);
  await stores.log.write([{ kind: 'slot', slot: slot(3) }, { kind: 'commit', slot: 2 }]);
  await stores.log.write([{ kind: 'commit', slot: 1 }]); // a lower marker never moves it back
  await stores.close();

  stores = open(dir);
  const loaded = stores.log.load();
  assert.deepEqual(loaded.promised, ballot(3, 'b'));
  assert.equal(loaded.commit, 2);
  assert.equal(loaded.compacted, null);
  assert.deepEqual(loaded.slots, [slot(1), slot(2, true), slot(3)]);
  assert.equal(loaded.slots[0]!.batch[0]!.kind, 'app');
  const data = (loaded.slots[0]!.batch[0] as { data: Uint8Array }).data;
  assert.equal(data.constructor, Uint8Array, 'bytes come back as plain Uint8Array');
  // Chosen slots: slot 1 is under the commit marker (so chosen), slot 3 is not.
  assert.deepEqual(stores.log.readSlots(1, 10), [{ ...slot(1), chosen: true }, slot(2, true)]);
  assert.deepEqual(stores.log.readSlots(2, 2), [slot(2, true)]);
  assert.deepEqual(stores.log.readSlots(5, 4), []);
  // Up to a slot the caller knows is chosen (the applied one: the stored marker may lag it,
  // as the driver defers the marker), slots are served as chosen; past it, not.
  assert.deepEqual(stores.log.readSlots(1, 10, 3), [{ ...slot(1), chosen: true }, slot(2, true), { ...slot(3), chosen: true }]);
  assert.deepEqual(stores.log.readSlots(1, 10, 1), [{ ...slot(1), chosen: true }, slot(2, true)], 'a lower bound never hides what the marker covers');
  await stores.close();
});

test('a rewritten slot replaces the old one', async () => {
  const dir = tempDir();
  const stores = open(dir);
  await stores.log.write([{ kind: 'slot', slot: slot(1, false, 1) }]);
  await stores.log.write([{ kind: 'slot', slot: slot(1, true, 2) }]);
  assert.deepEqual(stores.log.load().slots, [slot(1, true, 2)]);
  await stores.close();
});

test('compaction removes slots up to its point; later writes below it are ignored', async () => {
  const dir = tempDir();
  let stores = open(dir);
  const ops = [];
  for (let s = 1; s <= 10; s++) ops.push({ kind: 'slot' as const, slot: slot(s, true) });
  await stores.log.write(ops);
  await stores.log.write([{ kind: 'compact', through: point(5) }, { kind: 'commit', slot: 10 }]);
  await stores.log.write([{ kind: 'slot', slot: slot(4, true) }, { kind: 'compact', through: point(3) }]);
  let loaded = stores.log.load();
  assert.deepEqual(loaded.compacted, point(5));
  assert.deepEqual(
    loaded.slots.map((s) => s.slot),
    [6, 7, 8, 9, 10],
  );
  assert.deepEqual(
    stores.log.readSlots(1, 7).map((s) => s.slot),
    [6, 7],
  );
  // Slots written and compacted away in the same event-loop turn are never loaded either.
  const a = stores.log.write([{ kind: 'slot', slot: slot(11, true) }, { kind: 'slot', slot: slot(12, true) }]);
  const b = stores.log.write([{ kind: 'compact', through: point(11) }]);
  await Promise.all([a, b]);
  await stores.close();

  stores = open(dir);
  loaded = stores.log.load();
  assert.deepEqual(loaded.compacted, point(11));
  assert.deepEqual(
    loaded.slots.map((s) => s.slot),
    [12],
  );
  assert.equal(loaded.commit, 10);
  await stores.close();
});

test('a write resolves only after its flush, and never before the writes handed over before it', async () => {
  const gates: { release: () => void }[] = [];
  const stores = open(tempDir(), {
    flushGate: () => new Promise<void>((resolve) => gates.push({ release: resolve })),
  });
  const order: number[] = [];
  const first = stores.log.write([{ kind: 'promise', ballot: ballot(1) }]).then(() => order.push(1));
  await new Promise((r) => setImmediate(r)); // the next turn: a separate commit
  const second = stores.log.write([{ kind: 'slot', slot: slot(1) }]).then(() => order.push(2));
  // Both commits are done and flushed; the gates hold both acknowledgements back.
  while (gates.length < 2) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, [], 'no write resolves while its flush gate is held');
  assert.deepEqual(
    stores.log.load().slots.map((s) => s.slot),
    [1],
    'committed (visible) is not acknowledged',
  );
  gates[1]!.release(); // the later batch's gate opens first: it still waits for the earlier one
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, []);
  gates[0]!.release();
  await Promise.all([first, second]);
  assert.deepEqual(order, [1, 2]);
  await stores.close();
});

test('closing waits for queued writes; writes after close are refused', async () => {
  const dir = tempDir();
  let stores = open(dir);
  const pending = stores.log.write([{ kind: 'slot', slot: slot(1) }]);
  await stores.close();
  await pending;
  await assert.rejects(stores.log.write([{ kind: 'slot', slot: slot(2) }]), /closed/);
  stores = open(dir);
  assert.equal(stores.log.load().slots.length, 1);
  await stores.close();
});

test('the in-memory twin loads what the LMDB store loads for the same writes', async () => {
  const stores = open(tempDir());
  const memory = new MemoryLogStore();
  const batches: Parameters<typeof memory.write>[0][] = [
    [{ kind: 'promise', ballot: ballot(2, 'b') }, { kind: 'slot', slot: slot(1) }, { kind: 'slot', slot: slot(2) }],
    [{ kind: 'slot', slot: slot(2, true, 2) }, { kind: 'slot', slot: slot(3) }, { kind: 'commit', slot: 2 }],
    [{ kind: 'compact', through: point(1) }, { kind: 'slot', slot: slot(1, true) }, { kind: 'slot', slot: slot(4) }, { kind: 'commit', slot: 1 }],
  ];
  for (const ops of batches) await Promise.all([stores.log.write(ops), memory.write(ops)]);
  assert.deepEqual(memory.load(), stores.log.load());
  assert.deepEqual(memory.readSlots(0, 10), stores.log.readSlots(0, 10));
  assert.deepEqual(memory.readSlots(0, 10, 3), stores.log.readSlots(0, 10, 3), 'slots up to a known chosen slot, alike');
  await stores.close();
  await memory.close();
});

test('a write that fails to commit fails committed() too, for good: nothing is applied on top of it', async () => {
  // lmdb-js rejects a queued put when the environment is full (MDB_MAP_FULL) or the disk fails.
  const fail = () => Promise.reject(new Error('MDB_MAP_FULL'));
  const db = { get: () => undefined, put: fail, remove: fail, getRange: function* () {}, getKeys: function* () {} };
  const seq = { get: () => undefined, putSync: () => true, getEntry: () => ({ version: 0 }), put: fail, ifVersion: (_k: string, _v: number, block: () => void) => (block(), fail()) };
  const env = { root: { flushed: Promise.resolve(true) }, logMeta: db, logSlots: db, logSeq: seq } as unknown as StoreEnv;
  const log = new LmdbLogStore(env);
  await assert.rejects(log.write([{ kind: 'commit', slot: 5 }]), /MDB_MAP_FULL/);
  await assert.rejects(log.committed(), /MDB_MAP_FULL/, 'the driver waits for committed() before it applies');
  await assert.rejects(log.committed(), /MDB_MAP_FULL/, 'and every later wait fails too');
});
