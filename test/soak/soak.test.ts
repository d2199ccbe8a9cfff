import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import {
  ERROR_COUNTERS,
  formatDuration,
  lastErrorInfoName,
  outcomeLine,
  parseDuration,
  parseMetrics,
  runSoak,
  SoakEvaluator,
  type FetchLike,
  type Problem,
  type Sample,
  type SoakLimits,
} from '../../src/soak.js';

const bin = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));

const LIMITS: SoakLimits = { minPeers: 0, minColdResponsesDelta: 0, stallAfterMs: 30_000 };

/** A sample at `at` seconds with /readyz fine and `text` as the metrics page. */
function sample(atS: number, text: string): Sample {
  return { at: atS * 1_000, readyz: { ok: true, value: null }, metrics: { ok: true, value: parseMetrics(text) } };
}

/** Adds every sample, returning the problems of each. */
function feed(evaluator: SoakEvaluator, samples: Sample[]): Problem[][] {
  return samples.map((s) => evaluator.add(s));
}

/** A metrics page of the core gauges. */
function page(commit: number, pending = 0, extra = ''): string {
  return [
    '# HELP pangea_commit_index Index of the last command known chosen here.',
    '# TYPE pangea_commit_index gauge',
    `pangea_commit_index ${commit}`,
    '# TYPE pangea_pending_writes gauge',
    `pangea_pending_writes ${pending}`,
    extra,
  ].join('\n');
}

describe('durations', () => {
  test('parseDuration reads the grammar of every flag: ms, s, m and h, combined in that order', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('0s'), 0);
    assert.equal(parseDuration(' 2m '), 120_000);
  });

  test('parseDuration rejects anything else, naming the text', () => {
    for (const bad of ['', '5', 's', '5x', '-1s', '1.5s', '30s1m', '1 s', '1e3ms', '.5s']) {
      assert.throws(() => parseDuration(bad), new RegExp(`must be a duration like 30s or 5m, not "${bad.replace('.', '\\.')}"`), bad);
    }
  });

  test('formatDuration', () => {
    assert.equal(formatDuration(250), '250ms');
    assert.equal(formatDuration(1_500), '1.5s');
    assert.equal(formatDuration(30_000), '30s');
    assert.equal(formatDuration(300_000), '5m');
    assert.equal(formatDuration(3_723_000), '1h2m3s');
  });
});

describe('parseMetrics', () => {
  test('skips HELP, TYPE and comments; reads labels, escapes, timestamps and special values', () => {
    const m = parseMetrics([
      '# HELP pangea_blocksync_served_total Responses served, by source.',
      '# TYPE pangea_blocksync_served_total counter',
      '# a comment',
      'pangea_blocksync_served_total{source="cold"} 7',
      'pangea_blocksync_served_total{source="hot",peer="a"} 3 1700000000000',
      'pangea_blocksync_served_total{ source = "hot" , peer="b", } 4',
      'pangea_archive_last_error_info{error="put \\"x\\" failed:\\nslow down \\\\ retry"} 1',
      'weird_values{k="v"} NaN',
      'weird_values{k="w"} +Inf',
      'neg -Inf',
      'sci 1.5e3',
      'colon:name 2',
      '',
    ].join('\r\n'));
    assert.equal(m.sum('pangea_blocksync_served_total', { source: 'cold' }), 7);
    assert.equal(m.sum('pangea_blocksync_served_total', { source: 'hot' }), 7);
    assert.equal(m.sum('pangea_blocksync_served_total'), 14);
    assert.equal(m.max('pangea_blocksync_served_total'), 7);
    assert.equal(m.sum('pangea_blocksync_served_total', { source: 'warm' }), undefined);
    assert.equal(m.select('pangea_archive_last_error_info')[0]?.labels.error, 'put "x" failed:\nslow down \\ retry');
    assert.equal(m.max('weird_values'), Infinity, 'NaN is left out');
    assert.equal(m.sum('weird_values', { k: 'v' }), undefined);
    assert.equal(m.max('neg'), -Infinity);
    assert.equal(m.max('sci'), 1_500);
    assert.equal(m.max('colon:name'), 2);
    assert.equal(m.max('absent'), undefined);
  });

  test('ignores lines it cannot read and keeps the rest', () => {
    const m = parseMetrics([
      'good 1',
      'no_value',
      'bad_value abc',
      'unclosed{a="b" 1',
      'unterminated{a="b} 1',
      'bad_label{1a="b"} 1',
      'unquoted{a=b} 1',
      'glued{a="b"}1',
      'too_many 1 2 3',
      '{a="b"} 1',
      'also_good{} 2',
    ].join('\n'));
    assert.equal(m.max('good'), 1);
    assert.equal(m.max('also_good'), 2);
    for (const name of ['no_value', 'bad_value', 'unclosed', 'unterminated', 'bad_label', 'unquoted', 'glued', 'too_many']) {
      assert.equal(m.max(name), undefined, name);
    }
  });
});

