/**
 * A node's log and state machine, opened together in one LMDB environment:
 *
 * ```ts
 * const stores = openStores('./pangea-data', { genesis });   // genesis: set once, on a new dir
 * const loaded = stores.log.load();
 * const { point } = stores.state.applied();
 * // ... run the node ...
 * await stores.close();
 * ```
 */
import type { LogPoint } from './consensus/index.js';
import { LmdbLogStore, type LmdbLogOptions } from './log/lmdb.js';
import { LmdbStateStore, type ApplyRules } from './state/kv.js';
import { openEnv } from './storage/env.js';

export interface OpenStoresOptions extends LmdbLogOptions {
  /** The point a brand-new node starts from (its epochs name the first configuration).
   *  Written once, when the data dir has no state yet; ignored afterwards. */
  readonly genesis?: LogPoint;
  /** How apply behaves (kv.ts ApplyRules): tests build older and newer ones. */
  readonly rules?: ApplyRules;
}

export interface Stores {
  readonly log: LmdbLogStore;
  readonly state: LmdbStateStore;
  /** Closes both stores (waiting for queued log writes), then the environment. */
  close(): Promise<void>;
}

export function openStores(dir: string, opts: OpenStoresOptions = {}): Stores {
  const env = openEnv(dir);
  // The environment closes when both stores have closed, whichever closes first.
  let open = 2;
  const release = async (): Promise<void> => {
    if (--open === 0) await env.root.close();
  };
  const log = new LmdbLogStore(env, opts, release);
  let state: LmdbStateStore;
  try {
    state = new LmdbStateStore(env, release, opts.rules);
  } catch (e) {
    // A state this build cannot apply (kv.ts ApplyHalt): nothing stays open.
    void log.close();
    void release();
    throw e;
  }
  // The applies held back ride in the log's next transaction (one fsync for both).
  log.beforeHandOver = () => state.handOver();
  if (opts.genesis !== undefined && !state.bootstrapped()) state.bootstrap(opts.genesis);
  return {
    log,
    state,
    close: async () => {
      await state.close();
      await log.close();
    },
  };
}
