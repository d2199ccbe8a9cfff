import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Defects } from '../../src/consensus/index.js';
import { simulate } from './world.js';

/** The simulator must catch each of these broken replicas within the seeds CI runs. */
const SEEDS_MAX = 2000; // the seeds CI runs (seeds-a and seeds-b)
const DEFECTS: (keyof Defects)[] = [
  'skipPromisePersist',
  'acceptLowerBallot',
  'ignoreHighestBallot',
  'countLearnersInQuorum',
  'commitWithoutBallotCheck',
  'readWithoutOwnCommit',
  'hideCompactionInPromise',
  'countSelfBeforeDurable',
];

for (const defect of DEFECTS) {
  test(`simulation catches a replica with defect ${defect}`, () => {
    for (let seed = 1; seed <= SEEDS_MAX; seed++) {
      const r = simulate({ seed, defects: { [defect]: true } });
      if (!r.ok) {
        assert.doesNotMatch(r.error ?? '', /^crash:/, 'a defect should be caught by a check, not by an exception');
        console.log(`${defect}: caught at seed ${seed}: ${(r.error ?? '').slice(0, 160)}`);
        return;
      }
    }
    assert.fail(`${defect} went unnoticed for ${SEEDS_MAX} seeds`);
  });
}
