/**
 * The consensus core: Multi-Paxos as a pure state machine.
 *
 * ```ts
 * const replica = new Replica({ id: 'a', cluster: 'c1', random: Math.random }, bootstrapState({ voters: ['a'], learners: [] }));
 * replica.tick();
 * const ready = replica.ready();   // persist, then persisted(seq); send; apply commit entries
 * ```
 * The driver (src/node in production, test/sim in the simulator) owns all I/O, time and
 * randomness. See replica.ts for the protocol and config.ts for membership.
 */
export * from './types.js';
export { BALLOT_NONE, compareBallots, ballotEquals, formatBallot } from './ballot.js';
export { configAt, latestConfig, hasQuorum, isVoter, isMember, quorumSize, applyChange, epochsAfter } from './config.js';
export { Replica, DEFAULTS, bootstrapState, commandBytes, batchBytes } from './replica.js';
export type { ReplicaOptions, ProposeResult, Role, ReplicaStats, TransferResult } from './replica.js';
export { validateEnvelope, isLogPoint, isBallot, isCommand, LIMITS } from './validate.js';