describe('SoakEvaluator', () => {
  test('a healthy run has no problems and reports its progress', () => {
    const e = new SoakEvaluator({ ...LIMITS, minPeers: 2, minColdResponsesDelta: 3 });
    const cold = (n: number): string => `pangea_peers_connected 2\npangea_blocksync_served_total{source="cold"} ${n}\n`;
    const problems = feed(e, [sample(0, page(10, 1, cold(5))), sample(5, page(20, 4, cold(6))), sample(10, page(30, 0, cold(8)))]);
    assert.deepEqual(problems, [[], [], []]);
    assert.deepEqual(e.finish(), []);
    assert.deepEqual(e.progress(), { samples: 3, firstCommit: 10, lastCommit: 30, coldDelta: 3 });
  });

  test('readiness drop: /readyz not 200, or unreachable (one problem, not two)', () => {
    const e = new SoakEvaluator(LIMITS);
    assert.deepEqual(e.add(sample(0, page(1))), []);
    const notReady: Sample = { ...sample(1, page(1)), readyz: { ok: false, why: 'GET /readyz answered 503: not ready' } };
    assert.deepEqual(e.add(notReady), [{ cause: 'readiness', message: 'readiness drop: GET /readyz answered 503: not ready' }]);
    const gone: Sample = {
      at: 2_000,
      readyz: { ok: false, why: 'GET http://h:1/readyz failed: ECONNREFUSED' },
      metrics: { ok: false, why: 'GET http://h:1/metrics failed: ECONNREFUSED' },
    };
    assert.deepEqual(e.add(gone), [{ cause: 'readiness', message: 'readiness drop: GET http://h:1/readyz failed: ECONNREFUSED' }]);
  });

  test('/metrics failing while ready is a problem of its own', () => {
    const e = new SoakEvaluator(LIMITS);
    const s: Sample = { at: 0, readyz: { ok: true, value: null }, metrics: { ok: false, why: 'GET /metrics answered 500' } };
    assert.deepEqual(e.add(s), [{ cause: 'metrics', message: 'metrics unavailable: GET /metrics answered 500' }]);
  });

  test('too few peers, with the numbers; absent counts as 0; --min-peers 0 checks nothing', () => {
    const e = new SoakEvaluator({ ...LIMITS, minPeers: 2 });
    assert.deepEqual(e.add(sample(0, page(1, 0, 'pangea_peers_connected 2'))), []);
    assert.deepEqual(e.add(sample(1, page(1, 0, 'pangea_peers_connected 3'))), []);
    assert.deepEqual(e.add(sample(2, page(1, 0, 'pangea_peers_connected 1'))), [
      { cause: 'peers', message: 'too few peers: pangea_peers_connected is 1, --min-peers is 2' },
    ]);
    assert.deepEqual(e.add(sample(3, page(1))), [
      { cause: 'peers', message: 'too few peers: pangea_peers_connected is absent, --min-peers is 2' },
    ]);
    const off = new SoakEvaluator(LIMITS);
    assert.deepEqual(feed(off, [sample(0, page(1)), sample(1, page(1, 0, 'pangea_peers_connected 0'))]), [[], []]);
  });

  test('stall: commit index still for longer than --stall-after with writes pending', () => {
    const e = new SoakEvaluator(LIMITS);
    const problems = feed(e, [sample(0, page(5, 3)), sample(10, page(5, 3)), sample(30, page(5, 3)), sample(31, page(5, 3))]);
    assert.deepEqual(problems.slice(0, 3), [[], [], []], 'exactly --stall-after is not yet a stall');
    assert.deepEqual(problems[3], [
      { cause: 'stall', message: 'commit stalled: pangea_commit_index stuck at 5 for 31s (--stall-after 30s) with pangea_pending_writes 3' },
    ]);
  });

  test('stall: a peer ahead counts as work (the best of labelled peers); pending absent counts as 0', () => {
    const e = new SoakEvaluator({ ...LIMITS, stallAfterMs: 1_000 });
    const peers = 'pangea_peer_best_index{peer="a"} 9\npangea_peer_best_index{peer="b"} 12\n';
    const problems = feed(e, [sample(0, `pangea_commit_index 10\n${peers}`), sample(2, `pangea_commit_index 10\n${peers}`)]);
    assert.deepEqual(problems, [[], [
      { cause: 'stall', message: 'commit stalled: pangea_commit_index stuck at 10 for 2s (--stall-after 1s) with pangea_peer_best_index 12' },
    ]]);
    const both = new SoakEvaluator({ ...LIMITS, stallAfterMs: 1_000 });
    feed(both, [sample(0, page(10, 1, peers))]);
    assert.match(both.add(sample(2, page(10, 1, peers)))[0]!.message, /with pangea_pending_writes 1 and pangea_peer_best_index 12$/);
  });

  test('stall: an idle node is not stalled, and a stall is timed from when work appeared', () => {
    const e = new SoakEvaluator(LIMITS);
    const idle = 'pangea_peer_best_index 7\n';
    assert.deepEqual(feed(e, [sample(0, page(7, 0, idle)), sample(50, page(7, 0, idle)), sample(100, page(7, 0, idle))]), [[], [], []]);
    assert.deepEqual(feed(e, [sample(110, page(7, 2)), sample(140, page(7, 2))]), [[], []]);
    assert.equal(e.add(sample(141, page(7, 2)))[0]?.cause, 'stall');
  });

  test('stall: an advancing commit index restarts the clock; no commit index, no check', () => {
    const e = new SoakEvaluator(LIMITS);
    const advancing = [0, 20, 40, 60, 80].map((t, i) => sample(t, page(i, 5)));
    assert.deepEqual(feed(e, advancing), [[], [], [], [], []]);
    const none = new SoakEvaluator(LIMITS);
    assert.deepEqual(feed(none, [sample(0, 'pangea_pending_writes 4'), sample(100, 'pangea_pending_writes 4')]), [[], []]);
  });

  test('error counters: a rise between the first and the latest sample, absent counting as 0', () => {
    for (const counter of ERROR_COUNTERS) {
      const e = new SoakEvaluator(LIMITS);
      assert.deepEqual(e.add(sample(0, page(1))), [], counter);
      assert.deepEqual(e.add(sample(1, page(1, 0, `${counter} 0`))), [], counter);
      assert.deepEqual(e.add(sample(2, page(1, 0, `# TYPE ${counter} counter\n${counter} 2`))), [
        { cause: 'errors', message: `error counter rose: ${counter} 0 -> 2 (+2)` },
      ]);
    }
  });

  test('error counters: steady or falling (a restart) is fine; labelled series are summed', () => {
    const e = new SoakEvaluator(LIMITS);
    assert.deepEqual(feed(e, [
      sample(0, page(1, 0, 'pangea_prune_errors_total 4')),
      sample(1, page(1, 0, 'pangea_prune_errors_total 4')),
      sample(2, page(1, 0, 'pangea_prune_errors_total 1')),
    ]), [[], [], []]);
    const labelled = new SoakEvaluator(LIMITS);
    feed(labelled, [sample(0, page(1, 0, 'pangea_archive_errors_total{kind="put"} 1\npangea_archive_errors_total{kind="list"} 1'))]);
    assert.deepEqual(labelled.add(sample(1, page(1, 0, 'pangea_archive_errors_total{kind="put"} 1\npangea_archive_errors_total{kind="list"} 2'))), [
      { cause: 'errors', message: 'error counter rose: pangea_archive_errors_total 2 -> 3 (+1)' },
    ]);
  });

  test('error counters: the text of a *_last_error_info gauge is quoted', () => {
    assert.equal(lastErrorInfoName('pangea_blocksync_cold_read_errors_total'), 'pangea_blocksync_cold_read_last_error_info');
    const e = new SoakEvaluator(LIMITS);
    e.add(sample(0, page(1)));
    const text = [
      'pangea_archive_errors_total 1',
      '# HELP pangea_archive_last_error_info The last archive error, as a label.',
      '# TYPE pangea_archive_last_error_info gauge',
      'pangea_archive_last_error_info{error="S3 PutObject: \\"SlowDown\\""} 1',
      'pangea_blocksync_cold_read_errors_total 3',
      'pangea_blocksync_cold_read_last_error_info{error="shard 2 missing"} 1',
    ].join('\n');
    assert.deepEqual(e.add(sample(1, page(1, 0, text))), [
      { cause: 'errors', message: 'error counter rose: pangea_archive_errors_total 0 -> 1 (+1); last error: S3 PutObject: "SlowDown"' },
      { cause: 'errors', message: 'error counter rose: pangea_blocksync_cold_read_errors_total 0 -> 3 (+3); last error: shard 2 missing' },
    ]);
  });

  test('cold responses: the end-of-run check, only on the cold source; 0 checks nothing', () => {
    const run = (min: number, first: number, last: number): Problem[] => {
      const e = new SoakEvaluator({ ...LIMITS, minColdResponsesDelta: min });
      const served = (n: number): string => `pangea_blocksync_served_total{source="cold"} ${n}\npangea_blocksync_served_total{source="hot"} ${n * 100}`;
      feed(e, [sample(0, page(1, 0, served(first))), sample(1, page(1, 0, served(last)))]);
      return e.finish();
    };
    assert.deepEqual(run(5, 10, 13), [{
      cause: 'cold_responses',
      message: 'too few cold responses: pangea_blocksync_served_total{source="cold"} rose by 3, --min-cold-responses-delta is 5',
    }]);
    assert.deepEqual(run(5, 10, 15), []);
    assert.deepEqual(run(0, 10, 10), []);
    const absent = new SoakEvaluator({ ...LIMITS, minColdResponsesDelta: 1 });
    feed(absent, [sample(0, page(1)), sample(1, page(2))]);
    assert.match(absent.finish()[0]!.message, /rose by 0, --min-cold-responses-delta is 1/);
  });
});

