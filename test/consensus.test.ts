import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  Replica,
  applyChange,
  bootstrapState,
  configAt,
  hasQuorum,
  validateEnvelope,
  type Command,
  type Config,
  type Envelope,
} from '../src/consensus/index.js';

const srcDir = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'src', 'consensus');

test('the consensus core does no I/O, reads no clock and draws no randomness', () => {
  const files = readdirSync(srcDir).filter((f) => f.endsWith('.ts'));
  assert.ok(files.length >= 5, `expected the core's sources in ${srcDir}`);
  for (const f of files) {
    const code = readFileSync(join(srcDir, f), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    for (const m of code.matchAll(/from\s+'([^']+)'/g)) {
      assert.ok(m[1]!.startsWith('./'), `${f} imports ${m[1]}: the core may import only itself`);
    }
    for (const banned of [/\bDate\b/, /Math\.random/, /\bsetTimeout\b/, /\bsetInterval\b/, /\bprocess\b/, /\brequire\(/, /\bperformance\b/]) {
      assert.doesNotMatch(code, banned, `${f} uses ${banned}`);
    }
  }
});

test('membership changes are deterministic and never leave zero voters', () => {
  const c: Config = { voters: ['a', 'b', 'c'], learners: [] };
  const withLearner = applyChange(c, { op: 'add_learner', node: 'd' });
  assert.deepEqual(withLearner, { voters: ['a', 'b', 'c'], learners: ['d'] });
  assert.deepEqual(applyChange(withLearner, { op: 'promote', node: 'd' }), { voters: ['a', 'b', 'c', 'd'], learners: [] });
  assert.equal(applyChange(c, { op: 'promote', node: 'x' }), c, 'promoting a non-learner is a no-op');
  assert.equal(applyChange({ voters: ['a'], learners: [] }, { op: 'remove', node: 'a' }).voters.length, 1);
  assert.ok(hasQuorum(c, ['a', 'b']));
  assert.ok(!hasQuorum(withLearner, ['a', 'd']), 'learners never count');
  assert.throws(() => configAt([{ fromSlot: 5, config: c }], 4));
});

test('malformed, foreign and forged messages are dropped and counted', () => {
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5 }, bootstrapState({ voters: ['a', 'b', 'c'], learners: [] }));
  const bad: unknown[] = [
    null,
    42,
    { cluster: 'c1', from: 'b', to: 'a' },
    { cluster: 'c1', from: 'b', to: 'a', msg: { type: 'accept', ballot: { round: -1, leader: 'b' }, commit: 0, values: [] } },
    { cluster: 'c1', from: 'b', to: 'a', msg: { type: 'accept', ballot: { round: 1, leader: 'b' }, commit: 0, values: [{ slot: 1, batch: [{ kind: 'app', data: 'x' }] }] } },
    { cluster: 'c1', from: 'b', to: 'a', msg: { type: 'what' } },
  ];
  for (const m of bad) r.step(m);
  assert.equal(r.stats.dropped.malformed, bad.length);
  r.step({ cluster: 'c2', from: 'b', to: 'a', msg: { type: 'read_req', id: 1 } } satisfies Envelope);
  assert.equal(r.stats.dropped.other_cluster, 1);
  r.step({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'prepare', ballot: { round: 9, leader: 'c' }, commit: 0 } } satisfies Envelope);
  assert.equal(r.stats.dropped.forged_ballot, 1);
  r.step({ cluster: 'c1', from: 'zed', to: 'a', msg: { type: 'prepare', ballot: { round: 9, leader: 'zed' }, commit: 0 } } satisfies Envelope);
  assert.equal(r.stats.dropped.unknown_sender, 1);
  assert.equal(r.ready(), null, 'nothing dropped leads to any output');
  assert.equal(validateEnvelope({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'read_req', id: 3 } })?.msg.type, 'read_req');
});

test('a pre-vote goes only to a candidate whose commit slot is not behind (a behind one could not finish phase 1 alone: seed 3287)', () => {
  const config: Config = { voters: ['a', 'b', 'c', 'd'], learners: [] };
  const boot = bootstrapState(config);
  const at10 = { ...boot.base, slot: 10, index: 7 };
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5 }, { ...boot, base: at10, compacted: at10, commit: 10 });
  const granted = (from: string, commit: number): boolean | undefined => {
    r.step({ cluster: 'c1', from, to: 'a', msg: { type: 'prevote', round: 1, commit } } satisfies Envelope);
    const msg = r.ready()?.send.find((e) => e.to === from)?.msg;
    return msg?.type === 'prevote_reply' ? msg.granted : undefined;
  };
  assert.equal(granted('b', 9), false, 'behind this replica\'s commit slot');
  assert.equal(granted('c', 10), true);
  assert.equal(granted('d', 12), true);
});

