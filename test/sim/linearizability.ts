/**
 * Linearizability checking for the client histories the simulator records.
 *
 * The search is Wing & Gong's, with Lowe's improvements, as Porcupine
 * (github.com/anishathalye/porcupine) does it. It knows only a sequential `Model`, never the
 * implementation under test.
 *
 * Glossary:
 * - operation: one client request, with the time it was called and the time it returned.
 *   `ret = Infinity` means the outcome is unknown (the client gave up): the operation may have
 *   taken effect at any point after its call, or never.
 * - entry: a call or a return event. A partition's entries sit in one doubly linked list
 *   ordered by time; at equal times calls come before returns, so operations that touch at
 *   an instant count as concurrent (the lenient reading: it can hide a bug, never invent one).
 * - linearize: pick an operation whose call entry comes before the first return entry in the
 *   list (it was open at that instant, so it may take effect first), step the model with it
 *   and lift both its entries out of the list. Hitting a return entry means the operation
 *   that returned there was not linearized in time: backtrack (unlift the last one, try the
 *   next candidate). Lowe's "just-in-time linearization" is this order.
 * - cache: the (set of linearized operations, model state) pairs already explored. Reaching
 *   one again cannot lead anywhere new, so the search prunes it (Lowe's memoisation).
 * - partition: operations on different keys are independent, and a history is linearizable
 *   if and only if each key's sub-history is (Herlihy & Wing's locality, "P-compositionality"
 *   in Lowe's paper), so each partition is searched on its own.
 *
 * The search succeeds once every completed operation is linearized; an operation with an
 * unknown outcome is linearized only where that helps, and otherwise left out.
 *
 * Cost: checking is NP-complete in general. A linearizable history is cheap when few
 * operations overlap on one key (a few hundred operations of 3 to 5 clients: thousands of
 * steps). Refuting one costs more, growing with the unknown-outcome writes and with overlap
 * on one key (20 clients on one key can take millions of steps): hence `maxSteps`.
 */

/** A sequential specification. States must be immutable values; `key` partitions the history (P-compositionality). */
export interface Model<S, In, Out> {
  init(): S;
  /**
   * Applies `input` to `state`; returns whether `output` is a legal result and the next state.
   * `output` is `undefined` for an operation whose outcome is unknown (`ret = Infinity`): any
   * result is legal then, and `next` is the state had the operation taken effect.
   */
  step(state: S, input: In, output: Out | undefined): { ok: boolean; next: S };
  /** A string that identifies the state, for memoisation. */
  hash(state: S): string;
  /** Partition key of an input (operations on different keys are independent); optional. */
  partition?(input: In): string;
}

/** `ret = Infinity` for an operation whose outcome is unknown (it may or may not have taken effect: it can be linearized anywhere after its call, or not at all). */
export interface Operation<In, Out> {
  clientId: number;
  input: In;
  call: number;
  output: Out;
  ret: number;
}

export type CheckResult = { ok: true } | { ok: false; partition: string; explanation: string };

/** Thrown when the search runs out of steps: the history was neither proven nor refuted. */
export class SearchBudgetExhaustedError extends Error {
  constructor(readonly partition: string, readonly stepsMax: number) {
    super(`linearizability search budget exhausted: ${stepsMax} steps in partition ${JSON.stringify(partition)}; nothing was proven`);
    this.name = 'SearchBudgetExhaustedError';
  }
}

/** Search steps (an attempt to linearize one operation, or one backtrack) allowed per call of `checkLinearizable`. */
export const SEARCH_STEPS_MAX_DEFAULT = 1_000_000;
/** Operations listed in a failure's explanation; the most recent ones are kept. */
const EXPLANATION_OPS_MAX = 24;

/**
 * Checks that `history` is linearizable with respect to `model`. Throws
 * `SearchBudgetExhaustedError` when more than `maxSteps` search steps would be needed, and a
 * `RangeError` for a malformed operation (call not finite, or ret before call).
 */
export function checkLinearizable<S, In, Out>(
  model: Model<S, In, Out>,
  history: Operation<In, Out>[],
  opts?: { maxSteps?: number },
): CheckResult {
  const budget = { steps: 0, max: opts?.maxSteps ?? SEARCH_STEPS_MAX_DEFAULT };
  for (const [partition, ops] of partitionHistory(model, history)) {
    if (search(model, ops, budget, partition)) continue;
    return { ok: false, partition, explanation: explain(model, ops, partition, budget.max) };
  }
  return { ok: true };
}

function partitionHistory<S, In, Out>(model: Model<S, In, Out>, history: Operation<In, Out>[]): Map<string, Operation<In, Out>[]> {
  const partitions = new Map<string, Operation<In, Out>[]>();
  for (const op of history) {
    if (!Number.isFinite(op.call)) throw new RangeError(`operation call time must be finite: ${describe(op)}`);
    if (!(op.ret >= op.call)) throw new RangeError(`operation returns before it is called: ${describe(op)}`);
    const key = model.partition ? model.partition(op.input) : '';
    const ops = partitions.get(key);
    if (ops) ops.push(op);
    else partitions.set(key, [op]);
  }
  return partitions;
}

