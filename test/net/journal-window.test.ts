/**
 * JournalWindow (src/net/watch.ts): the rows a node keeps decoded for its watch streams give
 * every query exactly what the journal itself gives, for any order of queries, appends,
 * trims and a state that goes back (a restore).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { JournalWindow } from '../../src/net/watch.js';
import type { Effects } from '../../src/state/effects.js';

/** A journal: rows at some indexes (not every index changes a key). */
class Journal {
  rows: Effects[] = [];
  applied = 0;
  reads = 0;

  append(n: number, every: number): void {
    for (let i = 0; i < n; i++) {
      this.applied++;
      if (this.applied % every === 0) this.rows.push({ index: this.applied, changes: [{ type: 'put', key: Buffer.from(`k${this.applied}`), value: Buffer.alloc(this.applied % 50) }] });
    }
  }

  read(after: number, through: number, limit: number): Effects[] {
    this.reads++;
    return this.rows.filter((r) => r.index > after && r.index <= through).slice(0, limit);
  }
}

test('the window answers every query as the journal does', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 64 }),
      fc.integer({ min: 200, max: 5_000 }),
      fc.array(
        fc.oneof(
          fc.record({ t: fc.constant('append' as const), n: fc.integer({ min: 1, max: 200 }), every: fc.integer({ min: 1, max: 4 }) }),
          fc.record({ t: fc.constant('query' as const), back: fc.integer({ min: 0, max: 400 }), short: fc.integer({ min: 0, max: 50 }), limit: fc.integer({ min: 1, max: 300 }) }),
          fc.record({ t: fc.constant('restore' as const), to: fc.integer({ min: 0, max: 100 }) }),
        ),
        { maxLength: 200 },
      ),
      (rowsMax, bytesMax, actions) => {
        const j = new Journal();
        const w = new JournalWindow((a, t, l) => j.read(a, t, l), rowsMax, bytesMax);
        for (const act of actions) {
          if (act.t === 'append') j.append(act.n, act.every);
          else if (act.t === 'restore') {
            // Back to an earlier point; then the same indexes are applied again.
            j.applied = Math.min(j.applied, act.to);
            j.rows = j.rows.filter((r) => r.index <= j.applied);
            // The window sees a dip only through a query made during it, else its owner must
            // say so (CI seed 518079696: a restore, then the same index applied again).
            if (act.to % 2 === 0) w.forget();
            else w.effects(0, j.applied, 1, j.applied);
          } else {
            const after = Math.max(0, j.applied - act.back);
            const through = Math.max(after, j.applied - act.short);
            assert.deepEqual(w.effects(after, through, act.limit, j.applied).map((r) => r.index), j.read(after, through, act.limit).map((r) => r.index));
          }
        }
      },
    ),
    { numRuns: Number(process.env.WINDOW_RUNS ?? 300) },
  );
});

test('streams that keep up read the journal once between them', () => {
  const j = new Journal();
  const w = new JournalWindow((a, t, l) => j.read(a, t, l));
  let sent = 0;
  for (let round = 0; round < 100; round++) {
    j.append(10, 1);
    for (let s = 0; s < 1_000; s++) assert.equal(w.effects(sent, j.applied, 256, j.applied).length, 10);
    sent = j.applied;
  }
  // One read for each round (the extension) and the reads of the test itself: none per stream.
  assert.equal(j.reads, 100);
});
