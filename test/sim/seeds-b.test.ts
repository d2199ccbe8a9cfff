import { test } from 'node:test';
import { assertFaultCoverage, runSeeds } from './campaign.js';

// `npm test` runs 1,000 seeds in two files, so the two halves use both cores (500 each since
// session 16, for the ten minutes, beside the block actor's 80 in seeds-blocks.test.ts; the
// campaigns, `npm run sim`, run tens of thousands).
test('simulation: seeds 1001 to 1500 keep agreement, durability and linearizability', () => {
  const totals = runSeeds(1001, 500);
  console.log(`seeds 1001-1500: ${JSON.stringify(totals)}`);
  assertFaultCoverage(totals, 500);
});