/** A fake node for runSoak with a fake clock: each fetch answers from `pageAt(n)`, n counting samples from 0. */
function fakeDeps(pageAt: (n: number) => { ready: boolean; metrics: string }, sampleMs = 0) {
  let clock = 0;
  let readyzCalls = 0;
  const lines: string[] = [];
  const sleeps: number[] = [];
  const fetch: FetchLike = async (url) => {
    const n = url.endsWith('/readyz') ? readyzCalls++ : readyzCalls - 1;
    clock += sampleMs / 2;
    const p = pageAt(n);
    if (url.endsWith('/readyz')) return { status: p.ready ? 200 : 503, text: async () => '{"error":{"code":"unavailable","message":"not ready"}}' };
    return { status: 200, text: async () => p.metrics };
  };
  return {
    lines,
    sleeps,
    samples: () => readyzCalls,
    deps: {
      fetch,
      now: () => clock,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        clock += ms;
      },
      report: (line: string) => lines.push(line),
    },
  };
}

describe('runSoak with a fake clock', () => {
  const options = { ...LIMITS, url: 'http://node:7070/', durationMs: 1_000, intervalMs: 100 };

  test('samples at the start, every interval and at the end, then summarises', async () => {
    const f = fakeDeps((n) => ({ ready: true, metrics: page(n * 2) }));
    const o = await runSoak(options, f.deps);
    assert.equal(f.samples(), 11);
    assert.deepEqual(o.problems, []);
    assert.equal(o.interrupted, false);
    assert.deepEqual(o.progress, { samples: 11, firstCommit: 0, lastCommit: 20, coldDelta: 0 });
    assert.equal(f.lines.length, 11);
    assert.equal(f.lines[10], '[1s] #11 ready, commit index 0 -> 20 (+20), pending 0, peers n/a, cold +0');
    assert.equal(outcomeLine(o), 'soak passed: 11 samples over 1s, commit index 0 -> 20 (+20), cold responses +0');
  });

  test('a slow sample shortens the next sleep instead of bunching samples up', async () => {
    const f = fakeDeps(() => ({ ready: true, metrics: page(1) }), 30);
    await runSoak(options, f.deps);
    assert.ok(f.sleeps.every((ms) => ms >= 0 && ms <= 70), f.sleeps.join(','));
  });

  test('stops at the first sample with problems', async () => {
    const f = fakeDeps((n) => ({ ready: n < 3, metrics: page(n) }));
    const o = await runSoak(options, f.deps);
    assert.equal(f.samples(), 4);
    assert.deepEqual(o.problems, [{ cause: 'readiness', message: 'readiness drop: GET /readyz answered 503: not ready' }]);
    assert.equal(f.lines[3], '[300ms] #4 NOT READY');
    assert.equal(outcomeLine(o), 'soak failed after 4 samples over 300ms: readiness drop: GET /readyz answered 503: not ready');
  });

  test('an abort ends the run early, with the end-of-run checks', async () => {
    const interrupt = new AbortController();
    const f = fakeDeps((n) => {
      if (n === 2) interrupt.abort();
      return { ready: true, metrics: page(n) };
    });
    const o = await runSoak({ ...options, minColdResponsesDelta: 1 }, { ...f.deps, signal: interrupt.signal });
    assert.equal(f.samples(), 3);
    assert.equal(o.interrupted, true);
    assert.equal(o.problems[0]?.cause, 'cold_responses');
    const healthy = new AbortController();
    healthy.abort();
    const h = await runSoak(options, { ...fakeDeps(() => ({ ready: true, metrics: page(1) })).deps, signal: healthy.signal });
    assert.match(outcomeLine(h), /^soak ended early, healthy: 1 sample over 0ms, commit index 1 -> 1 \(\+0\)/);
  });
});

