/**
 * Blocks against a model (issue 15): 10,000 random actions (one-shot commits, pends, commits
 * and cancels of pends, stale reads, failing ops, time passing) applied by three state
 * machines on real LMDB files, fed the same entries as consensus would feed them. Every
 * answer equals the model's, the three answer alike, their hash chains and snapshots are
 * byte-equal, and each answers `?at=` reads from its own history floor (each prunes at other
 * times) as the model recorded the blocks then.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import canonicalize from 'canonicalize';
import { LEASE_GRACE_MS, LOG_TIME_STEP_MS, type ApplyResult, type BlockCmd } from '../../src/state/command.js';
import type { Command } from '../../src/consensus/index.js';
import { BlockError, applyTransform, decodeBody, parseTransform, touchedBlocks, type Body } from '../../src/state/blocks.js';
import { Harness } from './harness.js';

const IDS = ['a', 'b', 'c', 'd', 'e', 'f'];
// 5,000 in npm test (its time budget); a campaign sets more, e.g. BLOCKS_MODEL_ACTIONS=100000
// BLOCKS_MODEL_SEED=16 node --test dist/test/state/blocks-model.test.js.
const ACTIONS = Number(process.env.BLOCKS_MODEL_ACTIONS ?? 5_000);

type Block = { revision: number; body: Body | null };
type Pending = { blocks: string[]; reads: { id: string; revision: number }[]; transform: string; expiresAt: number };

/** The contract's rules, written plainly. */
class Model {
  blocks = new Map<string, Block>();
  history = new Map<string, Block[]>(IDS.map((id) => [id, []]));
  pending = new Map<string, Pending>();
  committed = new Map<string, number>();
  logTime = 0;

  cur(id: string): Block {
    return this.blocks.get(id) ?? { revision: 0, body: null };
  }

  holder(id: string): string | undefined {
    for (const [a, p] of this.pending) if (p.blocks.includes(id)) return a;
    return undefined;
  }

  apply(op: BlockCmd, time: number, index: number): ApplyResult {
    this.logTime = time > this.logTime ? Math.min(time, this.logTime + LOG_TIME_STEP_MS) : this.logTime;
    for (const [a, p] of [...this.pending]) if (p.expiresAt <= this.logTime) this.pending.delete(a);
    if (op.t === 'block_cancel') {
      if (!this.pending.delete(op.actionId)) return { kind: 'action_not_found', index, actionId: op.actionId };
      return { kind: 'block_cancelled', index, cancelled: true };
    }
    if (op.t === 'block_commit' && op.transform === undefined) {
      const p = this.pending.get(op.actionId);
      if (p === undefined) return { kind: 'action_not_found', index, actionId: op.actionId };
      this.pending.delete(op.actionId);
      return this.commit(op.actionId, p.transform, index);
    }
    if (this.committed.has(op.actionId)) return { kind: 'action_reused', index, actionId: op.actionId, committed: this.committed.get(op.actionId)! };
    const mine = this.pending.get(op.actionId);
    if (mine !== undefined) return { kind: 'block_pending', index, pending: mine.blocks.map((id) => ({ id, actionId: op.actionId, expiresAt: mine.expiresAt })) };
    const t = parseTransform(JSON.parse(op.transform!));
    const reads = op.reads!;
    const blocks = [...new Set([...reads.map((r) => r.id), ...touchedBlocks(t)])].sort();
    const held = blocks.filter((id) => this.holder(id) !== undefined);
    if (held.length > 0) return { kind: 'block_pending', index, pending: held.map((id) => ({ id, actionId: this.holder(id)!, expiresAt: this.pending.get(this.holder(id)!)!.expiresAt })) };
    const conflicts = reads.filter((r) => this.cur(r.id).revision !== r.revision).map((r) => ({ id: r.id, expected: r.revision, current: this.cur(r.id).revision }));
    if (conflicts.length > 0) return { kind: 'block_conflict', index, conflicts };
    const judged = this.judge(t, index);
    if (judged !== null) return judged;
    if (op.t === 'block_commit') return this.commit(op.actionId, op.transform!, index);
    const expiresAt = this.logTime + op.ttlMs + LEASE_GRACE_MS;
    this.pending.set(op.actionId, { blocks, reads: [...reads], transform: op.transform, expiresAt });
    return { kind: 'block_pended', index, actionId: op.actionId, expiresAt };
  }

