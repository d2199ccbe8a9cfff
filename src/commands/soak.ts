import { Command, Flags } from '@oclif/core';
import { outcomeLine, parseDuration, runSoak } from '../soak.js';

/** Longest delay setTimeout honours (about 24.8 days); a longer --interval would fire at once. */
const MAX_INTERVAL_MS = 2 ** 31 - 1;

export default class Soak extends Command {
  static override summary = "Poll a running node's /readyz and /metrics; fail when it is unhealthy.";
  static override description = [
    "Every --interval for --duration, GETs /readyz and /metrics from --url (the node's HTTP listener or its",
    '--metrics-listen) and fails with exit code 1 at the first sign of trouble: /readyz not 200 or unreachable;',
    'fewer than --min-peers connected peers; a commit index that stood still for longer than --stall-after while',
    'writes were pending or a peer was ahead; a rise of the archive, prune or cold-read error counters; and, at',
    'the end, fewer new cold blocksync responses than --min-cold-responses-delta. One status line per sample',
    'goes to stderr; a one-line summary ends a healthy run (Ctrl-C ends it early, with the summary).',
    'Durations are written like 250ms, 30s, 5m or 1h.',
  ].join(' ');

  static override examples = [
    '<%= config.bin %> soak --url http://127.0.0.1:7070',
    '<%= config.bin %> soak --url http://127.0.0.1:9090 --duration 1h --interval 10s --min-peers 2 --min-cold-responses-delta 1',
  ];

  static override flags = {
    url: Flags.string({ description: 'base URL of the node (http://HOST:PORT)', required: true }),
    duration: Flags.string({ description: 'how long to poll', default: '5m' }),
    interval: Flags.string({ description: 'time between samples', default: '5s' }),
    'min-peers': Flags.integer({ description: 'fewest connected peers allowed (0: no check)', default: 0, min: 0 }),
    'min-cold-responses-delta': Flags.integer({
      description: 'fewest new cold blocksync responses over the run (0: no check)',
      default: 0,
      min: 0,
    }),
    'stall-after': Flags.string({ description: 'longest the commit index may stand still while there is work', default: '30s' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Soak);
    let url: URL;
    try {
      url = new URL(flags.url);
    } catch {
      this.error(`--url must be a URL like http://127.0.0.1:7070, not ${flags.url}`, { exit: 2 });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') this.error(`--url must be http or https, not ${url.protocol}`, { exit: 2 });
    const durationMs = this.duration(flags.duration, '--duration');
    const intervalMs = this.duration(flags.interval, '--interval');
    const stallAfterMs = this.duration(flags['stall-after'], '--stall-after');
    if (intervalMs <= 0 || intervalMs > MAX_INTERVAL_MS) this.error(`--interval must be above 0 and at most ${MAX_INTERVAL_MS}ms`, { exit: 2 });

    const interrupt = new AbortController();
    const onSigint = (): void => interrupt.abort();
    process.once('SIGINT', onSigint);
    let outcome;
    try {
      outcome = await runSoak(
        {
          url: flags.url,
          durationMs,
          intervalMs,
          stallAfterMs,
          minPeers: flags['min-peers'],
          minColdResponsesDelta: flags['min-cold-responses-delta'],
        },
        { signal: interrupt.signal, report: (line) => this.logToStderr(line) },
      );
    } finally {
      process.off('SIGINT', onSigint);
    }
    if (outcome.problems.length) this.error(outcomeLine(outcome), { exit: 1 });
    this.log(outcomeLine(outcome));
  }

  /** The milliseconds of a duration flag; exit code 2 when it does not parse. */
  private duration(text: string, flag: string): number {
    try {
      return parseDuration(text, flag);
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
  }
}
