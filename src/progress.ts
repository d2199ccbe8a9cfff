/**
 * Progress of long operator work (verifying an archive, pruning), on stderr by default.
 *
 * On a terminal (`out.isTTY`) one line is redrawn in place:
 *
 *     verifying 12/40 objects [======              ] 30%
 *
 * Anywhere else (a pipe, a log file) a plain line is written at most every
 * PROGRESS_LOG_INTERVAL_MS, and once more by `done()`, so logs stay short:
 *
 *     verifying 12/40 objects (30%)
 *
 * ```ts
 * const progress = createProgress('verifying', objects.length);
 * for (const [i, o] of objects.entries()) {
 *   await check(o);
 *   progress.update(i + 1);
 * }
 * progress.done();
 * ```
 */

/** Where progress goes: a writable stream, told whether it is a terminal. */
export interface ProgressOut {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface Progress {
  /** `done` units of the total are finished (clamped to 0..total). Cheap: call it often. */
  update(done: number): void;
  /** Writes the final state (ending the redrawn line on a terminal). Call once, at the end. */
  done(): void;
}

export interface ProgressOptions {
  /** What is counted, after the numbers (default `objects`). */
  readonly unit?: string;
  /** Clock, for tests (default Date.now). */
  readonly now?: () => number;
}

/** Shortest time between two plain lines when `out` is not a terminal. */
export const PROGRESS_LOG_INTERVAL_MS = 5_000;
/** Shortest time between two redraws on a terminal. */
export const PROGRESS_REDRAW_INTERVAL_MS = 100;
/** Characters inside the bar's brackets. */
const BAR_WIDTH = 20;

/**
 * A gate that opens at most once every `ms`: `due()` is true when `ms` have passed since it
 * last was (at once on the first call with `leading`, else `ms` after the gate was made).
 * For progress lines of long work, so logs stay short.
 */
export function every(ms: number, now: () => number = Date.now, leading = true): () => boolean {
  let last = leading ? -Infinity : now();
  return () => {
    const t = now();
    if (t - last < ms) return false;
    last = t;
    return true;
  };
}

/**
 * A reporter of `label` over `total` units to `out` (default process.stderr). Nothing is
 * written before the first `update` on a terminal, nor before PROGRESS_LOG_INTERVAL_MS
 * elsewhere; `done()` always writes the final line.
 */
export function createProgress(label: string, total: number, out: ProgressOut = process.stderr, opts: ProgressOptions = {}): Progress {
  const unit = opts.unit ?? 'objects';
  const now = opts.now ?? Date.now;
  const tty = out.isTTY === true;
  let current = 0;
  const due = every(tty ? PROGRESS_REDRAW_INTERVAL_MS : PROGRESS_LOG_INTERVAL_MS, now, tty);
  let finished = false;

  const percent = (): number => (total <= 0 ? 100 : Math.floor((current / total) * 100));
  const counts = (): string => `${label} ${current}/${total} ${unit}`;
  const write = (): void => {
    if (tty) {
      const filled = total <= 0 ? BAR_WIDTH : Math.floor((current / total) * BAR_WIDTH);
      // \r back to the line's start, \x1b[K clears what a longer previous line left.
      out.write(`\r${counts()} [${'='.repeat(filled)}${' '.repeat(BAR_WIDTH - filled)}] ${percent()}%\x1b[K`);
    } else {
      out.write(`${counts()} (${percent()}%)\n`);
    }
  };

  return {
    update(done: number): void {
      if (finished) return;
      current = Math.max(0, Math.min(total, done));
      if (due()) write();
    },
    done(): void {
      if (finished) return;
      finished = true;
      write();
      if (tty) out.write('\n');
    },
  };
}
