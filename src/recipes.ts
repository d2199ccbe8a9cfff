/**
 * What etcd users reach for after get and put, built only on the public API (client.ts):
 * a lease that keeps itself alive, a mutex with fencing revisions, and leader election with
 * observation. They follow etcd's `concurrency` package:
 *
 * - A contender creates one key under the lock's prefix, `<name>/<lease id>`, on its lease,
 *   once (a txn that creates it only if absent, so a retry finds its own key). The key's
 *   revision, the index that created it, orders the contenders.
 * - A contender holds the lock once no key under the prefix has a lower revision. Until
 *   then it watches the key just before its own and looks again when that one is deleted
 *   (by its owner, or by the cluster when the owner's lease expires). Nobody is woken but the
 *   next in line.
 * - The revision is a fencing token: every later holder has a higher one, so a resource that
 *   remembers the highest token it saw can refuse a holder that lost the lock without
 *   knowing (a paused process whose lease expired).
 */
import { sleep } from './sleep.js';

/** Per call: an `AbortSignal` that gives up on it (as client.ts's CallOptions). */
export interface CallOptions {
  readonly signal?: AbortSignal;
}

interface Item {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
}

/**
 * What the recipes use of PangeaClient (client.ts), which implements it and hands itself
 * over: the recipes are built on the public API only, and client.ts imports them, not the
 * other way round.
 */
export interface RecipeClient {
  grantLease(ttlS: number, opts?: CallOptions): Promise<{ id: string; ttl: number }>;
  keepAliveLease(id: string, opts?: CallOptions): Promise<unknown>;
  revokeLease(id: string, opts?: CallOptions): Promise<unknown>;
  delete(key: string): Promise<unknown>;
  list(opts: { prefix: string; limit: number; after?: string } & CallOptions): Promise<{ items: Item[]; more: boolean; index: number }>;
  txn(
    t: {
      compare: { key: string; target: 'exists'; op: '=='; value: boolean }[];
      success: { op: 'put'; key: string; value: string; lease: string }[];
      failure: { op: 'get'; key: string }[];
    },
    opts?: CallOptions,
  ): Promise<{ results: readonly object[] }>;
  watch(opts: { key?: string; prefix?: string; after: number; values?: boolean; signal?: AbortSignal }): AsyncGenerator<{ index: number; changes: readonly { type: 'put' | 'delete' | 'block' | 'provider'; key: string; value?: Uint8Array }[] }>;
}

/** An error of a recipe, shaped as client.ts's PangeaError (`status` 0, a `code`). */
export class RecipeError extends Error {
  readonly status = 0;
  constructor(
    readonly code: 'lease_not_found' | 'aborted',
    message: string,
  ) {
    super(message);
    this.name = 'PangeaError';
  }
}

const isLeaseNotFound = (e: unknown): boolean => (e as { code?: unknown } | null)?.code === 'lease_not_found';

/**
 * A lease kept alive every third of its TTL until `revoke()` or `close()`. `lost` resolves
 * (never rejects) if it ends otherwise: the cluster says it expired, or no keep-alive got
 * through for a whole TTL (then it may have expired, and whatever it guarded must be
 * treated as gone).
 */
export class Lease {
  readonly lost: Promise<Error>;
  private lose!: (why: Error) => void;
  private readonly stop = new AbortController();
  private renewedAt = Date.now();

  static async grant(client: RecipeClient, ttlS: number, opts: CallOptions = {}): Promise<Lease> {
    const g = await client.grantLease(ttlS, opts);
    return new Lease(client, g.id, g.ttl);
  }

  constructor(
    private readonly client: RecipeClient,
    readonly id: string,
    /** Seconds. */
    readonly ttl: number,
  ) {
    this.lost = new Promise<Error>((resolve) => (this.lose = resolve));
    void this.keepAlive();
  }

  get closed(): boolean {
    return this.stop.signal.aborted;
  }

  private async keepAlive(): Promise<void> {
    const periodMs = (this.ttl * 1000) / 3;
    let waitMs = periodMs;
    while (!this.stop.signal.aborted) {
      await sleep(waitMs, this.stop.signal).catch(() => undefined);
      if (this.stop.signal.aborted) return;
      const sent = Date.now();
      try {
        await this.client.keepAliveLease(this.id, { signal: AbortSignal.any([this.stop.signal, AbortSignal.timeout(Math.ceil(periodMs))]) });
        this.renewedAt = sent;
        waitMs = periodMs;
      } catch (e) {
        if (this.stop.signal.aborted) return;
        if (isLeaseNotFound(e)) return this.end(new Error(`lease ${this.id} expired`));
        if (Date.now() - this.renewedAt >= this.ttl * 1000) return this.end(new Error(`lease ${this.id}: no keep-alive got through for its TTL of ${this.ttl} s (${(e as Error).message})`));
        waitMs = Math.min(500, periodMs); // try again soon
      }
    }
  }

  private end(why: Error): void {
    this.stop.abort();
    this.lose(why);
  }

  /** Stops renewing and revokes the lease, deleting its keys. */
  async revoke(): Promise<void> {
    this.stop.abort();
    await this.client.revokeLease(this.id);
  }

  /** Stops renewing: the lease expires after its TTL. */
  close(): void {
    this.stop.abort();
  }
}

export interface LockOptions extends CallOptions {
  /** The lease's TTL in seconds when the lock makes its own (default 10). */
  readonly ttl?: number;
  /** A lease to hold the lock on (kept alive by its owner, not revoked by `unlock`). The
   *  contender's key is named by the lease, so one lease contends once per name: two
   *  acquires of one name on one lease would share a key, and both hold it (as in etcd). */
  readonly lease?: Lease;
  /** What the contender's key holds (an election's candidate value). */
  readonly value?: string;
}

