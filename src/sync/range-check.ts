/**
 * The checks a range of chosen values from a peer passes before it enters the consensus core
 * as chosen (`learnChosen`). Pure: block sync (blocksync.ts) runs them over libp2p, the
 * simulator over its own peers, with forged ranges among them.
 *
 * A range is slots `from..through` with their batches, the index of its last command and the
 * chain value there. Recomputing the chain from this node's own applied value proves only
 * that the values hash to the stated end: anyone can compute both. What makes the range
 * chosen is that its end is vouched for (the word of the leader, or of the member a joining
 * node joined through; or a majority of the voters'; or a `--checkpoint`):
 * - the chain value at `lastIndex` pins every command and the slot it was chosen at (the
 *   slot is in the chain: `nextChain`), so no command can be forged, dropped or moved into
 *   another slot;
 * - what the chain cannot pin is empty slots after the last command: a voucher also states
 *   that it holds no command after `lastIndex` up to `through` (`ends`), so a range cannot
 *   end in no-ops where the cluster chose commands.
 */
import { LIMITS, quorumSize, type Command, type ConfigEpoch, type SlotValue } from '../consensus/index.js';
import { nextChain } from '../state/command.js';
import type { ConfigRecord } from '../state/state-store.js';

/** A node's word on the chain after `index`: the value (null if it has not applied that far
 *  or no longer holds it) and whether it holds no command after `index` up to slot
 *  `through` (null when it cannot tell); the leader it follows (or is), if any; and the
 *  configurations it applied after the asker's newest one. */
export interface ChainAnswer {
  readonly status: 'chain';
  readonly index: number;
  readonly chain: Uint8Array | null;
  readonly ends: boolean | null;
  readonly leader?: string | null;
  readonly configs?: readonly ConfigRecord[];
}

/** What a node needs to answer for its own chain (its state store). */
export interface ChainSource {
  applied(): { readonly slot: number; readonly index: number; readonly chain: Uint8Array };
  chainAt(index: number): Uint8Array | undefined;
  slotAt(index: number): number | undefined;
  /** The leader this node follows and heard from within an election timeout (itself when
   *  it leads), while it is a voter of its own newest configuration; else null. */
  liveLeader?(): string | null;
  /** The configurations it applied that govern from after a slot, oldest first. */
  configsAfter?(slot: number, limit: number): readonly ConfigRecord[];
}

/** The most configurations an answer reports: a node away for more membership changes than
 *  this, with no archive key, waits for a voucher of another kind. */
export const CONFIGS_REPORTED_MAX = 64;

/** Rounds of asking after the first: the voters of configurations the answers reveal. */
export const VOUCHING_ROUNDS_MAX = 2;

/** The answer to "what is your chain value at `index`", asked by a node whose newest
 *  configuration governs from slot `configsAfter` (omitted: report no configurations). */
export function chainAnswer(src: ChainSource, index: number, through: number, configsAfter?: number): ChainAnswer {
  const extra = {
    ...(src.liveLeader === undefined ? {} : { leader: src.liveLeader() }),
    ...(src.configsAfter === undefined || configsAfter === undefined ? {} : { configs: src.configsAfter(configsAfter, CONFIGS_REPORTED_MAX) }),
  };
  const applied = src.applied();
  if (index > applied.index) return { status: 'chain', index, chain: null, ends: null, ...extra };
  const chain = index === applied.index ? applied.chain : (src.chainAt(index) ?? null);
  if (chain === null) return { status: 'chain', index, chain: null, ends: null, ...extra };
  if (index === applied.index) return { status: 'chain', index, chain, ends: applied.slot >= through ? true : null, ...extra };
  const next = src.slotAt(index + 1);
  return { status: 'chain', index, chain, ends: next === undefined ? null : next > through, ...extra };
}

/**
 * The leader a majority of the voters follow now, by their answers (each names the live
 * leader it follows while it is a voter of its own newest configuration), or null.
 *
 * A node whose configuration is old (it was down while the membership changed) may not know
 * the cluster's leader, and its voters may have pruned every chain value it needs vouched
 * for; they still know whom they follow. When its own voters are too few to name one (some
 * were removed and no longer follow anyone), it looks through the configurations they
 * report: one that a majority of a configuration's voters report having applied is real,
 * and a majority of its voters may name the leader in turn. A minority of any
 * configuration that lies can neither name a leader nor make up a configuration, except
 * that of two voters the other's word is taken (see `enough`: it is no more than consensus
 * already trusts it with, since it and the asker are every voter there is).
 */
export function leaderNamedByMajority(own: OwnConfig, answers: ReadonlyMap<string, ChainAnswer | null>): string | null {
  let config: ConfigRecord | null = own;
  for (let hops = 0; config !== null && hops <= CONFIGS_REPORTED_MAX; hops++) {
    const count = new Map<string, number>();
    for (const v of config.voters) {
      const leader = answers.get(v)?.leader;
      if (typeof leader === 'string') count.set(leader, (count.get(leader) ?? 0) + 1);
    }
    for (const [leader, n] of count) if (enough(config.voters, n, own.self)) return leader;
    config = laterConfigReported(config, answers, own.self);
  }
  return null;
}