// ---------------------------------------------------------------------------------------------
// End to end, against a tiny HTTP server that plays a node.

interface FakeNode {
  ready: boolean;
  commit: number;
  pending: number;
  peers: number;
  archiveErrors: number;
  archiveLastError: string | undefined;
  cold: number;
}

function healthyNode(): FakeNode {
  return { ready: true, commit: 100, pending: 0, peers: 2, archiveErrors: 0, archiveLastError: undefined, cold: 0 };
}

function metricsPage(n: FakeNode): string {
  const lines = [
    '# HELP pangea_commit_index Index of the last command known chosen here.',
    '# TYPE pangea_commit_index gauge',
    `pangea_commit_index ${n.commit}`,
    '# TYPE pangea_pending_writes gauge',
    `pangea_pending_writes ${n.pending}`,
    '# TYPE pangea_peers_connected gauge',
    `pangea_peers_connected ${n.peers}`,
    '# TYPE pangea_archive_errors_total counter',
    `pangea_archive_errors_total ${n.archiveErrors}`,
    '# TYPE pangea_blocksync_served_total counter',
    `pangea_blocksync_served_total{source="hot"} 50`,
    `pangea_blocksync_served_total{source="cold"} ${n.cold}`,
  ];
  if (n.archiveLastError !== undefined) lines.push(`pangea_archive_last_error_info{error="${n.archiveLastError}"} 1`);
  return lines.join('\n') + '\n';
}

