/**
 * Hand-written schedules against the pure core: each one the exact order of deliveries,
 * persists and steps that once broke agreement or linearizability (issue 10's bugs). The
 * simulator searches for schedules; these pin the ones found, so each stays fixed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Replica, bootstrapState, type Batch, type Entry, type Envelope, type Ready, type StoredSlot } from '../src/consensus/index.js';

const enc = new TextEncoder();
const text = (b: Batch): string => b.map((c) => (c.kind === 'app' ? new TextDecoder().decode(c.data) : `config:${c.change.op}`)).join(',');

/** A network of replicas in which the test decides every delivery and every fsync. */
class Net {
  readonly replicas = new Map<string, Replica>();
  /** Messages sent and not yet delivered or dropped. */
  inFlight: Envelope[] = [];
  /** Per replica: Ready batches whose persist is not yet durable, in order. */
  readonly unflushed = new Map<string, Ready[]>();
  /** Per replica: what it applied, by slot. */
  readonly applied = new Map<string, Map<number, string>>();
  /** Replicas whose writes become durable as soon as they are handed over. */
  readonly autoFlush = new Set<string>();

  /** `timeouts`: per replica, where in [0, 1) its election timeouts fall (0: the shortest). */
  constructor(ids: string[], timeouts: Record<string, number> = {}) {
    const config = { voters: ids, learners: [] };
    for (const id of ids) {
      const at = timeouts[id] ?? 0;
      this.replicas.set(id, new Replica({ id, cluster: 'c', random: () => at, electionTicks: 10, heartbeatTicks: 2 }, bootstrapState(config)));
      this.unflushed.set(id, []);
      this.applied.set(id, new Map());
      this.autoFlush.add(id);
    }
  }

  r(id: string): Replica {
    return this.replicas.get(id)!;
  }

  /** Drains `id`'s Ready batches: sends go in flight, persists wait (or flush at once). */
  pump(id: string): void {
    for (let ready = this.r(id).ready(); ready !== null; ready = this.r(id).ready()) {
      this.inFlight.push(...ready.send);
      for (const e of ready.commit) this.record(id, e);
      this.unflushed.get(id)!.push(ready);
      if (this.autoFlush.has(id)) this.flush(id);
    }
  }

  /** Makes `id`'s writes durable through its `count`-th waiting batch (all by default). */
  flush(id: string, count = Infinity): void {
    const list = this.unflushed.get(id)!;
    const done = list.splice(0, Math.min(count, list.length));
    if (done.length === 0) return;
    for (const ready of done) this.inFlight.push(...ready.sendAfterPersist);
    this.r(id).persisted(done.at(-1)!.persistSeq);
  }

  private record(id: string, e: Entry): void {
    const mine = this.applied.get(id)!;
    mine.set(e.slot, text(e.batch));
    for (const [other, theirs] of this.applied) {
      const v = theirs.get(e.slot);
      assert.ok(v === undefined || v === text(e.batch), `slot ${e.slot}: ${id} applies [${text(e.batch)}] but ${other} applied [${v}]`);
    }
  }

  /** Delivers (once each) the in-flight messages `pick` selects; drops those `drop` selects
   *  of the rest. Repeats until nothing selected is left. */
  run(pick: (e: Envelope) => boolean, drop: (e: Envelope) => boolean = () => false, rounds = 50): void {
    for (let i = 0; i < rounds; i++) {
      for (const id of this.replicas.keys()) this.pump(id);
      const now = this.inFlight;
      this.inFlight = [];
      let moved = false;
      for (const e of now) {
        if (pick(e)) {
          this.r(e.to).step(e);
          moved = true;
        } else if (!drop(e)) this.inFlight.push(e);
      }
      if (!moved) break;
    }
    for (const id of this.replicas.keys()) this.pump(id);
  }

  tick(ids: string[], n: number): void {
    for (let i = 0; i < n; i++) for (const id of ids) this.r(id).tick();
    for (const id of ids) this.pump(id);
  }

  /** Ticks `id` until it leads, talking only with `group` (others' messages stay in flight). */
  elect(id: string, group: string[]): void {
    const inGroup = (e: Envelope) => group.includes(e.from) && group.includes(e.to);
    for (let i = 0; i < 40 && this.r(id).currentRole !== 'leader'; i++) {
      this.r(id).tick();
      this.run(inGroup);
    }
    assert.equal(this.r(id).currentRole, 'leader', `${id} should lead`);
    this.run(inGroup);
  }
}

const between = (group: string[]) => (e: Envelope) => group.includes(e.from) && group.includes(e.to);

