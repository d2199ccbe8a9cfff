import { test } from 'node:test';
import { assertFaultCoverage, runSeeds } from './campaign.js';

// `npm test` runs 2,000 seeds in two files, so the two halves use both cores.
test('simulation: seeds 1001 to 2000 keep agreement, durability and linearizability', () => {
  const totals = runSeeds(1001, 1000);
  console.log(`seeds 1001-2000: ${JSON.stringify(totals)}`);
  assertFaultCoverage(totals, 1000);
});
