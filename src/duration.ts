/**
 * The one duration grammar of every flag and config key: `250ms`, `30s`, `5m`, `1h`,
 * `1h30m`, or `0` (whole numbers, units in this order, each at most once).
 */
const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;
const SECOND_MS = 1_000;
const DURATION_UNITS: readonly (readonly [string, number])[] = [['h', HOUR_MS], ['m', MINUTE_MS], ['s', SECOND_MS], ['ms', 1]];
/** Node's timers take a signed 32-bit count of milliseconds (longer delays fire at once):
 *  24 days is a round figure below 2^31 - 1 ms. */
export const DURATION_MS_MAX = 24 * 24 * HOUR_MS;
/** `1h30m`, `5m`, `30s`, `250ms`: whole numbers, units in this order (the groups follow
 *  DURATION_UNITS), each at most once. */
const DURATION = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/;

/** Parses a duration (`250ms`, `30s`, `5m`, `1h`, `1h30m`, or `0`) into milliseconds, at most
 *  DURATION_MS_MAX. `what` names the setting in the error (e.g. `--archive-delay`). */
export function parseDuration(text: string, what: string): number {
  if (text === '0') return 0;
  const m = DURATION.exec(text);
  if (m === null || text === '') throw new Error(`${what} must be a duration like 30s or 5m, not ${JSON.stringify(text)}`);
  const ms = m.slice(1).reduce((sum, n, i) => sum + Number(n ?? 0) * DURATION_UNITS[i]![1], 0);
  if (ms > DURATION_MS_MAX) throw new Error(`${what} must be at most ${formatDuration(DURATION_MS_MAX)}, not ${JSON.stringify(text)}`);
  return ms;
}

/** The shortest text parseDuration reads back as `ms` (a non-negative integer): 90_000 -> `1m30s`. */
export function formatDuration(ms: number): string {
  let rest = ms;
  let text = '';
  for (const [unit, size] of DURATION_UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) text += `${n}${unit}`;
    rest -= n * size;
  }
  return text === '' ? '0' : text;
}
