/**
 * `pangea soak`: watches a running node through its diagnostics endpoints (`/readyz` and
 * `/metrics`) and names what makes it unhealthy.
 *
 * The judgement is pure: {@link SoakEvaluator} takes successive {@link Sample}s and returns
 * the problems each one reveals. {@link runSoak} is the polling loop around it; its fetch,
 * clock and sleep can be replaced (tests drive it with fakes).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { parseDuration as parseAnyDuration } from './duration.js';

/** Metric names the soak reads. A metric the node does not export counts as absent. */
export const METRIC = {
  /** gauge: peers this node is connected to */
  peersConnected: 'pangea_peers_connected',
  /** gauge: index of the last command known chosen */
  commitIndex: 'pangea_commit_index',
  /** gauge: writes handed to consensus and not yet answered */
  pendingWrites: 'pangea_pending_writes',
  /** gauge (any labels; the largest counts): the highest index a peer is known to have */
  peerBestIndex: 'pangea_peer_best_index',
  /** counter by `source`: blocksync responses served */
  blocksyncServed: 'pangea_blocksync_served_total',
} as const;

/** Label selecting the cold-storage responses of {@link METRIC.blocksyncServed}. */
export const COLD_SOURCE = { source: 'cold' } as const;

/**
 * Error counters that must not rise during a soak. An absent counter counts as 0. Each may
 * have a companion gauge named by {@link lastErrorInfoName} whose `error` label is the text of
 * the last error.
 */
export const ERROR_COUNTERS = [
  'pangea_archive_errors_total',
  'pangea_prune_errors_total',
  'pangea_blocksync_cold_read_errors_total',
] as const;

/** `pangea_archive_errors_total` -> `pangea_archive_last_error_info`. */
export function lastErrorInfoName(counter: string): string {
  return counter.replace(/_errors_total$/, '_last_error_info');
}

/** How long one GET may take before the sample counts it as failed. */
export const REQUEST_TIMEOUT_MS = 5_000;
/** Most characters of a response body or error text quoted in a message. */
export const MAX_DETAIL_CHARS = 200;

// ---------------------------------------------------------------------------------------------
// Durations

/** A duration flag (`30s`, `5m`, `1h30m`: the grammar of every flag, src/duration.ts). */
export function parseDuration(text: string, what = 'the duration'): number {
  return parseAnyDuration(text.trim(), what);
}

/** Milliseconds as `250ms`, `1.5s`, `5m`, `1h2m3s`: for messages, not for parseDuration. */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1_000).toFixed(1))}s`;
  const total = Math.round(ms / 1_000);
  const h = Math.floor(total / 3_600);
  const m = Math.floor((total % 3_600) / 60);
  const s = total % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format

/** One line of a Prometheus text page: a metric name, its labels and its value. */
export interface Series {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A parsed `/metrics` page, looked up by metric name and label subset. */
export class Metrics {
  private readonly byName = new Map<string, Series[]>();

  constructor(series: readonly Series[]) {
    for (const s of series) {
      const list = this.byName.get(s.name);
      if (list) list.push(s);
      else this.byName.set(s.name, [s]);
    }
  }

  /** Every series named `name` whose labels include all of `match`, NaN values left out. */
  select(name: string, match: Readonly<Record<string, string>> = {}): Series[] {
    return (this.byName.get(name) ?? []).filter(
      (s) => !Number.isNaN(s.value) && Object.entries(match).every(([k, v]) => s.labels[k] === v),
    );
  }

  /** Sum of the selected series (counters split by labels); undefined when none. */
  sum(name: string, match: Readonly<Record<string, string>> = {}): number | undefined {
    const found = this.select(name, match);
    return found.length ? found.reduce((a, s) => a + s.value, 0) : undefined;
  }

  /** Largest of the selected series (gauges); undefined when none. */
  max(name: string, match: Readonly<Record<string, string>> = {}): number | undefined {
    const found = this.select(name, match);
    return found.length ? found.reduce((a, s) => Math.max(a, s.value), -Infinity) : undefined;
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const LABEL_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\', '"': '"', n: '\n' };

/**
 * Parses the Prometheus text exposition format. `# HELP`, `# TYPE` and other comment lines
 * are skipped, as is any line that is not `name{labels} value [timestamp]`; values may be
 * `NaN`, `+Inf` and `-Inf`. Never throws.
 */
export function parseMetrics(text: string): Metrics {
  const series: Series[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = parseSeriesLine(line);
    if (s) series.push(s);
  }
  return new Metrics(series);
}