test('bug 1: the flush of an old ballot’s write is not credited to the same slot under a later ballot', () => {
  const all = ['a', 'b', 'c'];
  const net = new Net(all, { b: 0.99, c: 0.99 });
  net.elect('a', all);
  const round1 = net.r('a').currentBallot.round;
  // a proposes X; its own write of it stays unflushed, and no one else hears of it.
  net.autoFlush.delete('a');
  const slot = net.r('a').commit.slot + 1;
  assert.deepEqual(net.r('a').propose({ kind: 'app', data: enc.encode('X') }), { ok: true });
  net.pump('a');
  net.inFlight = [];
  // a hears from no one and steps down; b and c stop hearing from it (not long enough to
  // campaign themselves).
  for (let i = 0; i < 12; i++) {
    net.tick(all, 1);
    net.inFlight = [];
  }
  for (let i = 0; i < 20 && net.r('a').currentRole === 'leader'; i++) {
    net.tick(['a'], 1);
    net.inFlight = [];
  }
  assert.notEqual(net.r('a').currentRole, 'leader');
  // a campaigns again; b and c elect it under a later ballot. Its old batch stays unflushed.
  const election = (e: Envelope) => ['prevote', 'prevote_reply', 'prepare', 'promise'].includes(e.msg.type);
  for (let i = 0; i < 40 && net.r('a').currentRole !== 'leader'; i++) {
    net.r('a').tick();
    net.run(election);
  }
  if (net.r('a').currentRole !== 'leader') {
    // Prepares wait for the candidate's own promise to be durable (bug 7): a cannot lead
    // again before its old batch is flushed, so that flush cannot be credited to the new ballot.
    net.flush('a');
    net.run(between(all));
    assert.equal(net.r('a').currentRole, 'leader');
    return;
  }
  assert.ok(net.r('a').currentBallot.round > round1);
  // Only b acknowledges the new ballot's value at `slot`; a flushes just its old batch.
  const ab = between(['a', 'b']);
  const toC = (e: Envelope) => e.to === 'c' || e.from === 'c';
  net.run(ab, toC);
  net.flush('a', 1);
  net.run(ab, toC);
  assert.ok(
    net.r('a').commit.slot < slot,
    `slot ${slot} was committed on b's ack and the flush of a's write under round ${round1}, not of its write under round ${net.r('a').currentBallot.round}`,
  );
  net.flush('a');
  net.run(ab, toC);
  assert.ok(net.r('a').commit.slot >= slot, 'committed once its own write under the current ballot is durable');
});

for (const path of ['learnChosen', 'catchup'] as const) {
  test(`bug 2: a deposed leader that is told a chosen value by ${path} does not commit its own superseded value on a follower`, () => {
    const all = ['a', 'b', 'c', 'd', 'e'];
    const net = new Net(all, { b: 0.99, c: 0.5, d: 0.99, e: 0.99 });
    net.elect('a', all);
    const slot = net.r('a').commit.slot + 1;
    // a proposes X; only b accepts it (durably), and a never hears back.
    assert.deepEqual(net.r('a').propose({ kind: 'app', data: enc.encode('X') }), { ok: true });
    net.run((e) => e.from === 'a' && e.to === 'b' && e.msg.type === 'accept', (e) => e.from === 'a' || e.from === 'b');
    net.inFlight = [];
    // c, d and e lose a and b, elect c, and choose a no-op at that slot.
    const cde = ['c', 'd', 'e'];
    for (let i = 0; i < 15 && net.r('c').currentRole === 'follower'; i++) {
      net.tick(cde, 1);
      net.inFlight = net.inFlight.filter(between(cde));
    }
    net.elect('c', cde);
    assert.ok(net.r('c').commit.slot >= slot);
    assert.equal(net.applied.get('c')!.get(slot), '');
    // a, still leading under its old ballot as far as it knows, learns the chosen value.
    assert.equal(net.r('a').currentRole, 'leader');
    const chosen = [{ slot, batch: net.r('c').chosenAt(slot)! }];
    if (path === 'learnChosen') net.r('a').learnChosen(chosen);
    else net.r('a').step({ cluster: 'c', from: 'c', to: 'a', msg: { type: 'catchup', values: chosen, commit: slot, snapshot: null } } satisfies Envelope);
    // Whatever a tells b now must not make b apply X at that slot (Net asserts agreement).
    net.run(between(['a', 'b']));
    assert.notEqual(net.applied.get('b')!.get(slot), 'X');
    if (path === 'learnChosen') assert.notEqual(net.r('a').currentRole, 'leader', 'a chosen value other than its own tells the leader it was deposed');
    else assert.equal(net.r('a').stats.dropped.unsolicited_catchup, 1, 'a catch-up answer no one asked for is dropped');
    // Once b hears from c it learns the chosen value and agrees.
    net.elect('c', all);
    net.tick(all, 4);
    net.run(between(all));
    assert.equal(net.applied.get('b')!.get(slot), '');
  });
}