/** A held lock (or won election): its key, its fencing revision and its lease. */
export class Lock {
  private constructor(
    private readonly client: RecipeClient,
    readonly key: string,
    /** The fencing token: higher for every later holder. */
    readonly revision: number,
    readonly lease: Lease,
    private readonly ownsLease: boolean,
  ) {}

  /** Resolves when the lock is lost without `unlock` (its lease ended). */
  get lost(): Promise<Error> {
    return this.lease.lost;
  }

  /** Waits until `name` is free and takes it (see the top of this file). */
  static async acquire(client: RecipeClient, name: string, opts: LockOptions = {}): Promise<Lock> {
    const lease = opts.lease ?? (await Lease.grant(client, opts.ttl ?? 10, opts));
    const prefix = name.endsWith('/') ? name : `${name}/`;
    const key = `${prefix}${lease.id}`;
    // Rejects once the lease is lost; handled here so that a loss after the race is no one's
    // unhandled rejection.
    const lost = lease.lost.then((e) => Promise.reject(e));
    lost.catch(() => undefined);
    try {
      const created = await client.txn(
        { compare: [{ key, target: 'exists', op: '==', value: false }], success: [{ op: 'put', key, value: opts.value ?? '', lease: lease.id }], failure: [{ op: 'get', key }] },
        opts,
      );
      const revision = (created.results[0] as { revision: number | null }).revision;
      if (revision === null) throw new RecipeError('lease_not_found', `lock ${name}: its key ${key} vanished (lease ${lease.id} expired)`);
      for (;;) {
        const { items, index } = await listAll(client, prefix, opts);
        if (!items.some((i) => i.key === key)) throw new RecipeError('lease_not_found', `lock ${name}: its key ${key} vanished (lease ${lease.id} expired)`);
        const before = items.filter((i) => i.revision < revision);
        if (before.length === 0) return new Lock(client, key, revision, lease, opts.lease === undefined);
        const next = before.reduce((a, b) => (b.revision > a.revision ? b : a));
        await Promise.race([deleted(client, next.key, index, opts.signal), lost]);
      }
    } catch (e) {
      if (opts.lease === undefined) await lease.revoke().catch(() => undefined);
      else await client.delete(key).catch(() => undefined);
      throw e;
    }
  }

  /** Releases the lock (and revokes the lease it made for itself). */
  async unlock(): Promise<void> {
    if (this.ownsLease) await this.lease.revoke();
    else await this.client.delete(this.key);
  }
}

/** The candidate that leads an election, or null when none does. */
export interface Leader {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
}

/** Leader election on a prefix: the candidate with the lowest revision leads. */
export class Election {
  private readonly prefix: string;

  constructor(
    private readonly client: RecipeClient,
    name: string,
  ) {
    this.prefix = name.endsWith('/') ? name : `${name}/`;
  }

  /** Waits until this candidate leads; `unlock()` on the answer resigns. */
  campaign(value: string, opts: Omit<LockOptions, 'value'> = {}): Promise<Lock> {
    return Lock.acquire(this.client, this.prefix, { ...opts, value });
  }

  async leader(opts: CallOptions = {}): Promise<Leader | null> {
    return lowest((await listAll(this.client, this.prefix, opts)).items);
  }

  /** The leader now, then each time it changes (null while none leads), until `signal`. */
  async *observe(opts: CallOptions = {}): AsyncGenerator<Leader | null> {
    const { items, index } = await listAll(this.client, this.prefix, opts);
    const candidates = new Map(items.map((i) => [i.key, i]));
    let shown = lowest(items);
    yield shown;
    for await (const ev of this.client.watch({ prefix: this.prefix, after: index, ...(opts.signal ? { signal: opts.signal } : {}) })) {
      for (const c of ev.changes) {
        if (c.type === 'put') candidates.set(c.key, { key: c.key, value: c.value ?? new Uint8Array(0), revision: ev.index });
        else candidates.delete(c.key);
      }
      const now = lowest([...candidates.values()]);
      if (now?.key !== shown?.key || now?.revision !== shown?.revision) {
        shown = now;
        yield shown;
      }
    }
  }
}

function lowest(items: readonly Leader[]): Leader | null {
  let best: Leader | null = null;
  for (const i of items) if (best === null || i.revision < best.revision) best = { key: i.key, value: i.value, revision: i.revision };
  return best;
}

/** Every key under `prefix`, page by page, and the first page's read index. Later pages
 *  may be read at later indexes; that is enough here: a key with a revision below a
 *  contender's cannot appear after the contender's key was written. */
async function listAll(client: RecipeClient, prefix: string, opts: CallOptions): Promise<{ items: Item[]; index: number }> {
  const items: Item[] = [];
  let after: string | undefined;
  let index = 0;
  for (;;) {
    const page = await client.list({ prefix, limit: 1000, ...(after !== undefined ? { after } : {}), ...opts });
    if (index === 0) index = page.index;
    items.push(...page.items);
    if (!page.more || page.items.length === 0) return { items, index };
    after = page.items[page.items.length - 1]!.key;
  }
}

/** Resolves once `key` is deleted after index `after` (at once if it is gone by then). */
async function deleted(client: RecipeClient, key: string, after: number, signal?: AbortSignal): Promise<void> {
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const ev of client.watch({ key, after, values: false, signal: stop.signal })) {
      if (ev.changes.some((c) => c.type === 'delete')) return;
    }
    throw new RecipeError('aborted', `waiting for ${key} to go was given up`);
  } finally {
    stop.abort();
    signal?.removeEventListener('abort', onAbort);
  }
}
