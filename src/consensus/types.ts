/**
 * The vocabulary of the consensus core. Glossary:
 *
 * - **replica**: one member of a group; plays proposer, acceptor and learner at once.
 * - **ballot**: (round, leader id), totally ordered; a leader owns exactly one ballot.
 * - **slot**: one Paxos instance. Its value is a **batch** of commands.
 * - **index**: the position of one command in the log. A slot's batch takes consecutive
 *   indexes, so indexes are dense even though slots hold many commands (or none: a no-op).
 *   Everything outside the core (revisions, applied index, segments) speaks in indexes.
 * - **chosen**: a value accepted by a quorum of the slot's configuration under one ballot.
 *   A replica knows a slot is chosen when it accepted the value under the ballot of the
 *   leader that declares it chosen, or when a peer sends it as chosen (catch-up).
 * - **commit slot**: every slot up to it is chosen and known here.
 * - **alpha**: a configuration change chosen at slot s governs slots from s + alpha on.
 *   The leader's pipeline window never exceeds alpha, so it always knows the
 *   configuration of every slot it proposes in.
 * - **compacted slot**: slots up to it were dropped behind a state machine snapshot.
 */

export type NodeId = string;

/** Ballots order by round, then by leader id. Round 0 with an empty leader is "none". */
export interface Ballot {
  readonly round: number;
  readonly leader: NodeId;
}

/** A membership change, decided by the log like every other command. */
export type ConfigChange = {
  readonly op: 'add_voter' | 'add_learner' | 'promote' | 'remove';
  readonly node: NodeId;
  /** Opaque to the core: what the state machine records with the change (addresses). */
  readonly meta?: Uint8Array;
};

/** What the core replicates. `app` payloads are opaque to it; `config` ones it interprets. */
export type Command =
  | { readonly kind: 'app'; readonly data: Uint8Array }
  | { readonly kind: 'config'; readonly change: ConfigChange };

/** The value of one slot. An empty batch is a no-op: it takes no index. */
export type Batch = readonly Command[];