test('bug 7: prepares leave only after the candidate’s own promise is durable', () => {
  const all = ['a', 'b', 'c'];
  const net = new Net(all, { b: 0.99, c: 0.99 });
  net.autoFlush.delete('a');
  for (let i = 0; i < 40 && net.r('a').currentRole !== 'candidate'; i++) {
    net.r('a').tick();
    net.run((e) => e.msg.type === 'prevote' || e.msg.type === 'prevote_reply');
  }
  assert.equal(net.r('a').currentRole, 'candidate');
  const promiseWrite = net.unflushed.get('a')!.findIndex((r) => r.persist.some((op) => op.kind === 'promise'));
  assert.ok(promiseWrite >= 0, 'the candidate writes its promise');
  for (let i = 0; i < 10; i++) net.tick(['a'], 1);
  assert.deepEqual(net.inFlight.filter((e) => e.msg.type === 'prepare'), [], 'no prepare leaves while the promise is not durable');
  net.flush('a', promiseWrite + 1);
  assert.ok(net.inFlight.some((e) => e.msg.type === 'prepare'), 'prepares leave once it is');
  net.autoFlush.add('a');
  net.run(between(all));
  assert.equal(net.r('a').currentRole, 'leader');
});

test('bug 3: a read reply counts only from the leader the read was asked of', () => {
  const all = ['a', 'b', 'c'];
  const net = new Net(all, { b: 0.99, c: 0.99 });
  net.elect('a', all);
  net.r('b').read(7);
  net.pump('b');
  assert.ok(net.inFlight.some((e) => e.from === 'b' && e.to === 'a' && e.msg.type === 'read_req'));
  // c answers id 7 (as a reply meant for another read of that id would): not taken.
  net.r('b').step({ cluster: 'c', from: 'c', to: 'b', msg: { type: 'read_reply', id: 7, index: 0 } } satisfies Envelope);
  assert.equal(net.r('b').ready()?.reads.length ?? 0, 0);
  assert.equal(net.r('b').stats.dropped.unmatched_read_reply, 1);
  net.r('b').step({ cluster: 'c', from: 'a', to: 'b', msg: { type: 'read_reply', id: 7, index: 1 } } satisfies Envelope);
  assert.deepEqual(net.r('b').ready()?.reads, [{ id: 7, index: 1 }]);
});

test('a removed replica that alone heard its removal commit does not refuse the pre-vote of the voter it left behind (found by review)', () => {
  // {a, b}: slot 10 removes a (in force from slot 12, alpha 2), slot 11 is a no-op. a heard
  // both commit, b did not (the commit notice was lost). a, no voter of its own configuration
  // any more, never campaigns; b, behind a, must still win a's pre-vote, then catch up from it.
  const config = { voters: ['a', 'b'], learners: [] };
  const boot = bootstrapState(config);
  const ballot = { round: 1, leader: 'a' };
  const slots: StoredSlot[] = [];
  for (let slot = 1; slot <= 9; slot++) slots.push({ slot, ballot, batch: [{ kind: 'app' as const, data: enc.encode(`x${slot}`) }], chosen: true });
  slots.push({ slot: 10, ballot, batch: [{ kind: 'config' as const, change: { op: 'remove' as const, node: 'a' } }], chosen: false });
  slots.push({ slot: 11, ballot, batch: [], chosen: false });
  const at = (id: string, commit: number): Replica =>
    new Replica({ id, cluster: 'c', random: () => 0.5, alpha: 2 }, { ...boot, promised: ballot, slots: slots.map((s) => (s.slot <= commit ? { ...s, chosen: true } : s)), commit });
  const replicas = new Map([
    ['a', at('a', 11)],
    ['b', at('b', 9)],
  ]);
  assert.deepEqual(replicas.get('a')!.config.voters, ['b']);
  assert.deepEqual(replicas.get('b')!.config.voters, ['a', 'b']);
  for (let t = 0; t < 200 && replicas.get('b')!.currentRole !== 'leader'; t++) {
    for (const r of replicas.values()) r.tick();
    for (let round = 0; round < 5; round++) {
      const out: Envelope[] = [];
      for (const r of replicas.values()) {
        for (let ready = r.ready(); ready !== null; ready = r.ready()) {
          out.push(...ready.send, ...ready.sendAfterPersist);
          r.persisted(ready.persistSeq);
        }
      }
      for (const e of out) replicas.get(e.to)?.step(e);
    }
  }
  assert.equal(replicas.get('b')!.currentRole, 'leader');
  assert.ok(replicas.get('b')!.commit.slot >= 11);
});

