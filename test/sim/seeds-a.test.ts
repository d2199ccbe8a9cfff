import { test } from 'node:test';
import { assertFaultCoverage, runSeeds } from './campaign.js';

// `npm test` runs 1,200 seeds in two files, so the two halves use both cores (600 each since
// session 15, for the ten minutes: the sim's seeds grew longer with 1-3 s disk stalls; the
// campaigns, `npm run sim`, run tens of thousands).
test('simulation: seeds 1 to 600 keep agreement, durability and linearizability', () => {
  const totals = runSeeds(1, 600);
  console.log(`seeds 1-600: ${JSON.stringify(totals)}`);
  assertFaultCoverage(totals, 600);
});
