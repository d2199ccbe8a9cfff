/**
 * The leader's share of building indexes (API contract, "Collections"): while an index is
 * `building`, the leader proposes `index_backfill` steps, one at a time, each with the
 * cursor the index is at (state/records.ts decides everything at apply: a step with a stale
 * cursor, proposed by a leader that lost its lead, changes nothing). Each step is bounded at
 * apply (BACKFILL_RECORDS_MAX records, BACKFILL_BYTES_MAX bytes), so client writes interleave
 * with the build; the next step goes as soon as the last one applied.
 */
import type { ApplyResult, CollectionCmd } from './state/command.js';

export const BACKFILL_TICK_MS = 100;

export type BackfillStep = Extract<CollectionCmd, { t: 'index_backfill' }>;

export interface IndexBuilderParts {
  /** Proposes a step and resolves once it has applied here. */
  readonly write: (op: BackfillStep) => Promise<ApplyResult>;
  readonly leads: () => boolean;
  /** The next step to take (an index being built, at its cursor), or null. */
  readonly next: () => BackfillStep | null;
  readonly tickMs?: number;
}

export class IndexBuilder {
  private timer: ReturnType<typeof setInterval> | null = null;
  private busy = false;
  /** Steps this node proposed (for /metrics). */
  steps = 0;

  constructor(private readonly parts: IndexBuilderParts) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.parts.tickMs ?? BACKFILL_TICK_MS);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private tick(): void {
    if (this.busy || this.timer === null || !this.parts.leads()) return;
    const step = this.parts.next();
    if (step === null) return;
    this.busy = true;
    this.steps++;
    this.parts.write(step).then(
      () => {
        this.busy = false;
        setImmediate(() => this.tick()); // the next step at once
      },
      () => (this.busy = false), // the next tick tries again
    );
  }
}