function parseSeriesLine(line: string): Series | null {
  const name = NAME.exec(line)?.[0];
  if (!name) return null;
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1).trimStart();
    while (!rest.startsWith('}')) {
      const key = LABEL_NAME.exec(rest)?.[0];
      if (!key) return null;
      rest = rest.slice(key.length).trimStart();
      if (!rest.startsWith('=')) return null;
      rest = rest.slice(1).trimStart();
      if (!rest.startsWith('"')) return null;
      let value = '';
      let i = 1;
      for (; i < rest.length && rest[i] !== '"'; i++) {
        if (rest[i] === '\\') {
          const escaped = rest[++i];
          if (escaped === undefined) return null;
          value += LABEL_ESCAPES[escaped] ?? `\\${escaped}`;
        } else {
          value += rest[i];
        }
      }
      if (i >= rest.length) return null;
      labels[key] = value;
      rest = rest.slice(i + 1).trimStart();
      if (rest.startsWith(',')) rest = rest.slice(1).trimStart();
      else if (!rest.startsWith('}')) return null;
    }
    rest = rest.slice(1);
  }
  if (!/^\s/.test(rest)) return null;
  const fields = rest.trim().split(/\s+/);
  if (fields.length > 2) return null;
  const value = parseValue(fields[0]!);
  return value === undefined ? null : { name, labels, value };
}