/** The asker's own configuration, and the asker (see `enough`). */
export type OwnConfig = ConfigRecord & { readonly self?: string };

/**
 * Whether `n` of `voters` agreeing decides: a majority, or every voter but the asker. The
 * asker never answers itself, and when it is behind it cannot: of two voters, the other's
 * word is all there is, as in consensus, where a lone voter of two decides nothing but
 * the pair decides everything (simulator seed 1001: a voter of two, behind the addition of
 * a third that then led, could never be told who leads). From three voters on, every voter
 * but the asker is at least a majority.
 */
function enough(voters: readonly string[], n: number, self: string | undefined): boolean {
  if (n >= majority(voters)) return true;
  return self !== undefined && voters.length >= 2 && voters.includes(self) && n >= voters.length - 1;
}

/** The newest configuration after `config` that a majority of `config`'s voters report
 *  having applied (same slot, same voters), or null. */
function laterConfigReported(config: ConfigRecord, answers: ReadonlyMap<string, ChainAnswer | null>, self: string | undefined): ConfigRecord | null {
  const reports = new Map<string, { config: ConfigRecord; by: Set<string> }>();
  for (const v of config.voters) {
    for (const c of answers.get(v)?.configs ?? []) {
      if (c.fromSlot <= config.fromSlot) continue;
      // Voters are sorted and unique (chainAnswerFrom); the key cannot collide.
      const key = JSON.stringify([c.fromSlot, c.voters]);
      const seen = reports.get(key) ?? { config: c, by: new Set<string>() };
      seen.by.add(v);
      reports.set(key, seen);
    }
  }
  let newest: ConfigRecord | null = null;
  for (const { config: c, by } of reports.values()) {
    if (enough(config.voters, by.size, self) && (newest === null || c.fromSlot > newest.fromSlot)) newest = c;
  }
  return newest;
}

/**
 * The voters of the later configurations the answers establish (`leaderNamedByMajority`),
 * not among `asked`: a node asks its own voters, and voters added since are asked in a
 * further round.
 */
export function laterVoters(own: OwnConfig, answers: ReadonlyMap<string, ChainAnswer | null>): string[] {
  const out = new Set<string>();
  let config = laterConfigReported(own, answers, own.self);
  for (let hops = 0; config !== null && hops < CONFIGS_REPORTED_MAX; hops++) {
    for (const v of config.voters) if (!answers.has(v)) out.add(v);
    config = laterConfigReported(config, answers, own.self);
  }
  return [...out];
}

/**
 * A peer's answer, checked: null unless it is a well-formed chain answer. Reported
 * configurations are bounded (at most CONFIGS_REPORTED_MAX, each with at most
 * LIMITS.votersMax voters of valid ids) and their voters sorted and made unique.
 */
export function chainAnswerFrom(raw: unknown): ChainAnswer | null {
  const a = raw as Partial<Record<keyof ChainAnswer, unknown>> | null;
  if (typeof a !== 'object' || a === null || a.status !== 'chain' || typeof a.index !== 'number' || !Number.isSafeInteger(a.index)) return null;
  if (!(a.chain === null || a.chain instanceof Uint8Array) || !(a.ends === null || typeof a.ends === 'boolean')) return null;
  if (!(a.leader === undefined || a.leader === null || isId(a.leader))) return null;
  const out: ChainAnswer = { status: 'chain', index: a.index, chain: a.chain, ends: a.ends, ...(a.leader === undefined ? {} : { leader: a.leader }) };
  if (a.configs === undefined) return out;
  if (!Array.isArray(a.configs) || a.configs.length > CONFIGS_REPORTED_MAX) return null;
  const configs: ConfigRecord[] = [];
  for (const c of a.configs as unknown[]) {
    const r = c as { fromSlot?: unknown; voters?: unknown } | null;
    if (typeof r !== 'object' || r === null || typeof r.fromSlot !== 'number' || !Number.isSafeInteger(r.fromSlot) || r.fromSlot < 1) return null;
    if (!Array.isArray(r.voters) || r.voters.length === 0 || r.voters.length > LIMITS.votersMax || !r.voters.every(isId)) return null;
    configs.push({ fromSlot: r.fromSlot, voters: [...new Set(r.voters as string[])].sort() });
  }
  return { ...out, configs };
}

function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= LIMITS.nodeIdLengthMax;
}

function majority(voters: readonly string[]): number {
  return quorumSize({ voters, learners: [] });
}

export type RangeVerdict =
  | {
      readonly ok: true;
      readonly lastIndex: number;
      readonly chain: Uint8Array;
      readonly through: number;
      /** How many of the range's first slots a checkpoint pins: they may enter the core on
       *  the checkpoint alone, with no voucher. */
      readonly pinned: number;
    }
  | { readonly ok: false; readonly why: 'malformed' | 'checkpoint' | 'chain' };