/**
 * Serves /readyz and /metrics from `state`. `onReadyz(k)` runs before the k-th /readyz answer
 * (k from 1), so a test changes the node's health after a given number of samples.
 */
class FakeNodeServer {
  private readyzCalls = 0;
  private server: Server | undefined;
  url = '';

  constructor(readonly state: FakeNode, private readonly onReadyz: (k: number, state: FakeNode) => void = () => undefined) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      if (req.url === '/readyz') {
        this.onReadyz(++this.readyzCalls, this.state);
        res.writeHead(this.state.ready ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify(this.state.ready ? { status: 'ready' } : { error: { code: 'unavailable', message: 'not ready: no recent leader' } }));
      } else if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(metricsPage(this.state));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server!.close(resolve));
    this.server = undefined;
  }
}

/** A node that commits on every sample and, from sample `from` on, has `hurt` done to it. */
function nodeServer(hurt?: { from: number; apply: (s: FakeNode) => void }): FakeNodeServer {
  return new FakeNodeServer(healthyNode(), (k, s) => {
    s.commit += 3;
    s.cold += 1;
    if (hurt && k >= hurt.from) hurt.apply(s);
  });
}

describe('runSoak end to end', () => {
  const servers: FakeNodeServer[] = [];
  const start = async (s: FakeNodeServer): Promise<string> => {
    servers.push(s);
    return (await s.start()).url;
  };
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });
  const options = { minPeers: 2, minColdResponsesDelta: 5, stallAfterMs: 30_000, durationMs: 1_000, intervalMs: 100 };

  test('a healthy node passes', async () => {
    const url = await start(nodeServer());
    const lines: string[] = [];
    const o = await runSoak({ ...options, url }, { report: (l) => lines.push(l) });
    assert.deepEqual(o.problems, []);
    assert.ok(o.progress.samples >= 8 && o.progress.samples <= 12, `${o.progress.samples} samples`);
    assert.equal(lines.length, o.progress.samples);
    assert.ok(o.progress.lastCommit! > o.progress.firstCommit!);
    assert.ok(o.progress.coldDelta >= 5);
    assert.match(outcomeLine(o), /^soak passed: \d+ samples over 1(\.\d)?s, commit index \d+ -> \d+ \(\+\d+\), cold responses \+\d+$/);
  });

  test('a readiness drop fails the run', async () => {
    const url = await start(nodeServer({ from: 4, apply: (s) => (s.ready = false) }));
    const o = await runSoak({ ...options, url }, {});
    assert.equal(o.progress.samples, 4);
    assert.deepEqual(o.problems, [{ cause: 'readiness', message: 'readiness drop: GET /readyz answered 503: not ready: no recent leader' }]);
  });

  test('an unreachable node fails the run', async () => {
    const s = nodeServer();
    const url = await start(s);
    await s.stop();
    const o = await runSoak({ ...options, url }, {});
    assert.equal(o.problems.length, 1);
    assert.match(o.problems[0]!.message, /^readiness drop: GET http:\/\/127\.0\.0\.1:\d+\/readyz failed: ECONNREFUSED$/);
  });

  test('a rising archive error counter fails the run', async () => {
    const url = await start(nodeServer({ from: 3, apply: (s) => (s.archiveErrors = 1) }));
    const o = await runSoak({ ...options, url }, {});
    assert.ok(o.progress.samples >= 2 && o.progress.samples <= 4, `${o.progress.samples} samples`);
    assert.deepEqual(o.problems, [{ cause: 'errors', message: 'error counter rose: pangea_archive_errors_total 0 -> 1 (+1)' }]);
  });
});