function parseValue(text: string): number | undefined {
  if (text === 'NaN') return NaN;
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  const v = Number(text);
  return text !== '' && !Number.isNaN(v) ? v : undefined;
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/** The result of one GET: its payload, or why it failed, in words. */
export type Fetched<T> = { ok: true; value: T } | { ok: false; why: string };

/** What one poll of the node saw. */
export interface Sample {
  /** Clock reading (ms) when the poll started. */
  at: number;
  /** `/readyz`: ok when it answered 200. */
  readyz: Fetched<null>;
  /** `/metrics`, parsed. */
  metrics: Fetched<Metrics>;
}

/** Thresholds of a soak (see the flags of `pangea soak`). */
export interface SoakLimits {
  /** Fewest connected peers allowed; 0: no check. */
  minPeers: number;
  /** Fewest new cold blocksync responses over the whole run; 0: no check. */
  minColdResponsesDelta: number;
  /** Longest the commit index may stand still while there is work it should be doing. */
  stallAfterMs: number;
}

export type Cause = 'readiness' | 'metrics' | 'peers' | 'stall' | 'errors' | 'cold_responses';

/** One reason the node is unhealthy. `message` starts with the cause in words and gives the numbers. */
export interface Problem {
  cause: Cause;
  message: string;
}

/** Where the run stands, for status lines and the summary. */
export interface Progress {
  /** Samples taken (good or not). */
  samples: number;
  /** Commit index in the first and the latest sample with metrics; undefined if not exported. */
  firstCommit: number | undefined;
  lastCommit: number | undefined;
  /** Cold blocksync responses served since the first sample with metrics. */
  coldDelta: number;
}

/**
 * Judges successive samples of one node. `add` each sample in order and act on the problems
 * it returns; call `finish` once at the end for the checks that need the whole run.
 *
 * - readiness: `/readyz` not 200, or unreachable; likewise `/metrics`, reported only when
 *   `/readyz` was fine (an unreachable node is one problem, not two);
 * - peers: {@link METRIC.peersConnected} below `minPeers` (absent counts as 0);
 * - stall: {@link METRIC.commitIndex} unchanged for more than `stallAfterMs` during which every
 *   sample had writes pending or a peer ahead of it. The stall is timed from the first sample of
 *   that stretch, so an index that stood still while the node was idle is not held against it;
 * - errors: any {@link ERROR_COUNTERS} higher in the latest sample than in the first;
 * - cold responses (finish): fewer new cold blocksync responses than `minColdResponsesDelta`.
 *
 * Memory stays constant however long the run.
 */
export class SoakEvaluator {
  private samples = 0;
  private first: Metrics | undefined;
  private latest: Metrics | undefined;
  /** The commit index that stands still, and the time of the first sample it stood still with work pending. */
  private stuck: { index: number; since: number } | undefined;

  constructor(private readonly limits: SoakLimits) {}

  /** The problems `sample` shows, given the samples before it. */
  add(sample: Sample): Problem[] {
    this.samples++;
    const problems: Problem[] = [];
    if (!sample.readyz.ok) problems.push({ cause: 'readiness', message: `readiness drop: ${sample.readyz.why}` });
    if (!sample.metrics.ok) {
      if (sample.readyz.ok) problems.push({ cause: 'metrics', message: `metrics unavailable: ${sample.metrics.why}` });
      return problems;
    }
    const m = sample.metrics.value;
    this.first ??= m;
    this.latest = m;
    problems.push(...this.checkPeers(m), ...this.checkStall(sample.at, m), ...this.checkErrorCounters(this.first, m));
    return problems;
  }

  /** The end-of-run checks. */
  finish(): Problem[] {
    const { minColdResponsesDelta } = this.limits;
    const delta = this.progress().coldDelta;
    if (minColdResponsesDelta === 0 || delta >= minColdResponsesDelta) return [];
    return [{
      cause: 'cold_responses',
      message: `too few cold responses: ${METRIC.blocksyncServed}{source="cold"} rose by ${delta}, ` +
        `--min-cold-responses-delta is ${minColdResponsesDelta}`,
    }];
  }

  progress(): Progress {
    const cold = (m: Metrics | undefined): number => m?.sum(METRIC.blocksyncServed, COLD_SOURCE) ?? 0;
    return {
      samples: this.samples,
      firstCommit: this.first?.max(METRIC.commitIndex),
      lastCommit: this.latest?.max(METRIC.commitIndex),
      coldDelta: cold(this.latest) - cold(this.first),
    };
  }

  private checkPeers(m: Metrics): Problem[] {
    const { minPeers } = this.limits;
    if (minPeers === 0) return [];
    const peers = m.max(METRIC.peersConnected);
    if (peers !== undefined && peers >= minPeers) return [];
    const seen = peers === undefined ? 'absent' : `${peers}`;
    return [{ cause: 'peers', message: `too few peers: ${METRIC.peersConnected} is ${seen}, --min-peers is ${minPeers}` }];
  }

  private checkStall(at: number, m: Metrics): Problem[] {
    const index = m.max(METRIC.commitIndex);
    const pending = m.sum(METRIC.pendingWrites) ?? 0;
    const best = m.max(METRIC.peerBestIndex);
    const peerAhead = best !== undefined && index !== undefined && best > index;
    if (index === undefined || (pending <= 0 && !peerAhead)) {
      this.stuck = undefined;
      return [];
    }
    if (this.stuck?.index !== index) this.stuck = { index, since: at };
    const stoodMs = at - this.stuck.since;
    if (stoodMs <= this.limits.stallAfterMs) return [];
    const work = [pending > 0 ? `${METRIC.pendingWrites} ${pending}` : '', peerAhead ? `${METRIC.peerBestIndex} ${best}` : ''];
    return [{
      cause: 'stall',
      message: `commit stalled: ${METRIC.commitIndex} stuck at ${index} for ${formatDuration(stoodMs)} ` +
        `(--stall-after ${formatDuration(this.limits.stallAfterMs)}) with ${work.filter(Boolean).join(' and ')}`,
    }];
  }

  private checkErrorCounters(first: Metrics, latest: Metrics): Problem[] {
    const problems: Problem[] = [];
    for (const counter of ERROR_COUNTERS) {
      const before = first.sum(counter) ?? 0;
      const now = latest.sum(counter) ?? 0;
      if (now <= before) continue;
      const info = latest.select(lastErrorInfoName(counter)).find((s) => s.value !== 0 && s.labels.error !== undefined);
      const last = info ? `; last error: ${clip(info.labels.error!)}` : '';
      problems.push({ cause: 'errors', message: `error counter rose: ${counter} ${before} -> ${now} (+${now - before})${last}` });
    }
    return problems;
  }
}

// ---------------------------------------------------------------------------------------------
// Polling

/** The part of `fetch` the soak uses. */
export type FetchLike = (url: string, init: { signal: AbortSignal }) => Promise<{ status: number; text(): Promise<string> }>;

export interface SoakOptions extends SoakLimits {
  /** Base URL of the node's HTTP or metrics listener, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** How long to poll; one sample is taken at the start and one at the end. */
  durationMs: number;
  /** Time between the starts of successive samples (a slow sample delays the next one). */
  intervalMs: number;
}

export interface SoakDeps {
  fetch: FetchLike;
  /** Milliseconds on a monotonic clock. */
  now(): number;
  /** Resolves after `ms`, or early once `signal` aborts; never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Aborting ends the run early (after the sample in flight), with the end-of-run checks. */
  signal?: AbortSignal;
  /** Receives one status line per sample. */
  report(line: string): void;
}

export interface SoakOutcome {
  /** Empty when the node stayed healthy. */
  problems: Problem[];
  progress: Progress;
  elapsedMs: number;
  /** The run was ended early through `signal`. */
  interrupted: boolean;
}

const systemDeps: SoakDeps = {
  fetch: (url, init) => fetch(url, init),
  now: () => performance.now(),
  sleep: (ms, signal) => delay(ms, undefined, { signal }).catch(() => undefined),
  report: () => undefined,
};

/**
 * Polls `options.url` every `intervalMs` for `durationMs` and stops at the first sample with
 * problems. Resolves (never rejects for the node's sake) with the problems found, if any.
 */
export async function runSoak(options: SoakOptions, deps: Partial<SoakDeps> = {}): Promise<SoakOutcome> {
  const { fetch: get, now, sleep, signal, report } = { ...systemDeps, ...deps };
  const base = options.url.replace(/\/+$/, '');
  const evaluator = new SoakEvaluator(options);
  const start = now();
  const end = start + options.durationMs;
  let next = start;
  const outcome = (problems: Problem[], interrupted: boolean): SoakOutcome =>
    ({ problems, progress: evaluator.progress(), elapsedMs: now() - start, interrupted });
  for (;;) {
    const sample = await takeSample(base, get, now);
    const problems = evaluator.add(sample);
    report(statusLine(sample.at - start, sample, evaluator.progress()));
    if (problems.length) return outcome(problems, false);
    const t = now();
    if (signal?.aborted || t >= end) break;
    next = Math.max(next + options.intervalMs, t);
    await sleep(Math.min(next, end) - t, signal);
  }
  return outcome(evaluator.finish(), signal?.aborted ?? false);
}

/** GETs `/readyz` and `/metrics` of `base` at once. Anything but a 200 counts as failed. */
async function takeSample(base: string, get: FetchLike, now: () => number): Promise<Sample> {
  const at = now();
  const fetchOk = async <T>(path: string, parse: (body: string) => T): Promise<Fetched<T>> => {
    let status: number;
    let body: string;
    try {
      const res = await get(`${base}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      status = res.status;
      body = await res.text();
    } catch (err) {
      return { ok: false, why: `GET ${base}${path} failed: ${failureReason(err)}` };
    }
    return status === 200 ? { ok: true, value: parse(body) } : { ok: false, why: `GET ${path} answered ${status}${bodyDetail(body)}` };
  };
  const [readyz, metrics] = await Promise.all([fetchOk('/readyz', () => null), fetchOk('/metrics', parseMetrics)]);
  return { at, readyz, metrics };
}

/** `: <message>` from a Pangea JSON error body (`{"error":{"message":...}}`), else from the raw text. */
function bodyDetail(body: string): string {
  let text = body;
  try {
    const message = (JSON.parse(body) as { error?: { message?: unknown } }).error?.message;
    if (typeof message === 'string') text = message;
  } catch {
    // not JSON: quote the text itself
  }
  text = clip(text.replace(/\s+/g, ' ').trim());
  return text ? `: ${text}` : '';
}

/** Why a fetch failed: `ECONNREFUSED` and the like rather than undici's "fetch failed". */
function failureReason(err: unknown): string {
  if (!(err instanceof Error)) return clip(String(err));
  if (err.name === 'TimeoutError') return `no answer within ${formatDuration(REQUEST_TIMEOUT_MS)}`;
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) return clip((cause as NodeJS.ErrnoException).code ?? cause.message);
  return clip(err.message);
}

function clip(text: string): string {
  return text.length > MAX_DETAIL_CHARS ? `${text.slice(0, MAX_DETAIL_CHARS)}...` : text;
}

// ---------------------------------------------------------------------------------------------
// Lines for people

function commitProgress(p: Progress): string {
  if (p.lastCommit === undefined) return 'commit index n/a';
  if (p.firstCommit === undefined) return `commit index ${p.lastCommit}`;
  const delta = p.lastCommit - p.firstCommit;
  return `commit index ${p.firstCommit} -> ${p.lastCommit} (${delta >= 0 ? '+' : ''}${delta})`;
}

/** One line about one sample: `[1.5s] #4 ready, commit index 10 -> 12 (+2), pending 0, peers 2, cold +0`. */
function statusLine(elapsedMs: number, sample: Sample, p: Progress): string {
  const head = `[${formatDuration(elapsedMs)}] #${p.samples}`;
  if (!sample.readyz.ok) return `${head} NOT READY`;
  if (!sample.metrics.ok) return `${head} ready, metrics unavailable`;
  const m = sample.metrics.value;
  const pending = m.sum(METRIC.pendingWrites);
  const peers = m.max(METRIC.peersConnected);
  return `${head} ready, ${commitProgress(p)}, pending ${pending ?? 'n/a'}, peers ${peers ?? 'n/a'}, cold +${p.coldDelta}`;
}

/** The one line a finished run ends with: the summary, or the problems. */
export function outcomeLine(o: SoakOutcome): string {
  const run = `${o.progress.samples} sample${o.progress.samples === 1 ? '' : 's'} over ${formatDuration(o.elapsedMs)}`;
  if (o.problems.length) return `soak failed after ${run}: ${o.problems.map((p) => p.message).join('; ')}`;
  const how = o.interrupted ? 'soak ended early, healthy' : 'soak passed';
  return `${how}: ${run}, ${commitProgress(o.progress)}, cold responses +${o.progress.coldDelta}`;
}