/**
 * Recomputes the chain over `values` (slots from `from` on, consecutive) from this node's
 * applied index and chain; it must end at `lastIndex` and `chainAfter`, and pass every
 * checkpoint on the way.
 *
 * A checkpoint passed at an index pins every command up to it and the slot of each, so every
 * slot before that index's slot, empty ones included. It does not pin where that slot's
 * batch ends (the range may cut it short after the checkpointed command) nor any slot after:
 * those wait for a voucher (`pinned`).
 */
export function checkRange(
  from: number,
  applied: { readonly index: number; readonly chain: Uint8Array },
  values: readonly SlotValue[],
  lastIndex: unknown,
  chainAfter: unknown,
  checkpoints: ReadonlyMap<number, Uint8Array>,
): RangeVerdict {
  if (values.length === 0) return { ok: false, why: 'malformed' };
  let chain = applied.chain;
  let index = applied.index;
  let pinned = 0;
  for (const [i, v] of values.entries()) {
    if (v.slot !== from + i) return { ok: false, why: 'malformed' };
    for (const cmd of v.batch as readonly Command[]) {
      chain = nextChain(chain, v.slot, cmd);
      index++;
      const checkpoint = checkpoints.get(index);
      if (checkpoint === undefined) continue;
      if (Buffer.compare(checkpoint, chain) !== 0) return { ok: false, why: 'checkpoint' };
      pinned = i;
    }
  }
  if (index !== lastIndex || !(chainAfter instanceof Uint8Array) || Buffer.compare(chain, chainAfter) !== 0) return { ok: false, why: 'chain' };
  return { ok: true, lastIndex: index, chain, through: from + values.length - 1, pinned };
}

/**
 * Is the range's end the cluster's? Yes when a trusted node vouches for it (the leader this
 * node follows; the member it joined through, while it joins: its configuration may name
 * only voters long gone), or the source is the leader a majority of the voters follow (in
 * this round of answers, `leaderNamedByMajority`, and no answer holds another chain value or
 * a command after `lastIndex`), or a majority of the voters vouch: each voucher's answer must give the
 * same chain value at `lastIndex` and `ends: true`. `source` (the peer that served the range)
 * vouches by serving it. Voters that have not applied that far, pruned it, or did not answer
 * (absent from `answers`) do not count. A trusted node that answers otherwise (another chain
 * value, or a command after `lastIndex` within the range) vetoes: a majority of an old
 * configuration (a one-voter genesis whose founder's log diverged) cannot outvote it.
 */
export function vouched(
  range: { readonly lastIndex: number; readonly chain: Uint8Array },
  source: string,
  trusted: readonly string[],
  own: OwnConfig,
  answers: ReadonlyMap<string, ChainAnswer | null>,
): boolean {
  const { voters } = own;
  for (const t of trusted) {
    const a = answers.get(t);
    if (a == null || a.index !== range.lastIndex || !(a.chain instanceof Uint8Array)) continue;
    if (Buffer.compare(a.chain, range.chain) !== 0 || a.ends === false) return false;
  }
  const agree = new Set<string>([source]);
  for (const [v, a] of answers) {
    if (a === null || a.index !== range.lastIndex || a.ends !== true) continue;
    if (a.chain instanceof Uint8Array && Buffer.compare(a.chain, range.chain) === 0) agree.add(v);
  }
  if (trusted.some((t) => agree.has(t))) return true;
  if (source === leaderNamedByMajority(own, answers)) {
    const contradicted = [...answers.values()].some((a) => {
      return a != null && a.index === range.lastIndex && a.chain instanceof Uint8Array && (Buffer.compare(a.chain, range.chain) !== 0 || a.ends === false);
    });
    if (!contradicted) return true;
  }
  return voters.length > 0 && voters.filter((v) => agree.has(v)).length >= majority(voters);
}

/**
 * The voters whose majority vouches for this node: those of its newest configuration, once
 * that configuration names the node. Before then the node replays history from before it
 * joined (its configuration may be the genesis, a founder alone), and only the trusted
 * (the member it joined through, the leader) vouch.
 */
export function votersWhoVouch(self: string, epoch: ConfigEpoch): OwnConfig {
  const { voters, learners } = epoch.config;
  return { fromSlot: epoch.fromSlot, voters: voters.includes(self) || learners.includes(self) ? voters : [], self };
}

/**
 * Whom to ask to vouch for a range from `source`: no one when the source is trusted. The
 * source is asked too: it vouches for its range by serving it, and whom it follows (itself,
 * when it leads) counts as any voter's word (`leaderNamedByMajority`).
 */
export function vouchersFor(source: string, self: string, trusted: readonly string[], voters: readonly string[]): string[] {
  if (trusted.includes(source)) return [];
  return [...new Set([...trusted, ...voters, source])].filter((v) => v !== self);
}
