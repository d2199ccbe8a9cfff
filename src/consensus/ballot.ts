import type { Ballot, NodeId } from './types.js';

/** The ballot below every real one. */
export const BALLOT_NONE: Ballot = Object.freeze({ round: 0, leader: '' });

/** Orders ballots by round, then by leader id. */
export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.round !== b.round) return a.round < b.round ? -1 : 1;
  if (a.leader === b.leader) return 0;
  return a.leader < b.leader ? -1 : 1;
}

export function ballotEquals(a: Ballot, b: Ballot): boolean {
  return a.round === b.round && a.leader === b.leader;
}

export function nextBallot(above: Ballot, self: NodeId): Ballot {
  return { round: above.round + 1, leader: self };
}

export function formatBallot(b: Ballot): string {
  return `${b.round}.${b.leader}`;
}
