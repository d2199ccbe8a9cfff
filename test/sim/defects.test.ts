import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Defects } from './defective-replica.js';
import type { DriverDefects } from '../../src/driver.js';
import type { StateDefects } from './defective-state.js';
import { simulate, type SimOptions, type SyncDefects } from './world.js';

/** The simulator must catch each of these broken replicas and drivers within the seeds CI
 *  runs (seeds-a and seeds-b: 1 to 2,000). */
const SEEDS_MAX = 2000;
const CORE: (keyof Defects)[] = [
  'skipPromisePersist',
  'acceptLowerBallot',
  'ignoreHighestBallot',
  'countLearnersInQuorum',
  'commitWithoutBallotCheck',
  'readWithoutOwnCommit',
  'hideCompactionInPromise',
  'countSelfBeforeDurable',
  'leaderTakesChosen',
  'aheadPromiserSpeaks',
  'promiserSpeaksAtItsCommit',
  'leaveOnOneReply',
];
// leaveWhenAddedBack (a removed node leaving on answers that name it a member again) is not
// listed: the simulator has no check that tells it from the race the rule accepts (answers
// that cross an addition), and its liveness checks rarely meet it. The unit test in
// consensus-schedules.test.ts pins the rule.
// Defects the core's own invariants may catch (an exception) before a check does.
const CORE_MAY_THROW: (keyof Defects)[] = [];
const DRIVER: (keyof DriverDefects)[] = ['persistedBeforeFlush', 'readBeforeApplied', 'reuseReadIds', 'markerBeforeSlots', 'applyBeforeLogWrite', 'dropForwards'];
// Two broken drivers of issue 10 have no variant here, because no schedule can show them:
// - A durability ack matched by slot only (not by slot and ballot): a replica leads under a
//   ballot only once its promise of that ballot is durable, and acks are cumulative, so every
//   batch written under an earlier ballot is acked before it accepts anything under this one.
// - Apply before the commit marker is durable: the marker is only what a replica learned, and
//   since issue 12 the driver defers it on purpose (driver.ts `deferMarker`); a restarted
//   replica's commit slot starts at its applied point. Apply still waits for every slot
//   write handed over (the state is never ahead of the log it serves to peers).
// Apply's rules (ApplyRules in src/state/kv.ts).
const STATE: (keyof StateDefects)[] = ['retriesApplyAgain', 'forgetAtHandOver'];
// Block sync's checks (src/sync/range-check.ts), with forged ranges among the simulator's.
const SYNC: (keyof SyncDefects)[] = ['trustSenderChain', 'checkpointTakesTail', 'checkpointTakesLastSlot', 'preJoinVotersVouch'];

/**
 * Defects the simulator meets rarely: the seeds that meet them (found by a campaign, `npm run
 * sim -- --seeds N --defect NAME`), replayed instead of a scan, which would take minutes.
 * The self-test shows that the checks notice the defect when a schedule meets it; how often
 * schedules do is the campaigns' business.
 * - ignoreHighestBallot: Phase 1 must meet one slot accepted under two ballots with the
 *   older value seen first; about once in 1,300 to 4,000 seeds (seed 1339 before session 10's
 *   departure and transfer cases changed the streams, 3975 since).
 */
const RARE: Partial<Record<string, readonly number[]>> = {
  'a replica with defect ignoreHighestBallot': [331],
  // Scans of a few hundred seeds each (sessions 13 and 15): replayed, to keep `npm test`
  // within its ten minutes. A change to the simulator's streams moves them: run the scan
  // again (delete the entry) and put the new seed here (session 15's longer disk stalls moved
  // these three: 3975 -> 1720, 170 -> 885, 170 -> 287; session 18's departures, which wait
  // for every voter left, moved the first: 1720 -> 331).
  'a replica with defect acceptLowerBallot': [885],
  'a replica with defect promiserSpeaksAtItsCommit': [359],
  'a driver with defect markerBeforeSlots': [277],
  'block sync with defect checkpointTakesLastSlot': [287],
  'block sync with defect preJoinVotersVouch': [638],
};

function catches(name: string, opts: Omit<SimOptions, 'seed'>, invariantOk = false): void {
  test(`simulation catches ${name}`, () => {
    const seeds = RARE[name] ?? Array.from({ length: SEEDS_MAX }, (_, i) => i + 1);
    for (const seed of seeds) {
      // Without the lease actor: the seeds that catch each defect stay those they were (it
      // changes half the seeds' schedules, and the lease checks have a case of their own).
      const r = simulate({ seed, leases: false, ...opts });
      if (!r.ok) {
        const error = r.error ?? '';
        const invariant = /^crash: Error: no configuration governs slot/.test(error) && error.includes('/src/consensus/');
        if (!(invariantOk && invariant)) assert.doesNotMatch(error, /^crash:/, 'a defect should be caught by a check, not by an exception');
        console.log(`${name}: caught at seed ${seed}: ${(r.error ?? '').slice(0, 160)}`);
        return;
      }
    }
    assert.fail(`${name} went unnoticed for ${seeds.length === 1 ? `seed ${seeds[0]}` : `${seeds.length} seeds`}`);
  });
}

for (const d of CORE) catches(`a replica with defect ${d}`, { defects: { [d]: true } }, CORE_MAY_THROW.includes(d));
for (const d of DRIVER) catches(`a driver with defect ${d}`, { driverDefects: { [d]: true } });
for (const d of STATE) catches(`a state machine with defect ${d}`, { stateDefects: { [d]: true } });
// Log time is clamped twice: by the proposing driver (logNow) and by apply, against a proposer
// whose clock the driver did not clamp. Either alone keeps a clock jump out of the log; both
// broken, a jump expires every session and a retried write applies twice.
catches('log time that follows a proposer\'s clock (the driver\'s clamp and apply\'s both broken)', { driverDefects: { logTimeUnclamped: true }, stateDefects: { logTimeFollowsProposer: true } });
for (const d of SYNC) catches(`block sync with defect ${d}`, { syncDefects: { [d]: true } });