test('a refused pre-vote names the higher round promised, and the pre-candidate asks above it next (seed 135)', () => {
  const config: Config = { voters: ['a', 'b', 'c'], learners: [] };
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5 }, { ...bootstrapState(config), promised: { round: 9, leader: 'c' } });
  r.step({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'prevote', round: 3, commit: 0 } } satisfies Envelope);
  assert.deepEqual(r.ready()?.send.find((e) => e.to === 'b')?.msg, { type: 'prevote_reply', round: 9, granted: false });

  const b = new Replica({ id: 'b', cluster: 'c1', random: () => 0.5 }, bootstrapState(config));
  const prevoteRound = (): number | undefined => {
    for (let i = 0; i < 100; i++) {
      b.tick();
      const msg = b.ready()?.send.find((e) => e.msg.type === 'prevote')?.msg;
      if (msg?.type === 'prevote') return msg.round;
    }
    return undefined;
  };
  assert.equal(prevoteRound(), 1);
  b.step({ cluster: 'c1', from: 'a', to: 'b', msg: { type: 'prevote_reply', round: 9, granted: false } } satisfies Envelope);
  assert.equal(prevoteRound(), 10);
});

test('a one-node cluster elects itself, commits in order and only after its write is durable', () => {
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0 }, bootstrapState({ voters: ['a'], learners: [] }));
  const drainOnce = () => {
    const ready = r.ready();
    if (ready !== null) r.persisted(ready.persistSeq);
    return ready;
  };
  for (let i = 0; i < 30 && r.currentRole !== 'leader'; i++) {
    r.tick();
    drainOnce();
  }
  assert.equal(r.currentRole, 'leader');
  drainOnce(); // the no-op of its own ballot
  const data = new TextEncoder().encode('x');
  assert.deepEqual(r.propose({ kind: 'app', data }), { ok: true });
  const ready = r.ready()!;
  assert.equal(ready.commit.flatMap((e) => e.batch).length, 0, 'not chosen before the leader’s own accept is durable');
  assert.ok(ready.persist.some((op) => op.kind === 'slot'));
  r.persisted(ready.persistSeq);
  const after = r.ready()!;
  const commands = after.commit.flatMap((e) => e.batch);
  assert.equal(commands.length, 1);
  assert.equal(after.commit.at(-1)!.index, 1, 'the first command takes index 1');
});

test('a leader that steps down hands back its queued commands, never proposed, and only those (review: their clients waited for the proposal timeout)', () => {
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5, alpha: 1, batchCommandsMax: 1 }, bootstrapState({ voters: ['a', 'b', 'c'], learners: [] }));
  let round = 0;
  for (let i = 0; i < 100 && round === 0; i++) {
    r.tick();
    const msg = r.ready()?.send.find((e) => e.msg.type === 'prevote')?.msg;
    if (msg?.type === 'prevote') round = msg.round;
  }
  r.step({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'prevote_reply', round, granted: true } } satisfies Envelope);
  const ballot = { round, leader: 'a' };
  r.persisted(r.ready()!.persistSeq);
  r.step({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'promise', ballot, commit: 0, compacted: 0, accepted: [] } } satisfies Envelope);
  assert.equal(r.currentRole, 'leader');
  const cmd = (s: string): Command => ({ kind: 'app', data: new TextEncoder().encode(s) });
  const commands = [cmd('x'), cmd('y'), cmd('z')];
  for (const c of commands) assert.deepEqual(r.propose(c), { ok: true });
  const proposed = r.ready()!.persist.flatMap((op) => (op.kind === 'slot' ? op.slot.batch : []));
  assert.deepEqual(r.takeDropped(), [], 'nothing is dropped while it leads');
  // b leads in a later round: a steps down with what the window of one slot left queued.
  r.step({ cluster: 'c1', from: 'b', to: 'a', msg: { type: 'heartbeat', ballot: { round: round + 1, leader: 'b' }, commit: 0, seq: 1 } } satisfies Envelope);
  assert.notEqual(r.currentRole, 'leader');
  const dropped = r.takeDropped();
  assert.ok(dropped.length > 0, 'some were still queued');
  for (const c of dropped) assert.ok(!proposed.includes(c), 'a dropped command was never in a slot');
  assert.deepEqual([...proposed.filter((c) => commands.includes(c)), ...dropped], commands, 'every command is either in a slot or handed back, in order');
  assert.deepEqual(r.takeDropped(), [], 'handed back once');
});

