import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bootstrapState } from '../src/consensus/index.js';
import { Driver, READS_WAITING_MAX, type DriverClock } from '../src/driver.js';
import { ControlledLog, MemoryLogStore } from '../src/log/memory.js';
import type { WireEnvelope } from '../src/net/transport.js';
import { openMemoryEnv } from '../src/storage/memory-env.js';
import { LmdbStateStore } from '../src/state/kv.js';
import { encodeAppCommand, type ApplyResult, type KvOp, type RequestId } from '../src/state/command.js';

const srcDir = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'src');

test('the driver reads no wall clock and does no I/O of its own', () => {
  const code = readFileSync(join(srcDir, 'driver.ts'), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
  for (const m of code.matchAll(/from\s+'([^']+)'/g)) assert.ok(m[1]!.startsWith('./'), `driver.ts imports ${m[1]}`);
  for (const banned of [/\bDate\b/, /Math\.random/, /\bsetTimeout\b/, /\bsetImmediate\b/, /\bsetInterval\b/, /\bprocess\b/, /\bperformance\b/]) {
    assert.doesNotMatch(code, banned, `driver.ts uses ${banned}`);
  }
});

/** One driver over in-memory twins, with a hand-cranked clock. */
function oneNode(random: () => number, voters: readonly string[] = ['a', 'b', 'c']) {
  const queue: (() => void)[] = [];
  let now = 0;
  // Timers run only when a test calls `fire` (the older tests never do).
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const clock: DriverClock = {
    now: () => now,
    soon: (fn) => queue.push(fn),
    after: (ms, fn) => {
      const t = { at: now + ms, fn, cancelled: false };
      timers.push(t);
      return () => {
        t.cancelled = true;
      };
    },
  };
  const env = openMemoryEnv();
  const state = new LmdbStateStore(env);
  state.bootstrap(bootstrapState({ voters: [...voters], learners: [] }).base);
  const sent: WireEnvelope[] = [];
  let deliver: (raw: unknown) => void = () => undefined;
  const log = new ControlledLog(new MemoryLogStore(), () => undefined);
  const driver = new Driver({
    clusterId: 'c',
    peerId: 'a',
    log: { load: () => log.load(), write: (ops, done) => log.write(ops, done), committed: (done) => done() },
    state,
    net: {
      send: (e) => sent.push(...e),
      onMessage: (h) => {
        deliver = h;
      },
    },
    clock,
    random,
    timing: { tickMs: 10, electionTicks: 10, heartbeatTicks: 2, proposalTimeoutMs: 1000 },
  });
  const run = () => {
    while (queue.length > 0) queue.shift()!();
    now++;
  };
  /** Runs what the driver queued, without moving the clock. */
  const drain = () => {
    while (queue.length > 0) queue.shift()!();
  };
  const advance = (ms: number) => {
    now += ms;
  };
  /** Runs the timers due by now (those they set again wait for the next call). */
  const fire = () => {
    for (const t of timers.splice(0)) {
      if (t.cancelled) continue;
      if (t.at <= now) t.fn();
      else timers.push(t);
    }
    while (queue.length > 0) queue.shift()!();
  };
  return { driver, sent, run, drain, advance, fire, state, log, now: () => now, deliver: (raw: unknown) => deliver(raw) };
}

/** One node that is the only voter, elected: its readings move log time (logNow). */
function elected() {
  const n = oneNode(() => 0.5, ['a']);
  n.driver.start();
  for (let i = 0; i < 100 && n.driver.replica.currentRole !== 'leader'; i++) {
    n.advance(10);
    n.fire();
    n.log.flush();
    n.run();
  }
  assert.equal(n.driver.replica.currentRole, 'leader');
  return n;
}

test('read ids differ across processes (bug 3): a reply meant for the previous process cannot match', () => {
  const ids = (random: () => number): number[] => {
    const n = oneNode(random);
    // A follower that knows a leader asks it: make one known by a heartbeat.
    n.driver.replica.step({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'heartbeat', ballot: { round: 1, leader: 'b' }, commit: 0, seq: 1 } });
    for (let i = 0; i < 3; i++) n.driver.read(() => undefined);
    n.run();
    return n.sent.flatMap((e) => (e.msg.type === 'read_req' ? [(e.msg as { id: number }).id] : []));
  };
  const first = ids(() => 0.25);
  const second = ids(() => 0.75);
  assert.equal(first.length, 3);
  assert.equal(second.length, 3);
  assert.ok(first.every((id) => !second.includes(id)), `ids ${first} and ${second} overlap`);
  assert.ok(first.every((id) => id > 1000), 'ids do not start at 0');
});