/** A call or return event; `op` indexes the partition's operations. */
interface Entry {
  readonly op: number;
  readonly time: number;
  /** The return entry, on a call entry; null on a return entry. */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

/** Builds the time-ordered entry list and returns its head, a sentinel. */
function buildEntries(ops: readonly Operation<unknown, unknown>[]): Entry {
  const entries: { entry: Entry; isCall: boolean }[] = [];
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const ret: Entry = { op: i, time: op.ret, match: null, prev: null, next: null };
    const call: Entry = { op: i, time: op.call, match: ret, prev: null, next: null };
    entries.push({ entry: call, isCall: true }, { entry: ret, isCall: false });
  }
  // Array.prototype.sort is stable, so equal entries keep operation order: deterministic.
  entries.sort((a, b) => a.entry.time - b.entry.time || (a.isCall === b.isCall ? 0 : a.isCall ? -1 : 1));
  const head: Entry = { op: -1, time: -Infinity, match: null, prev: null, next: null };
  let last = head;
  for (const { entry } of entries) {
    last.next = entry;
    entry.prev = last;
    last = entry;
  }
  return head;
}

/** Removes a call entry and its return entry from the list. */
function lift(call: Entry): void {
  call.prev!.next = call.next;
  call.next!.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

/** Puts back what `lift(call)` removed; calls must be unlifted in reverse order. */
function unlift(call: Entry): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  call.next!.prev = call;
}

/** A deterministic 32-bit mix (splitmix32's finaliser), for the bitset's Zobrist hash. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x21f0aaad);
  x = Math.imul(x ^ (x >>> 15), 0x735a2d97);
  return (x ^ (x >>> 15)) >>> 0;
}

/**
 * Whether `seen` subsumes `current`: the same completed operations linearized (bits under
 * `completedMask`), and no unknown-outcome operation linearized that `current` has not.
 */
function subsumes(seen: Uint32Array, current: Uint32Array, completedMask: Uint32Array): boolean {
  for (let w = 0; w < seen.length; w++) {
    const a = seen[w]!;
    const b = current[w]!;
    if ((a & ~b) !== 0 || ((a ^ b) & completedMask[w]!) !== 0) return false;
  }
  return true;
}

/**
 * Searches for a linearization of one partition's operations; true when one exists.
 *
 * Besides Lowe's memoisation of (linearized set, state) pairs, a pair is pruned when an
 * explored one subsumes it: same state, same completed operations, and a subset of its
 * unknown-outcome ones. Those are optional, so leaving one out keeps every option open.
 */
function search<S, In, Out>(
  model: Model<S, In, Out>,
  ops: readonly Operation<In, Out>[],
  budget: { steps: number; max: number },
  partition: string,
): boolean {
  let completedLeft = 0;
  for (const op of ops) if (op.ret !== Infinity) completedLeft++;
  if (completedLeft === 0) return true;

  const head = buildEntries(ops);
  // The linearized set as a bitset. The cache key holds an incremental 64-bit Zobrist hash
  // (two 32-bit halves) of its completed part, so it needs no pass over the bitset; entries
  // under a key are confirmed with `subsumes`, so a hash collision cannot prune wrongly.
  const words = (ops.length + 31) >>> 5;
  const linearized = new Uint32Array(words);
  const completedMask = new Uint32Array(words);
  for (let i = 0; i < ops.length; i++) if (ops[i]!.ret !== Infinity) completedMask[i >>> 5]! |= 1 << (i & 31);
  let hashLo = 0;
  let hashHi = 0;
  const cache = new Map<string, Uint32Array[]>();
  const stack: { call: Entry; state: S }[] = [];
  let state = model.init();
  // Some completed operation is not linearized yet, and its return entry is still in the list,
  // before every unknown-outcome return (those sit at +Infinity): the scan never runs off the end.
  let entry = head.next!;

  for (;;) {
    if (++budget.steps > budget.max) throw new SearchBudgetExhaustedError(partition, budget.max);
    if (entry.match === null) {
      // The operation returning here is not linearized: undo the latest choice.
      const top = stack.pop();
      if (top === undefined) return false;
      const i = top.call.op;
      linearized[i >>> 5]! &= ~(1 << (i & 31));
      if (ops[i]!.ret !== Infinity) {
        hashLo ^= mix32(2 * i + 1);
        hashHi ^= mix32(2 * i + 2);
        completedLeft++;
      }
      state = top.state;
      unlift(top.call);
      entry = top.call.next!;
      continue;
    }

    const i = entry.op;
    const op = ops[i]!;
    const known = op.ret !== Infinity;
    const { ok, next } = model.step(state, op.input, known ? op.output : undefined);
    if (!ok) {
      entry = entry.next!;
      continue;
    }
    const word = i >>> 5;
    const bit = 1 << (i & 31);
    linearized[word]! |= bit;
    if (known) {
      hashLo ^= mix32(2 * i + 1);
      hashHi ^= mix32(2 * i + 2);
    }
    const key = `${hashLo}.${hashHi}|${model.hash(next)}`;
    const seen = cache.get(key);
    if (seen === undefined) {
      cache.set(key, [linearized.slice()]);
    } else if (!seen.some((b) => subsumes(b, linearized, completedMask))) {
      // Keep the entries an antichain: drop those the new one subsumes.
      const kept = seen.filter((b) => !subsumes(linearized, b, completedMask));
      kept.push(linearized.slice());
      cache.set(key, kept);
    } else {
      linearized[word]! &= ~bit;
      if (known) {
        hashLo ^= mix32(2 * i + 1);
        hashHi ^= mix32(2 * i + 2);
      }
      entry = entry.next!;
      continue;
    }
    stack.push({ call: entry, state });
    state = next;
    lift(entry);
    if (known && --completedLeft === 0) return true;
    entry = head.next!;
  }
}

