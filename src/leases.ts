/**
 * A node's share of the leases (API contract, "Leases"; the state machine's in
 * src/state/kv.ts). Two jobs, each once a tick (`--lease-tick`, 500 ms):
 *
 * - Keep-alives received here go to consensus together as one `lease_keepalive` command, at
 *   most one such command a tick (10,000 leases renewed every 3 s cost about two commands a
 *   second, not 3,333). The first after a quiet tick goes at once, so a lone keep-alive
 *   waits for no timer; each is answered once its command has applied.
 * - The leader proposes a `lease_tick` while leases exist and no tick of its own is in
 *   flight. Its only work is to carry the leader's time: log time then moves while no client
 *   writes, and expired leases are reaped at apply. Expiry is never decided here.
 */
import type { ApplyResult, LeaseOp } from './state/command.js';
import { LEASE_KEEPALIVE_IDS_MAX } from './state/command.js';
import { ServiceError, type KeptAlive } from './net/service.js';

export const LEASE_TICK_MS_DEFAULT = 500;

export interface LeaseKeeperParts {
  /** Proposes a lease command (never refused by the hot-log quota) and resolves once applied. */
  readonly write: (op: LeaseOp) => Promise<ApplyResult>;
  readonly leads: () => boolean;
  readonly hasLeases: () => boolean;
  readonly tickMs?: number;
}

interface Waiter {
  readonly ids: readonly number[];
  readonly resolve: (k: KeptAlive[]) => void;
  readonly reject: (err: unknown) => void;
}

export class LeaseKeeper {
  private readonly tickMs: number;
  private timer: ReturnType<typeof setInterval> | null = null;
  private waiting: Waiter[] = [];
  /** When the last keep-alive command was proposed, and the flush scheduled, if any. */
  private flushedAt = -Infinity;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private ticking = false;
  /** Counters for /metrics. */
  readonly counts = { keepalives: 0, keepaliveCommands: 0, ticks: 0 };

  constructor(private readonly parts: LeaseKeeperParts) {
    this.tickMs = parts.tickMs ?? LEASE_TICK_MS_DEFAULT;
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.tickMs);
    this.timer.unref?.();
  }

  /** Stops ticking; keep-alives still waiting are refused with `err`. */
  stop(err: Error): void {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.timer = null;
    this.flushTimer = null;
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) w.reject(err);
  }

  /** Renews leases `ids` (at most LEASE_KEEPALIVE_IDS_MAX) with the next keep-alive
   *  command; answers one KeptAlive per id, in order. */
  keepAlive(ids: readonly number[]): Promise<KeptAlive[]> {
    return new Promise<KeptAlive[]>((resolve, reject) => {
      if (this.timer === null) return reject(new ServiceError('unavailable', 'the node is not running'));
      if (ids.length > LEASE_KEEPALIVE_IDS_MAX) return reject(new Error(`at most ${LEASE_KEEPALIVE_IDS_MAX} keep-alives at once`));
      this.waiting.push({ ids, resolve, reject });
      if (this.flushTimer !== null) return;
      const waitMs = Math.max(0, this.flushedAt + this.tickMs - performance.now());
      this.flushTimer = setTimeout(() => this.flush(), waitMs);
      this.flushTimer.unref?.();
    });
  }

  private flush(): void {
    this.flushTimer = null;
    this.flushedAt = performance.now();
    while (this.waiting.length > 0) {
      // Whole requests, up to LEASE_KEEPALIVE_IDS_MAX ids a command.
      let n = 0;
      let count = 0;
      while (n < this.waiting.length && (n === 0 || count + this.waiting[n]!.ids.length <= LEASE_KEEPALIVE_IDS_MAX)) count += this.waiting[n++]!.ids.length;
      const batch = this.waiting.splice(0, n);
      this.counts.keepalives += count;
      this.counts.keepaliveCommands++;
      this.parts.write({ t: 'lease_keepalive', ids: batch.flatMap((w) => w.ids) }).then(
        (r) => {
          if (r.kind !== 'lease_kept') throw new Error(`a keep-alive applied as ${r.kind}`);
          let at = 0;
          for (const w of batch) w.resolve(w.ids.map(() => ({ index: r.index, ttlMs: r.ttls[at++] ?? null })));
        },
        (err: unknown) => batch.forEach((w) => w.reject(err)),
      ).catch((err: unknown) => batch.forEach((w) => w.reject(err)));
    }
  }

  private tick(): void {
    if (this.ticking || !this.parts.leads() || !this.parts.hasLeases()) return;
    this.ticking = true;
    this.counts.ticks++;
    this.parts.write({ t: 'lease_tick' }).then(
      () => (this.ticking = false),
      () => (this.ticking = false), // the next tick tries again
    );
  }
}