test('linearizable reads waiting are bounded: past READS_WAITING_MAX one is refused at once', () => {
  const n = oneNode(() => 0.5);
  n.driver.replica.step({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'heartbeat', ballot: { round: 1, leader: 'b' }, commit: 0, seq: 1 } });
  const refused: string[] = [];
  for (let i = 0; i <= READS_WAITING_MAX; i++) n.driver.read((o) => (o.ok ? undefined : refused.push(o.refusal.kind)));
  assert.deepEqual(refused, ['unavailable']);
  assert.equal(n.driver.readsWaiting, READS_WAITING_MAX);
  assert.equal(n.driver.counters.readsRefused, 1);
});

test('a burst after a quiet spell does not expire the session of a client still retrying (log time never runs ahead of real time)', () => {
  const n = elected();
  const enc = new TextEncoder();
  let { slot, index } = n.state.applied().point;
  /** Applies one slot of commands stamped as the node's proposer stamps them. */
  const apply = (ops: { op: KvOp; requestId?: RequestId }[]): ApplyResult[] => {
    const batch = ops.map(({ op, requestId }, i) => ({
      kind: 'app' as const,
      data: encodeAppCommand({ op, time: n.driver.logNow(), proposal: `a:${index + i}`, ...(requestId ? { requestId } : {}) }),
    }));
    const entry = { slot: ++slot, index: index + 1, batch, epochs: n.state.applied().point.epochs };
    index += batch.length;
    return n.state.apply([entry]);
  };
  const put = (key: string): { op: KvOp } => ({ op: { t: 'put', key: enc.encode(key), value: enc.encode('v') } });
  // Three quiet hours: a write every 108 s.
  for (let i = 0; i < 100; i++) {
    n.advance(108_000);
    apply([put(`quiet/${i}`)]);
  }
  // A client's conditional put applies; its answer is lost.
  const rid: RequestId = { client: 'c', seq: 7, digest: enc.encode('d') };
  const first = apply([{ op: { t: 'put', key: enc.encode('k'), value: enc.encode('1'), ifAbsent: true }, requestId: rid }])[0]!;
  assert.equal(first.kind, 'put');
  // Within half a second, a burst of 4,000 writes from other clients.
  for (let s = 0; s < 8; s++) {
    n.advance(60);
    apply(Array.from({ length: 500 }, (_, i) => put(`burst/${s}/${i}`)));
  }
  // A second after its first try, the client retries: the first answer, not a second apply.
  n.advance(1000);
  const again = apply([{ op: { t: 'put', key: enc.encode('k'), value: enc.encode('1'), ifAbsent: true }, requestId: rid }])[0]!;
  assert.deepEqual(again, first);
});

test('log time keeps pace with real time when the leader\'s commits are slow, and never runs ahead of it', () => {
  const n = elected();
  const enc = new TextEncoder();
  const start = n.state.logTime();
  const t0 = n.now();
  // A write proposed every 10 ms; the log makes each batch durable 250 ms after it was
  // handed over (a slow disk), so each commits and applies 250 ms after its proposal. The
  // driver stamps each (proposeHere) and applies it (its real path).
  const handed: number[] = [];
  let seq = 0;
  while (n.now() - t0 < 60_000) {
    const data = encodeAppCommand({ op: { t: 'put', key: enc.encode('k'), value: enc.encode('v') }, time: 0, proposal: `a:${++seq}` });
    n.driver.propose({ kind: 'app', data }, () => undefined);
    n.drain();
    while (handed.length < n.log.unflushed) handed.push(n.now());
    let due = 0;
    while (due < handed.length && handed[due]! <= n.now() - 250) due++;
    if (due > 0) {
      n.log.flush(due);
      handed.splice(0, due);
      n.drain();
      assert.ok(n.state.logTime() - start <= n.now() - t0, `log time ${n.state.logTime() - start} ms in, after ${n.now() - t0} ms of real time`);
    }
    n.advance(10);
  }
  const moved = n.state.logTime() - start;
  assert.ok(moved >= 0.98 * (60_000 - 250), `log time moved ${moved} ms in 60 s of 250 ms commits (a lease would outlive its TTL)`);
});