test('a leader that knew slots past a gap as chosen before it led keeps its next slot past its commit slot (seed 3075: the core threw)', () => {
  // a accepted slots 4 (adding learner d, in force from slot 5 with alpha 1) and 5 under an
  // earlier leader's ballot and heard them committed, but missed slots 2 and 3. It then
  // leads: it fills them, and when its own write of slot 3 is durable its commit jumps to 5,
  // past the next slot it would propose (4), before the next tick.
  const config = { voters: ['a', 'b', 'c'], learners: [] };
  const boot = bootstrapState(config);
  const old = { round: 1, leader: 'c' };
  const slots: StoredSlot[] = [
    { slot: 1, ballot: old, batch: [{ kind: 'app', data: enc.encode('x') }], chosen: true },
    { slot: 4, ballot: old, batch: [{ kind: 'config', change: { op: 'add_learner', node: 'd' } }], chosen: true },
    { slot: 5, ballot: old, batch: [], chosen: true },
  ];
  const replicas = new Map([
    ['a', new Replica({ id: 'a', cluster: 'c', random: () => 0, alpha: 1 }, { ...boot, promised: old, slots, commit: 1 })],
    ['b', new Replica({ id: 'b', cluster: 'c', random: () => 0.99, alpha: 1 }, { ...boot, promised: old })],
    ['c', new Replica({ id: 'c', cluster: 'c', random: () => 0.99, alpha: 1 }, { ...boot, promised: old })],
  ]);
  const a = replicas.get('a')!;
  // a's own writes become durable only after its peers' answers are in, right before the
  // next tick, and c hears no accepts: a's flush is what completes slot 3 (as in the seed).
  let aSeq = 0;
  for (let t = 0; t < 60; t++) {
    for (let round = 0; round < 5; round++) {
      const out: Envelope[] = [];
      for (const [id, r] of replicas) {
        for (let ready = r.ready(); ready !== null; ready = r.ready()) {
          out.push(...ready.send, ...ready.sendAfterPersist);
          if (id === 'a') aSeq = ready.persistSeq;
          else r.persisted(ready.persistSeq);
        }
      }
      // c hears no accepts: slot 2 needs a's own write.
      for (const e of out) if (!(e.to === 'c' && e.msg.type === 'accept')) replicas.get(e.to)?.step(e);
    }
    a.persisted(aSeq);
    for (const r of replicas.values()) r.tick();
  }
  assert.equal(a.currentRole, 'leader');
  assert.ok(a.commit.slot >= 5, `commit ${a.commit.slot}`);
});

test('leader transfer: the leader stops taking proposals, commits what it has, and the voter it names leads next despite the lease', () => {
  const all = ['a', 'b', 'c'];
  const net = new Net(all, { b: 0.99, c: 0.99 });
  net.elect('a', all);
  assert.deepEqual(net.r('a').propose({ kind: 'app', data: enc.encode('before') }), { ok: true });
  assert.deepEqual(net.r('a').transferLeadership('a'), { ok: false, reason: 'this node leads already' });
  assert.deepEqual(net.r('a').transferLeadership('zed'), { ok: false, reason: 'zed is not a voter' });
  assert.deepEqual(net.r('b').transferLeadership('c'), { ok: false, reason: 'this node does not lead' });
  assert.deepEqual(net.r('a').transferLeadership('b'), { ok: true });
  assert.deepEqual(net.r('a').propose({ kind: 'app', data: enc.encode('during') }), { ok: false, reason: 'transferring' });
  // Everything is delivered at once: no election timeout passes, every lease still holds.
  net.run(between(all));
  assert.equal(net.r('b').currentRole, 'leader');
  assert.notEqual(net.r('a').currentRole, 'leader');
  assert.ok([...net.applied.get('b')!.values()].includes('before'), 'what the old leader had queued committed first');
  assert.deepEqual(net.r('b').propose({ kind: 'app', data: enc.encode('after') }), { ok: true });
  net.run(between(all));
  for (const id of all) assert.ok([...net.applied.get(id)!.values()].includes('after'), `${id} applied the new leader's write`);
});