/** Voters form quorums; learners receive the log but never count. */
export interface Config {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/** `config` governs every slot from `fromSlot` until the next item's `fromSlot`. */
export interface ConfigEpoch {
  readonly fromSlot: number;
  readonly config: Config;
}

/** A chosen slot handed to the state machine, in slot order. Its commands take the indexes
 *  `index`, `index + 1`, ... `index + batch.length - 1`. */
export interface Entry {
  readonly slot: number;
  readonly index: number;
  readonly batch: Batch;
  /** The configurations in force after this slot: store them with what was applied. */
  readonly epochs: readonly ConfigEpoch[];
}

/** Where the applied (or snapshotted) log ends, and the configurations that govern the slots
 *  after it. The state machine stores one of these atomically with what it applied. */
export interface LogPoint {
  readonly slot: number;
  /** The index of the last command at or before `slot` (0 when none). */
  readonly index: number;
  readonly epochs: readonly ConfigEpoch[];
}

/** One slot as an acceptor stores it. */
export interface StoredSlot {
  readonly slot: number;
  readonly ballot: Ballot;
  readonly batch: Batch;
  /** Known to be chosen (then `batch` is the chosen value). */
  readonly chosen: boolean;
}

/** Durable state a replica restarts from. */
export interface Persisted {
  readonly promised: Ballot;
  /** Slots after `base.slot` (the rest are ignored), in any order. */
  readonly slots: readonly StoredSlot[];
  /** What the state machine has applied (or the snapshot it restored). */
  readonly base: LogPoint;
  /** Slots up to here were removed from the log behind a snapshot. */
  readonly compacted: LogPoint;
  /** The last durable commit marker: stored slots up to it hold chosen values. */
  readonly commit: number;
}

/** A durable write the driver must make, in order, before acknowledging its batch. */
export type PersistOp =
  | { readonly kind: 'promise'; readonly ballot: Ballot }
  | { readonly kind: 'slot'; readonly slot: StoredSlot }
  | { readonly kind: 'compact'; readonly through: LogPoint }
  /** Slots up to `slot` are chosen. Written after (or with) the slots it covers, so once it
   *  is durable so are their chosen values: a restarted replica can serve them to peers. */
  | { readonly kind: 'commit'; readonly slot: number };

// ---------------------------------------------------------------------------------------
// Messages. Every message travels in an Envelope that names the cluster and both ends.

export interface SlotValue {
  readonly slot: number;
  readonly batch: Batch;
}

export type Message =
  /** "Would you vote for me in `round`?" Sent before a real election; changes no state. */
  | { readonly type: 'prevote'; readonly round: number; readonly commit: number }
  /** Refused, `round` is the replier's promised round: the pre-candidate asks above it next
   *  time. */
  | { readonly type: 'prevote_reply'; readonly round: number; readonly granted: boolean }
  /** Phase 1a for every slot after `commit` (the candidate's commit slot). `transfer`: the
   *  ballot of the leader that asked this candidate to take over (timeout_now): an acceptor
   *  following that very leader (or that leader itself) waives its lease for it. */
  | { readonly type: 'prepare'; readonly ballot: Ballot; readonly commit: number; readonly transfer?: Ballot }
  /** The leader of `ballot` hands over: the receiver campaigns at once (etcd's MsgTimeoutNow). */
  | { readonly type: 'timeout_now'; readonly ballot: Ballot }
  /** Phase 1b: the promise, with every slot accepted after the candidate's commit, and the
   *  acceptor's own commit and compaction points: it speaks only for the slots after them. */
  | {
      readonly type: 'promise';
      readonly ballot: Ballot;
      readonly commit: number;
      readonly compacted: number;
      readonly accepted: readonly StoredSlot[];
    }
  /** Phase 2a, several slots at once; carries the leader's commit slot. */
  | { readonly type: 'accept'; readonly ballot: Ballot; readonly commit: number; readonly values: readonly SlotValue[] }
  /** Phase 2b for the listed slots. Sent only once they are durable. */
  | { readonly type: 'accepted'; readonly ballot: Ballot; readonly slots: readonly number[] }
  /** "I promised a higher ballot than yours." */
  | { readonly type: 'reject'; readonly ballot: Ballot; readonly promised: Ballot }
  /** The leader's commit slot, sent when it moves. */
  | { readonly type: 'commit'; readonly ballot: Ballot; readonly commit: number }
  /** Liveness and leadership confirmation; `seq` is echoed for read-index rounds. */
  | { readonly type: 'heartbeat'; readonly ballot: Ballot; readonly commit: number; readonly seq: number }
  | { readonly type: 'heartbeat_ack'; readonly ballot: Ballot; readonly seq: number }
  /** "Send me the chosen slots from `from` to `to`." */
  | { readonly type: 'catchup_req'; readonly from: number; readonly to: number }
  /** Chosen values only. `snapshot` is set when this replica cannot serve the asked range
   *  from its log (compacted away, or not known durably): fetch its state instead. */
  | {
      readonly type: 'catchup';
      readonly values: readonly SlotValue[];
      readonly commit: number;
      readonly snapshot: LogPoint | null;
    }
  /** A member removed from the configuration asks a voter of the newest one how far its log
   *  is known chosen, to learn when it may stop (Replica.departed). Answered to anyone. */
  | { readonly type: 'commit_query' }
  /** `member`: a configuration the replier holds names the asker (added back, or its removal
   *  not in force yet): the asker must not leave on this answer. `fromSlot`: where the
   *  replier's newest configuration governs from (the asker counts only answers about the
   *  configuration it is leaving for). */
  | { readonly type: 'commit_reply'; readonly commit: number; readonly member: boolean; readonly fromSlot: number }
  /** A follower asks the leader for a read index on behalf of `id`. */
  | { readonly type: 'read_req'; readonly id: number }
  | { readonly type: 'read_reply'; readonly id: number; readonly index: number | null };

export interface Envelope {
  readonly cluster: string;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly msg: Message;
}

/** A linearizable read point: serve read `id` once the applied index reaches `index`. */
export interface ReadState {
  readonly id: number;
  /** null: this replica could not obtain one (no leader, deposed); retry or fail the read. */
  readonly index: number | null;
}

/**
 * What the replica needs done. All fields are read-only snapshots.
 * The driver must, in this order:
 *  1. persist `persist` durably (one atomic batch), then call `persisted(persistSeq)`;
 *     messages in `sendAfterPersist` may leave only after that;
 *  2. send `send` at any time (they depend on nothing unpersisted);
 *  3. apply `commit` in order (they are chosen, whatever happens to this replica);
 *  4. answer `reads` once the applied index reaches each one's index;
 *  5. if `snapshotNeeded` is set, the peers' logs no longer reach back to this replica's
 *     commit point: catch up another way, with ranges of chosen values the driver checked
 *     (`learnChosen`: block sync from a peer's durable log or the archive).
 * src/driver.ts is the driver production and the simulator run.
 */
export interface Ready {
  readonly persistSeq: number;
  readonly persist: readonly PersistOp[];
  readonly sendAfterPersist: readonly Envelope[];
  readonly send: readonly Envelope[];
  readonly commit: readonly Entry[];
  readonly reads: readonly ReadState[];
  readonly snapshotNeeded: { readonly from: NodeId; readonly point: LogPoint } | null;
}