test('a stranger whose commit is ahead gets a vote (it may be a voter added since); one at or behind gets nothing (seed 202142)', () => {
  const boot = bootstrapState({ voters: ['a', 'b', 'c'], learners: [] });
  const at10 = { ...boot.base, slot: 10, index: 7 };
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5 }, { ...boot, base: at10, compacted: at10, commit: 10 });
  r.step({ cluster: 'c1', from: 'zed', to: 'a', msg: { type: 'prepare', ballot: { round: 9, leader: 'zed' }, commit: 10 } } satisfies Envelope);
  assert.equal(r.stats.dropped.unknown_sender, 1);
  assert.equal(r.ready(), null);
  r.step({ cluster: 'c1', from: 'zed', to: 'a', msg: { type: 'prevote', round: 9, commit: 12 } } satisfies Envelope);
  assert.deepEqual(r.ready()?.send.find((e) => e.to === 'zed')?.msg, { type: 'prevote_reply', round: 9, granted: true });
  r.step({ cluster: 'c1', from: 'zed', to: 'a', msg: { type: 'prepare', ballot: { round: 9, leader: 'zed' }, commit: 12 } } satisfies Envelope);
  const ready = r.ready()!;
  r.persisted(ready.persistSeq);
  const promise = [...ready.sendAfterPersist, ...(r.ready()?.send ?? [])].find((e) => e.to === 'zed')?.msg;
  assert.equal(promise?.type, 'promise');
});

test('a candidate leads once a quorum of promises speaks for its next slot, without waiting to catch up to a promiser ahead (seed 202142)', () => {
  const boot = bootstrapState({ voters: ['a', 'b', 'c', 'd'], learners: [] });
  const at10 = { ...boot.base, slot: 10, index: 7 };
  const r = new Replica({ id: 'a', cluster: 'c1', random: () => 0.5 }, { ...boot, base: at10, compacted: at10, commit: 10 });
  let round = 0;
  for (let i = 0; i < 100 && round === 0; i++) {
    r.tick();
    const msg = r.ready()?.send.find((e) => e.msg.type === 'prevote')?.msg;
    if (msg?.type === 'prevote') round = msg.round;
  }
  for (const from of ['b', 'c']) r.step({ cluster: 'c1', from, to: 'a', msg: { type: 'prevote_reply', round, granted: true } } satisfies Envelope);
  const ballot = { round, leader: 'a' };
  const toPrepare = r.ready()!;
  r.persisted(toPrepare.persistSeq);
  assert.equal(r.currentRole, 'candidate');
  const value = { slot: 11, ballot: { round: 1, leader: 'b' }, batch: [{ kind: 'app' as const, data: new TextEncoder().encode('v') }], chosen: false };
  const promise = (from: string, commit: number, accepted: (typeof value)[]) =>
    r.step({ cluster: 'c1', from, to: 'a', msg: { type: 'promise', ballot, commit, compacted: commit, accepted } } satisfies Envelope);
  promise('b', 20, []); // ahead: compacted through 20, it speaks only for slots after 20
  promise('c', 5, [value]);
  const asked = r.ready();
  assert.equal(r.currentRole, 'candidate', 'a, b and c promised, but b does not speak for slot 11');
  assert.ok(asked?.send.some((e) => e.to === 'b' && e.msg.type === 'catchup_req'), 'it catches up to b meanwhile');
  promise('d', 10, []);
  assert.equal(r.currentRole, 'leader', 'a, c and d speak for slot 11');
  const proposed = r.ready()!.persist.find((op) => op.kind === 'slot' && op.slot.slot === 11);
  assert.ok(proposed?.kind === 'slot' && proposed.slot.batch.length === 1, 'slot 11 re-proposes the value c accepted');
});

