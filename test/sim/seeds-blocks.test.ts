import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSeeds } from './campaign.js';

// The block actor's seeds (world.ts blockStep, checkBlocks): blocks, provider records and
// collections under every fault, each replica's state equal at every snapshot point, each
// member's block history from its floor on equal to the journal, and its collections whole
// (auditCollections: counts, index entries, unique values). `npm run sim -- --seeds N --from S --blocks` runs more.
test('simulation with blocks: seeds 2001 to 2050 keep every replica\'s blocks and history alike', () => {
  const totals = runSeeds(2001, 50, { blocks: true });
  console.log(`block seeds 2001-2050: ${JSON.stringify(totals)}`);
  assert.ok(totals.blockChecks >= 150, `checkBlocks ran for ${totals.blockChecks} members`);
  assert.ok(totals.blockRevisions >= 12 * 50, `only ${totals.blockRevisions} block revisions in 50 seeds`);
  assert.ok(totals.providerPuts >= 50, `only ${totals.providerPuts} provider records written in 50 seeds`);
  assert.ok(totals.recordPuts >= 100, `only ${totals.recordPuts} records written in 50 seeds`);
  assert.ok(totals.backfillSteps >= 5, `only ${totals.backfillSteps} index steps applied in 50 seeds`);
});