  private judge(t: ReturnType<typeof parseTransform>, index: number): ApplyResult | null {
    try {
      applyTransform((id) => this.cur(id).body ?? undefined, t);
      return null;
    } catch (e) {
      if (e instanceof BlockError) return { kind: 'invalid_operation', index, message: e.message };
      throw e;
    }
  }

  private commit(actionId: string, transform: string, index: number): ApplyResult {
    const t = parseTransform(JSON.parse(transform));
    const refused = this.judge(t, index);
    if (refused !== null) return refused;
    const out = applyTransform((id) => this.cur(id).body ?? undefined, t);
    const revisions: Record<string, number> = {};
    for (const [id, bytes] of out) {
      const b = { revision: index, body: bytes === null ? null : decodeBody(bytes) };
      this.blocks.set(id, b);
      this.history.get(id)!.push(b);
      revisions[id] = index;
    }
    this.committed.set(actionId, index);
    return { kind: 'block_committed', index, revisions };
  }

  at(id: string, index: number): Block {
    return [...this.history.get(id)!].reverse().find((b) => b.revision <= index) ?? { revision: 0, body: null };
  }
}

const tf = (t: unknown): string => canonicalize(t) as string;

test(`${ACTIONS} random block actions (seed BLOCKS_MODEL_SEED, default 15) on three state machines equal a model`, async () => {
  const nodes = [new Harness(), new Harness(), new Harness()];
  for (const h of nodes) assert.equal(h.one({ t: 'cluster_level', level: 2, members: ['a'] }).kind, 'level');
  const model = new Model();
  model.logTime = nodes[0]!.state.logTime();
  // A plain seeded generator (mulberry32): fast-check's streams lean to edge values.
  let seed = Number(process.env.BLOCKS_MODEL_SEED ?? 15) >>> 0;
  const rand = (): number => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let x = seed;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
  let time = 1_000_000;
  let seq = 0;
  const floors = [0, 0, 0];
  const counts: Record<string, number> = {};

  const randomTransform = (ids: string[]): unknown => {
    const t: { inserts?: Record<string, unknown>; updates?: Record<string, unknown[]>; deletes?: string[] } = {};
    for (const id of ids) {
      const body = model.cur(id).body;
      if (body === null || rand() < 0.05) (t.inserts ??= {})[id] = { n: int(0, 9), list: [] };
      else if (rand() < 0.12) (t.deletes ??= []).push(id);
      else {
        const len = (body.list as unknown[] | undefined)?.length ?? 0;
        const op = rand() < 0.5
          ? { op: 'set', field: pick(['n', 'm', 'list']), value: rand() < 0.8 ? int(0, 99) : { deep: [int(0, 9)] } }
          // Sometimes past the end (refused whole, 422).
          : { op: 'splice', field: 'list', index: int(0, len + (rand() < 0.1 ? 2 : 0)), deleteCount: int(0, 1), insert: [int(0, 9)] };
        (t.updates ??= {})[id] = [op];
      }
    }
    return t;
  };

  for (let i = 0; i < ACTIONS; i++) {
    if (rand() < 0.3) time += int(0, 2500);
    const batch: BlockCmd[] = [];
    for (let k = rand() < 0.2 ? int(2, 4) : 1; k > 0; k--) {
      const roll = rand();
      const ids = [...new Set(Array.from({ length: int(1, 3) }, () => pick(IDS)))];
      const transform = randomTransform(ids);
      const parsed = parseTransform(transform);
      // Reads: every block touched must be read; sometimes one more, sometimes stale.
      const readIds = [...new Set([...touchedBlocks(parsed).filter((id) => !Object.hasOwn(parsed.inserts, id) || model.cur(id).revision > 0), ...(rand() < 0.3 ? [pick(IDS)] : [])])];
      const reads = readIds.map((id) => ({ id, revision: rand() < 0.1 ? Math.max(0, model.cur(id).revision - int(1, 50)) : model.cur(id).revision }));
      const pendingIds = [...model.pending.keys()];
      if (roll < 0.45) batch.push({ t: 'block_commit', actionId: `x${seq++}`, reads, transform: tf(transform) });
      else if (roll < 0.7) batch.push({ t: 'block_pend', actionId: `x${seq++}`, reads, transform: tf(transform), ttlMs: int(1, 5) * 1000 });
      else if (roll < 0.85) batch.push({ t: 'block_commit', actionId: pendingIds.length > 0 && rand() < 0.9 ? pick(pendingIds) : `x${int(0, seq)}` });
      else if (roll < 0.95) batch.push({ t: 'block_cancel', actionId: pendingIds.length > 0 && rand() < 0.8 ? pick(pendingIds) : `x${int(0, seq)}` });
      else batch.push({ t: 'block_commit', actionId: `x${int(0, Math.max(0, seq - 1))}`, reads, transform: tf(transform) }); // perhaps reused
    }
    const commands: Command[] = batch.map((op) => nodes[0]!.cmd(op, undefined, time));
    const results = nodes.map((h) => h.state.apply([h.entry(commands)]));
    const first = nodes[0]!.state.applied().point.index - batch.length + 1;
    const expected = batch.map((op, j) => model.apply(op, time, first + j));
    for (const res of results) assert.deepEqual(res.map(comparable), expected.map(comparable), `action ${i}: ${JSON.stringify(batch)}`);
    for (const e of expected) counts[e.kind] = (counts[e.kind] ?? 0) + 1;

    // Each node prunes its history at its own times.
    nodes.forEach((h, n) => {
      if (rand() < 0.004) {
        const applied = h.state.applied().point.index;
        floors[n] = int(floors[n]!, applied);
        h.state.pruneChain(floors[n]! + 1);
      }
    });
    if (i % 500 === 499 || i === ACTIONS - 1) {
      const chains = nodes.map((h) => Buffer.from(h.state.applied().chain).toString('hex'));
      assert.equal(new Set(chains).size, 1, `chains differ after action ${i}`);
      const digests = await Promise.all(nodes.map(async (h) => {
        const hash = createHash('sha256');
        for await (const f of h.state.snapshot()) hash.update(f);
        return hash.digest('hex');
      }));
      assert.equal(new Set(digests).size, 1, `snapshots differ after action ${i}`);
      const applied = nodes[0]!.state.applied().point.index;
      for (const id of IDS) {
        assert.deepEqual(nodes[0]!.state.block(id) ?? { revision: 0, body: null }, model.cur(id), `block ${id} after action ${i}`);
        for (let k = 0; k < 20; k++) {
          const n = int(0, 2);
          const at = int(0, applied);
          const got = nodes[n]!.state.blockAt(id, at);
          if (got === 'unavailable') assert.ok(at < floors[n]! && model.cur(id).revision > at, `node ${n}: ${id} at ${at} unavailable above its floor ${floors[n]}`);
          else assert.deepEqual(got, model.at(id, at), `node ${n} (floor ${floors[n]}): ${id} at ${at}`);
        }
      }
    }
  }
  for (const kind of ['block_committed', 'block_pended', 'block_conflict', 'block_pending', 'block_cancelled', 'action_not_found', 'invalid_operation', 'action_reused']) {
    assert.ok((counts[kind] ?? 0) > 0, `no ${kind} among ${JSON.stringify(counts)}`);
  }
  for (const h of nodes) await h.stores.close();
});

/** An answer without its message text (the model words its errors differently). */
function comparable(r: ApplyResult): unknown {
  return 'message' in r ? { kind: r.kind, index: r.index } : (JSON.parse(JSON.stringify(r)) as unknown);
}