test('a promiser ahead speaks for no slot at or below its commit: a candidate with no other quorum catches up, never chooses over it (review of seed 202142)', () => {
  // Voters a, b, c; slots 11..ahead were chosen by {b, c} and b compacted through `ahead`. The
  // candidate a (commit 10) wins c's pre-vote, c dies before promising, b promises.
  for (const ahead of [11, 20]) {
    const boot = bootstrapState({ voters: ['a', 'b', 'c'], learners: [] });
    const at10 = { ...boot.base, slot: 10, index: 10 };
    const promised = { round: 1, leader: 'c' };
    const a = new Replica({ id: 'a', cluster: 'k', random: () => 0.5 }, { ...boot, promised, base: at10, compacted: at10, commit: 10 });
    const slots = [];
    for (let s = 11; s <= ahead; s++) slots.push({ slot: s, ballot: promised, batch: [{ kind: 'app' as const, data: new TextEncoder().encode(`v${s}`) }], chosen: true });
    const b = new Replica({ id: 'b', cluster: 'k', random: () => 0.9 }, { ...boot, promised, base: at10, compacted: at10, commit: ahead, slots });
    const applied = { a: new Map<number, unknown>(), b: new Map<number, unknown>() };
    const drain = (r: Replica, m: Map<number, unknown>): Envelope[] => {
      const out: Envelope[] = [];
      for (let rd = r.ready(); rd !== null; rd = r.ready()) {
        for (const e of rd.commit) m.set(e.slot, e.batch);
        r.persisted(rd.persistSeq);
        out.push(...rd.send, ...rd.sendAfterPersist);
      }
      return out;
    };
    drain(b, applied.b);
    b.compact({ slot: ahead, index: ahead, epochs: b.configEpochs });
    drain(b, applied.b);
    let round = 0;
    for (let i = 0; i < 100 && round === 0; i++) {
      a.tick();
      for (const e of drain(a, applied.a)) if (e.msg.type === 'prevote') round = e.msg.round;
    }
    a.step({ cluster: 'k', from: 'c', to: 'a', msg: { type: 'prevote_reply', round, granted: true } });
    let toB = drain(a, applied.a).filter((e) => e.to === 'b');
    for (let i = 0; i < 10; i++) {
      for (const e of toB) b.step(e);
      for (const e of drain(b, applied.b)) if (e.to === 'a') a.step(e);
      toB = drain(a, applied.a).filter((e) => e.to === 'b');
    }
    assert.notEqual(a.currentRole, 'leader', `b (commit ${ahead}) and a do not make a quorum for slot 11`);
    for (const [slot, batch] of applied.a) assert.deepEqual(batch, applied.b.get(slot), `slot ${slot} differs`);
  }
});

test('a leader whose promises cannot speak for a slot under a configuration it recovered steps down, even with a voter of it down, and the cluster goes on (review of seed 4783)', () => {
  // {A,B,C} adds P at slot 1 (in effect from slot 4, alpha 3). C led and chose slots 1-5 with
  // P, then died; A accepted them; P knows them chosen. A is elected by A and B, recovers 1-3;
  // P's promise (commit 5) speaks for no slot up to 5, and C never promises.
  const enc = new TextEncoder();
  const OLD: Config = { voters: ['A', 'B', 'C'], learners: [] };
  const NEW: Config = { voters: ['A', 'B', 'C', 'P'], learners: [] };
  const b1 = { round: 1, leader: 'C' };
  const g = { slot: 0, index: 0, epochs: [{ fromSlot: 1, config: OLD }] };
  const batches: Record<number, Command[]> = { 1: [{ kind: 'config', change: { op: 'add_voter', node: 'P' } }], 2: [], 3: [], 4: [{ kind: 'app', data: enc.encode('x') }], 5: [{ kind: 'app', data: enc.encode('y') }] };
  const slots = (chosen: boolean) => [1, 2, 3, 4, 5].map((slot) => ({ slot, ballot: b1, batch: batches[slot]!, chosen }));
  const ahead = { slot: 5, index: 3, epochs: [{ fromSlot: 1, config: OLD }, { fromSlot: 4, config: NEW }] };
  const opts = (id: string, t: number) => ({ id, cluster: 'c', random: () => t, alpha: 3, electionTicks: 10, heartbeatTicks: 2 });
  const R = new Map<string, Replica>([
    ['A', new Replica(opts('A', 0), { promised: b1, slots: slots(false), base: g, compacted: g, commit: 0 })],
    ['B', new Replica(opts('B', 0.9), { promised: b1, slots: [], base: g, compacted: g, commit: 0 })],
    ['P', new Replica(opts('P', 0.5), { promised: b1, slots: slots(true), base: ahead, compacted: g, commit: 5 })],
  ]);
  const deliver = (): void => {
    for (let i = 0; i < 50; i++) {
      const out: Envelope[] = [];
      for (const r of R.values()) {
        for (let rd = r.ready(); rd !== null; rd = r.ready()) {
          out.push(...rd.send, ...rd.sendAfterPersist);
          r.persisted(rd.persistSeq);
        }
      }
      if (out.length === 0) return;
      for (const e of out) R.get(e.to)?.step(e);
    }
  };
  for (let t = 0; t < 200; t++) {
    for (const r of R.values()) r.tick();
    deliver();
  }
  const A = R.get('A')!;
  assert.ok(A.stats.leaderBehindPromiser >= 1, 'A gave up its term');
  const leader = [...R.values()].find((r) => r.currentRole === 'leader');
  assert.ok(leader !== undefined, 'someone leads');
  assert.ok(leader.commit.slot >= 5, `the leader committed past the recovered slots (at ${leader.commit.slot})`);
  assert.deepEqual(leader.propose({ kind: 'app', data: enc.encode('z') }), { ok: true });
  const before = leader.commit.slot;
  for (let t = 0; t < 20; t++) {
    for (const r of R.values()) r.tick();
    deliver();
  }
  assert.ok(leader.commit.slot > before, 'a new write commits');
});
