import { test } from 'node:test';
import { assertFaultCoverage, runSeeds } from './campaign.js';

// `npm test` runs 2,000 seeds in two files, so the two halves use both cores.
test('simulation: seeds 1 to 1000 keep agreement, durability and linearizability', () => {
  const totals = runSeeds(1, 1000);
  console.log(`seeds 1-1000: ${JSON.stringify(totals)}`);
  assertFaultCoverage(totals, 1000);
});
