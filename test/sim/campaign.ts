/** Shared by the simulator's test files: runs a range of seeds and reports the first failure
 *  with the command that replays it. */
import assert from 'node:assert/strict';
import { emptyStats, simulate, type SimOptions, type SimStats } from './world.js';

export function runSeeds(from: number, count: number, opts: Omit<SimOptions, 'seed'> = {}): SimStats {
  const totals = emptyStats();
  for (let seed = from; seed < from + count; seed++) {
    const r = simulate({ seed, ...opts });
    if (!r.ok) assert.fail(`simulation seed ${seed} failed: ${r.error}\nreplay with: npm run sim -- --seed ${seed}${opts.blocks ? ' --blocks' : ''}`);
    for (const k of Object.keys(totals) as (keyof SimStats)[]) totals[k] = k.endsWith('MaxMs') ? Math.max(totals[k], r.stats[k]) : totals[k] + r.stats[k];
  }
  return totals;
}

/** Every kind of fault must show up several times per seed on average, or the seeds prove little. */
export function assertFaultCoverage(totals: SimStats, seeds: number): void {
  const perSeed = (k: keyof SimStats): number => totals[k] / seeds;
  for (const k of ['leaderChanges', 'crashes', 'partitions', 'membershipChanges', 'compactions', 'pauses'] as const) {
    assert.ok(perSeed(k) >= 2, `only ${perSeed(k).toFixed(2)} ${k} per seed`);
  }
  assert.ok(perSeed('rangesLearned') >= 1, `only ${perSeed('rangesLearned').toFixed(2)} catch-up ranges learned per seed`);
  for (const k of ['oneWayLinks', 'longStalls', 'crashesBeforeCommit'] as const) {
    assert.ok(perSeed(k) >= 0.5, `only ${perSeed(k).toFixed(2)} ${k} per seed`);
  }
  for (const k of ['blockSyncs', 'diskFailures'] as const) assert.ok(perSeed(k) >= 0.1, `only ${perSeed(k).toFixed(2)} ${k} per seed`);
  assert.ok(perSeed('acked') >= 100 && perSeed('reads') >= 50, 'clients did too little');
}
