/**
 * Membership, decided by the log (Lamport's alpha rule).
 *
 * Rule: the configuration that governs slot s is the one produced by the chosen log up to
 * slot s - alpha. A change chosen at slot c therefore takes effect at slot c + alpha, and
 * every replica derives the same configuration for every slot from the chosen log alone.
 *
 * Why this is safe: Paxos needs, per slot, that any two quorums used for that slot
 * intersect. Phase 1 and phase 2 for slot s both use quorums of config(s), and config(s)
 * is a function of the chosen prefix, which is the same everywhere; so every quorum used
 * for s is a majority of the same voter set. A leader proposes in slot s only when it knows
 * the chosen log up to s - alpha (its window is at most alpha slots past its commit slot),
 * and only once promises that speak for s include a majority of config(s)'s voters (a
 * promise speaks for the slots after its sender's commit point only); so it never guesses a
 * configuration.
 * Learners receive the log but never count towards a quorum.
 */
import type { Config, ConfigChange, ConfigEpoch, NodeId } from './types.js';

export function isVoter(config: Config, id: NodeId): boolean {
  return config.voters.includes(id);
}

export function isMember(config: Config, id: NodeId): boolean {
  return config.voters.includes(id) || config.learners.includes(id);
}

/** A majority of the voters. */
export function quorumSize(config: Config): number {
  return Math.floor(config.voters.length / 2) + 1;
}

/** True when `ids` holds a majority of `config`'s voters (others are ignored). */
export function hasQuorum(config: Config, ids: Iterable<NodeId>): boolean {
  let count = 0;
  const seen = new Set<NodeId>();
  for (const id of ids) {
    if (!seen.has(id) && isVoter(config, id)) count++;
    seen.add(id);
  }
  return count >= quorumSize(config);
}

/**
 * Applies one change. Changes are applied at the same slot on every replica, so this must
 * be deterministic; a change that makes no sense (promote a non-learner, remove the last
 * voter) is a no-op, never an error.
 */
export function applyChange(config: Config, change: ConfigChange): Config {
  const voters = config.voters.filter((v) => v !== change.node);
  const learners = config.learners.filter((l) => l !== change.node);
  switch (change.op) {
    case 'add_voter':
      return { voters: sorted([...voters, change.node]), learners };
    case 'add_learner':
      return isMember(config, change.node) ? config : { voters, learners: sorted([...learners, change.node]) };
    case 'promote':
      return config.learners.includes(change.node) ? { voters: sorted([...voters, change.node]), learners } : config;
    case 'remove':
      return voters.length === 0 ? config : { voters, learners };
  }
}

function sorted(ids: NodeId[]): NodeId[] {
  return ids.sort();
}

/** The configuration that governs `slot`. `epochs` is ordered by `fromSlot`. */
export function configAt(epochs: readonly ConfigEpoch[], slot: number): Config {
  let found: Config | undefined;
  for (const epoch of epochs) {
    if (epoch.fromSlot <= slot) found = epoch.config;
    else break;
  }
  if (found === undefined) throw new Error(`no configuration governs slot ${slot}`);
  return found;
}

/** The newest configuration, including changes not yet in effect. */
export function latestConfig(epochs: readonly ConfigEpoch[]): Config {
  const last = epochs[epochs.length - 1];
  if (last === undefined) throw new Error('no configuration');
  return last.config;
}

/**
 * The epochs after applying the changes chosen in `slot`: one new epoch from
 * `slot + alpha`, built on the newest configuration. Returns `epochs` itself if no change.
 */
export function epochsAfter(
  epochs: readonly ConfigEpoch[],
  slot: number,
  changes: readonly ConfigChange[],
  alpha: number,
): readonly ConfigEpoch[] {
  if (changes.length === 0) return epochs;
  let config = latestConfig(epochs);
  for (const change of changes) config = applyChange(config, change);
  return [...epochs, { fromSlot: slot + alpha, config }];
}

/** Drops epochs that no slot after `slot` can need. */
export function trimEpochs(epochs: readonly ConfigEpoch[], slot: number): readonly ConfigEpoch[] {
  let first = 0;
  for (let i = 1; i < epochs.length; i++) if (epochs[i]!.fromSlot <= slot + 1) first = i;
  return first === 0 ? epochs : epochs.slice(first);
}

/** Every node named by any epoch: the peers whose messages a replica accepts. */
export function knownNodes(epochs: readonly ConfigEpoch[]): Set<NodeId> {
  const out = new Set<NodeId>();
  for (const { config } of epochs) {
    for (const v of config.voters) out.add(v);
    for (const l of config.learners) out.add(l);
  }
  return out;
}