test('a follower hands a client write to its leader on the consensus link and answers with the leader\'s reply; other replies, strangers and duplicates get nothing', () => {
  const n = oneNode(() => 0.5);
  // a follows b (a heartbeat of b's ballot).
  n.driver.replica.step({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'heartbeat', ballot: { round: 1, leader: 'b' }, commit: 0, seq: 1 } });
  n.run();
  const outcomes: unknown[] = [];
  const cmd = { kind: 'app' as const, data: new Uint8Array([1, 2, 3]) };
  n.driver.propose(cmd, (o) => outcomes.push(o));
  const fwd = n.sent.find((e) => e.msg.type === 'fwd');
  assert.ok(fwd !== undefined && fwd.to === 'b', 'sent to the leader');
  const id = (fwd.msg as { id: number }).id;
  assert.deepEqual((fwd.msg as unknown as { cmd: unknown }).cmd, cmd);
  assert.deepEqual((fwd.msg as unknown as { ballot: unknown }).ballot, { round: 1, leader: 'b' }, 'for the leader\'s term it knows');
  assert.equal(n.driver.pendingWrites, 1);
  const reply = (from: string, replyId: number) => ({ cluster: 'c', from, to: 'a', msg: { type: 'fwd_reply', id: replyId, outcome: { ok: true, result: { kind: 'put', index: 7, revision: 7 } } } });
  n.deliver(reply('c', id)); // not the node it went to
  n.deliver(reply('b', id + 1)); // no write waits for it
  n.deliver({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'fwd_reply', id, outcome: { ok: true, result: 'x' } } }); // malformed
  assert.equal(outcomes.length, 0);
  assert.equal(n.driver.counters.forwardsDropped, 3);
  n.deliver(reply('b', id));
  assert.deepEqual(outcomes, [{ ok: true, result: { kind: 'put', index: 7, revision: 7 } }]);
  assert.equal(n.driver.pendingWrites, 0);

  // As the receiver: a stranger is refused; a member's write on a node that does not lead is
  // answered not_leader (never forwarded again), unless it names a term of this node's own,
  // which may have taken it (an earlier process): outcome_unknown; the same frame twice is
  // answered once.
  n.sent.length = 0;
  n.deliver({ cluster: 'c', from: 'zed', to: 'a', msg: { type: 'fwd', id: 5, ballot: { round: 1, leader: 'b' }, cmd } });
  // Even a non-member's late copy naming a term of a's own is outcome_unknown: a's earlier
  // process may have proposed it while zed was a member (review of aa5dc9b).
  n.deliver({ cluster: 'c', from: 'zed', to: 'a', msg: { type: 'fwd', id: 6, ballot: { round: 1, leader: 'a' }, cmd } });
  n.deliver({ cluster: 'c', from: 'c', to: 'a', msg: { type: 'fwd', id: 9, ballot: { round: 1, leader: 'b' }, cmd } });
  n.deliver({ cluster: 'c', from: 'c', to: 'a', msg: { type: 'fwd', id: 9, ballot: { round: 1, leader: 'b' }, cmd } });
  n.deliver({ cluster: 'c', from: 'c', to: 'a', msg: { type: 'fwd', id: 10, ballot: { round: 1, leader: 'a' }, cmd } });
  const replies = n.sent.filter((e) => e.msg.type === 'fwd_reply').map((e) => ({ to: e.to, outcome: (e.msg as unknown as { outcome: { ok: boolean; refusal?: { kind: string } } }).outcome }));
  assert.deepEqual(replies.map((r) => [r.to, r.outcome.refusal?.kind]), [['zed', 'unavailable'], ['zed', 'outcome_unknown'], ['c', 'not_leader'], ['c', 'outcome_unknown']]);
  assert.equal(n.sent.filter((e) => e.msg.type === 'fwd').length, 0, 'a forwarded write is never forwarded again');
});

test('a forward whose leader lost its lead is answered outcome_unknown at the next tick', () => {
  const n = oneNode(() => 0.5);
  n.driver.replica.step({ cluster: 'c', from: 'b', to: 'a', msg: { type: 'heartbeat', ballot: { round: 1, leader: 'b' }, commit: 0, seq: 1 } });
  n.run();
  const outcomes: { ok: boolean; refusal?: { kind: string } }[] = [];
  n.driver.propose({ kind: 'app', data: new Uint8Array([1]) }, (o) => outcomes.push(o as never));
  n.driver.start();
  // c leads now, as a heartbeat of a later ballot says.
  n.driver.replica.step({ cluster: 'c', from: 'c', to: 'a', msg: { type: 'heartbeat', ballot: { round: 2, leader: 'c' }, commit: 0, seq: 1 } });
  n.run();
  assert.equal(outcomes.length, 0, 'not before the tick');
  n.advance(10);
  n.fire();
  assert.equal(outcomes.length, 1);
  assert.equal(outcomes[0]!.refusal?.kind, 'outcome_unknown');
  assert.match((outcomes[0] as unknown as { refusal: { message: string } }).refusal.message, /lost its lead/);
});
