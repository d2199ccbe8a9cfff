/**
 * Broken replicas for the simulator's self-test (defects.test.ts): each defect breaks one of
 * the core's rules, which `Replica` keeps in one protected method each, to prove the
 * simulator notices. Production code carries no switch for them.
 */
import { Replica, type Ballot, type Config, type ConfigEpoch, type NodeId, type Persisted, type ReplicaOptions, type Ready, type StoredSlot } from '../../src/consensus/index.js';
import type { PromiseInfo } from '../../src/consensus/replica.js';

export interface Defects {
  /** Promises are not persisted: a restarted acceptor forgets what it promised. */
  skipPromisePersist?: boolean;
  /** Accepts below the promised ballot are taken. */
  acceptLowerBallot?: boolean;
  /** Phase 1 recovers the first accepted value it sees, not the highest ballot's. */
  ignoreHighestBallot?: boolean;
  /** Learners count toward quorums and phase 1 recovery. */
  countLearnersInQuorum?: boolean;
  /** A commit notice makes any accepted value chosen, whatever ballot it was accepted under. */
  commitWithoutBallotCheck?: boolean;
  /** A new leader serves linearizable reads before a value of its own ballot commits. */
  readWithoutOwnCommit?: boolean;
  /** A promise hides the replica's commit and compaction points. */
  hideCompactionInPromise?: boolean;
  /** A leader counts its own accept before it is durable. */
  countSelfBeforeDurable?: boolean;
  /** A leader takes chosen values from block sync and catch-up answers like a follower. */
  leaderTakesChosen?: boolean;
  /** A promise from a promiser ahead of the candidate counts for every slot (it reports
   *  nothing at or below its commit). */
  aheadPromiserSpeaks?: boolean;
  /** A promise counts for the promiser's own commit slot too (off by one). */
  promiserSpeaksAtItsCommit?: boolean;
  /** A removed member leaves on the first voter that confirms, not once every voter left has. */
  leaveOnOneReply?: boolean;
  /** A removed member leaves on replies that name it a member again (added back). */
  leaveWhenAddedBack?: boolean;
}

export class DefectiveReplica extends Replica {
  constructor(
    opts: ReplicaOptions,
    state: Persisted,
    private readonly defects: Defects,
  ) {
    super(opts, state);
  }

  override ready(): Ready | null {
    const ready = super.ready();
    if (ready !== null && this.defects.countSelfBeforeDurable && this.currentRole === 'leader') this.persisted(ready.persistSeq);
    return ready;
  }

  protected override quorum(config: Config, ids: Iterable<NodeId>): boolean {
    if (!this.defects.countLearnersInQuorum) return super.quorum(config, ids);
    const members = new Set([...config.voters, ...config.learners]);
    return new Set([...ids].filter((id) => members.has(id))).size >= Math.floor(config.voters.length / 2) + 1;
  }

  protected override countsForLeaving(leaving: ConfigEpoch, from: NodeId, commit: number, member: boolean): boolean {
    return super.countsForLeaving(leaving, from, commit, this.defects.leaveWhenAddedBack ? false : member);
  }

  protected override mayLeave(leaving: ConfigEpoch, confirmed: ReadonlySet<NodeId>): boolean {
    return this.defects.leaveOnOneReply ? confirmed.size >= 1 : super.mayLeave(leaving, confirmed);
  }

  protected override persistPromise(ballot: Ballot): void {
    if (!this.defects.skipPromisePersist) super.persistPromise(ballot);
  }

  protected override promiseReport(candidateCommit: number): { after: number; commit: number; compacted: number } {
    if (!this.defects.hideCompactionInPromise) return super.promiseReport(candidateCommit);
    return { after: candidateCommit, commit: Math.min(candidateCommit, this.commit.slot), compacted: 0 };
  }

  protected override recoversFrom(config: Config, node: NodeId): boolean {
    return super.recoversFrom(config, node) || (this.defects.countLearnersInQuorum === true && config.learners.includes(node));
  }

  protected override outranks(s: StoredSlot, best: StoredSlot): boolean {
    return this.defects.ignoreHighestBallot ? false : super.outranks(s, best);
  }

  protected override refusesAccept(ballot: Ballot): boolean {
    return this.defects.acceptLowerBallot ? false : super.refusesAccept(ballot);
  }

  protected override commitNoticeCovers(s: StoredSlot, ballot: Ballot): boolean {
    return this.defects.commitWithoutBallotCheck === true || super.commitNoticeCovers(s, ballot);
  }

  protected override takesNoChosen(): boolean {
    return this.defects.leaderTakesChosen ? false : super.takesNoChosen();
  }

  protected override speaksFor(node: NodeId, info: PromiseInfo, slot: number): boolean {
    if (this.defects.aheadPromiserSpeaks) return true;
    if (this.defects.promiserSpeaksAtItsCommit) return super.speaksFor(node, info, slot) || info.commit === slot;
    return super.speaksFor(node, info, slot);
  }

  protected override readWaitsForOwnCommit(): boolean {
    return this.defects.readWithoutOwnCommit ? false : super.readWaitsForOwnCommit();
  }
}