test('leader transfer: a target that never campaigns leaves the leader leading again after an election timeout', () => {
  const all = ['a', 'b', 'c'];
  const net = new Net(all, { b: 0.99, c: 0.99 });
  net.elect('a', all);
  assert.deepEqual(net.r('a').transferLeadership('b'), { ok: true });
  // b never hears the hand-over.
  const lost = (e: Envelope): boolean => e.msg.type === 'timeout_now';
  const rest = (e: Envelope): boolean => between(all)(e) && !lost(e);
  net.run(rest, lost);
  assert.equal(net.r('a').currentRole, 'leader');
  for (let i = 0; i < 12; i++) {
    net.r('a').tick();
    net.run(rest, lost);
  }
  assert.equal(net.r('a').currentRole, 'leader');
  assert.equal(net.r('a').transferringTo, null);
  assert.deepEqual(net.r('a').propose({ kind: 'app', data: enc.encode('again') }), { ok: true });
});

test('a removed voter departs only once every voter left knows every slot before the new configuration (seed 34223: a new voter down meanwhile found too few of its old configuration to vouch)', () => {
  const all = ['a', 'b', 'c', 'd'];
  const net = new Net(all, { b: 0.99, c: 0.99, d: 0.99 });
  net.elect('a', all);
  assert.deepEqual(net.r('a').propose({ kind: 'config', change: { op: 'remove', node: 'd' } }), { ok: true });
  // c hears nothing for now: a and b confirm, a quorum of {a,b,c}, and d stays (c would find
  // only a and b of {a,b,c,d} to vouch for what it missed once the leader compacts it).
  const withoutC = between(['a', 'b', 'd']);
  net.run(withoutC, (e) => e.to === 'c' || e.from === 'c');
  assert.equal(net.r('d').departed, null, 'd may not leave before asking');
  for (let i = 0; i < 12; i++) {
    net.tick(['a', 'b', 'd'], 1);
    net.run(withoutC, (e) => e.to === 'c' || e.from === 'c');
  }
  const fromSlot = net.r('a').latestEpoch.fromSlot;
  assert.ok(net.r('a').commit.slot >= fromSlot - 1 && net.r('b').commit.slot >= fromSlot - 1, 'a and b know every slot before the new configuration');
  assert.equal(net.r('d').departed, null, 'with c behind, d stays');
  // c comes back and catches up: d may go.
  for (let i = 0; i < 12 && net.r('d').departed === null; i++) {
    net.tick(all, 1);
    net.run(between(all));
  }
  assert.deepEqual(net.r('d').departed, { fromSlot });
  assert.ok(net.r('c').commit.slot >= fromSlot - 1);
});

test('a removed member that hears from a voter that it is a member again does not leave (review: added back before it left)', () => {
  const r = new Replica({ id: 'd', cluster: 'c', random: () => 0.5, electionTicks: 10, heartbeatTicks: 2 }, bootstrapState({ voters: ['a', 'b', 'c', 'd'], learners: [] }));
  // d's state: its removal applied at slot 1 (alpha 32: the new configuration governs from 33).
  const removed = { slot: 1, ballot: { round: 1, leader: 'a' }, batch: [{ kind: 'config' as const, change: { op: 'remove' as const, node: 'd' } }], chosen: true };
  r.step({ cluster: 'c', from: 'a', to: 'd', msg: { type: 'accept', ballot: removed.ballot, commit: 0, values: [{ slot: 1, batch: removed.batch }] } } satisfies Envelope);
  r.step({ cluster: 'c', from: 'a', to: 'd', msg: { type: 'commit', ballot: removed.ballot, commit: 1 } } satisfies Envelope);
  r.persisted(r.ready()!.persistSeq);
  assert.deepEqual(r.latestConfig.voters, ['a', 'b', 'c']);
  for (const from of ['a', 'b', 'c']) r.step({ cluster: 'c', from, to: 'd', msg: { type: 'commit_reply', commit: 40, member: true, fromSlot: 33 } } satisfies Envelope);
  assert.equal(r.departed, null, 'voters that name it a member again keep it');
  for (const from of ['a', 'b']) r.step({ cluster: 'c', from, to: 'd', msg: { type: 'commit_reply', commit: 60, member: false, fromSlot: 50 } } satisfies Envelope);
  assert.equal(r.departed, null, 'answers about a later configuration than the one it leaves for do not count (it catches up first)');
  for (const from of ['a', 'b']) r.step({ cluster: 'c', from, to: 'd', msg: { type: 'commit_reply', commit: 40, member: false, fromSlot: 33 } } satisfies Envelope);
  assert.equal(r.departed, null, 'every voter left must know the slots before its configuration');
  r.step({ cluster: 'c', from: 'c', to: 'd', msg: { type: 'commit_reply', commit: 40, member: false, fromSlot: 33 } } satisfies Envelope);
  assert.deepEqual(r.departed, { fromSlot: 33 });
});