// ---------------------------------------------------------------------------------------------
// The real CLI. The fake nodes live in this process, so the CLI runs asynchronously.

interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `bin/run.js soak ...args`; `whileRunning` sees stderr as it comes and may signal the child. */
function soakCli(args: string[], whileRunning?: (stderr: string, signal: (s: NodeJS.Signals) => void) => void): Promise<CliResult> {
  const CLI_TIMEOUT_MS = 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'soak', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      whileRunning?.(err, (s) => child.kill(s));
    });
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe('pangea soak', () => {
  const servers: FakeNodeServer[] = [];
  let healthy: FakeNodeServer;
  before(async () => {
    healthy = await nodeServer().start();
    servers.push(healthy);
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  test('passes on a healthy node: exit 0, status lines on stderr, the summary on stdout', { timeout: 60_000 }, async () => {
    const r = await soakCli(['--url', healthy.url, '--duration', '1s', '--interval', '100ms', '--min-peers', '2', '--min-cold-responses-delta', '3']);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^soak passed: \d+ samples over 1(\.\d)?s, commit index \d+ -> \d+ \(\+\d+\), cold responses \+\d+\n$/);
    assert.match(r.err, /#1 ready, commit index \d+ -> \d+ \(\+0\), pending 0, peers 2, cold \+0\n/);
  });

  test('fails on a rising archive error counter: exit 1, naming the counter, the numbers and the last error', { timeout: 60_000 }, async () => {
    const s = await nodeServer({ from: 3, apply: (n) => {
      n.archiveErrors = 2;
      n.archiveLastError = 'S3 PutObject: SlowDown';
    } }).start();
    servers.push(s);
    const r = await soakCli(['--url', s.url, '--duration', '10s', '--interval', '100ms']);
    assert.equal(r.code, 1, r.out + r.err);
    const message = r.err.replace(/\s*›\s*/g, ' ');
    assert.match(message, /soak failed after \d+ samples over \S+: error counter rose: pangea_archive_errors_total 0 -> 2 \(\+2\); last error: S3 PutObject: SlowDown/);
  });

  test('fails on a readiness drop with exit 1', { timeout: 60_000 }, async () => {
    const s = await nodeServer({ from: 2, apply: (n) => (n.ready = false) }).start();
    servers.push(s);
    const r = await soakCli(['--url', s.url, '--duration', '10s', '--interval', '100ms']);
    assert.equal(r.code, 1, r.out + r.err);
    assert.match(r.err.replace(/\s*›\s*/g, ' '), /soak failed after 2 samples over \S+: readiness drop: GET \/readyz answered 503: not ready: no recent leader/);
  });

  test('Ctrl-C ends the run early with the summary', { timeout: 60_000 }, async () => {
    let sent = false;
    const r = await soakCli(['--url', healthy.url, '--duration', '1h', '--interval', '100ms'], (stderr, signal) => {
      if (!sent && stderr.includes('#3 ')) {
        sent = true;
        signal('SIGINT');
      }
    });
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^soak ended early, healthy: \d+ samples over \S+, commit index \d+ -> \d+/);
  });

  test('rejects a malformed duration with exit 2', { timeout: 60_000 }, async () => {
    const r = await soakCli(['--url', healthy.url, '--interval', '5x']);
    assert.equal(r.code, 2, r.out + r.err);
    assert.match(r.err, /--interval must be a duration like 30s or 5m, not "5x"/);
  });
});