/**
 * The history as observed at time `cut`: operations called by then, and those that had not
 * returned by then turned into unknown-outcome ones.
 */
function prefixAt<In, Out>(ops: readonly Operation<In, Out>[], cut: number): Operation<In, Out>[] {
  const prefix: Operation<In, Out>[] = [];
  for (const op of ops) {
    if (op.call > cut) continue;
    prefix.push(op.ret <= cut ? op : { ...op, ret: Infinity });
  }
  return prefix;
}

/**
 * Describes why a partition is not linearizable: the shortest failing prefix, found by
 * bisection over return times (linearizability is prefix-closed, so failure is monotone in
 * the cut), and its most recent operations.
 */
function explain<S, In, Out>(model: Model<S, In, Out>, ops: readonly Operation<In, Out>[], partition: string, stepsMax: number): string {
  const cuts = [...new Set(ops.map((op) => op.ret).filter((t) => t !== Infinity))].sort((a, b) => a - b);
  let lo = 0;
  let hi = cuts.length - 1; // the full history fails, and so does its prefix at the last return
  try {
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const budget = { steps: 0, max: stepsMax };
      if (search(model, prefixAt(ops, cuts[mid]!), budget, partition)) lo = mid + 1;
      else hi = mid;
    }
  } catch (err) {
    if (!(err instanceof SearchBudgetExhaustedError)) throw err;
    hi = cuts.length - 1; // bisection gave up: fall back to the whole history
  }
  const cut = cuts[hi]!;
  const prefix = prefixAt(ops, cut).sort((a, b) => a.call - b.call);
  const culprits = ops.filter((op) => op.ret === cut);
  const shown = prefix.slice(-EXPLANATION_OPS_MAX);
  const lines = [
    `partition ${JSON.stringify(partition)} is not linearizable.`,
    `The shortest non-linearizable prefix ends at t=${cut}, when this returned:`,
    ...culprits.map((op) => `  ${describe(op)}`),
    `Operations called by t=${cut} (${prefix.length}; "?" = had not returned by then):`,
  ];
  if (shown.length < prefix.length) lines.push(`  ... ${prefix.length - shown.length} earlier operations`);
  for (const op of shown) lines.push(`  ${describe(op)}`);
  return lines.join('\n');
}

function describe(op: Operation<unknown, unknown>): string {
  const ret = op.ret === Infinity ? '?' : String(op.ret);
  const output = op.ret === Infinity ? '?' : JSON.stringify(op.output);
  return `[${op.call}, ${ret}] client ${op.clientId}: ${JSON.stringify(op.input)} -> ${output}`;
}

// ---- The key/value model ----

export type KvInput =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'get'; key: string }
  | { kind: 'cas'; key: string; expect: string | null; value: string };
export type KvOutput = { value: string | null } | Record<string, never> | { ok: boolean };

/**
 * A register per key. A state is one key's value (null: never written), which is enough
 * because the model partitions by key, so each search sees a single key.
 */
export const kvModel: Model<string | null, KvInput, KvOutput> = {
  init: () => null,
  step(state, input, output) {
    switch (input.kind) {
      case 'put':
        return { ok: true, next: input.value };
      case 'get':
        return { ok: output === undefined || ('value' in output && output.value === state), next: state };
      case 'cas': {
        const swapped = state === input.expect;
        const ok = output === undefined || ('ok' in output && output.ok === swapped);
        return { ok, next: swapped ? input.value : state };
      }
    }
  },
  hash: (state) => (state === null ? '' : `=${state}`),
  partition: (input) => input.key,
};
