import { Command, Flags } from '@oclif/core';
import type { RunningServer, ServeOptions } from '../server.js';
import { SEGMENT_ENTRIES_DEFAULT, SEGMENT_ENTRIES_MAX, SNAPSHOT_SEGMENTS_DEFAULT } from '../archive/options.js';
import { SERVE_DEFAULTS, checkServeFiles, formatServeOptions, loadConfigFile, resolveServeOptions } from '../config.js';

const d = SERVE_DEFAULTS;

/** How long a signalled node may take to stop before it exits anyway. */
const STOP_DEADLINE_MS = 8000;

export default class Serve extends Command {
  static override summary = 'Run a Pangea node.';
  static override description = `An empty data dir without --join bootstraps a one-member cluster; with --join URL the node
is added to the cluster of that member through the log (as a learner, promoted to voter once
it has caught up). A node restarted on an existing data dir resumes and ignores --join.
Stops cleanly on SIGINT and SIGTERM (within 8 s; a second signal exits at once), and exits
non-zero, naming the cause, when a write to its data dir fails (a full or vanished disk).

Every flag but --config and --dry-run is also a config file key of the same name
(docs/configuration.md, pangea.example.json). Durations are written like 250ms, 30s, 5m, 1h30m
or 0; byte counts like 1073741824, 512MiB or 8GiB. Settings marked cluster-wide are recorded
when the cluster is bootstrapped and ignored afterwards.`;

  static override examples = [
    '<%= config.bin %> serve',
    '<%= config.bin %> serve --data-dir ./n2 --http-listen 127.0.0.1:7080 --p2p-listen /ip4/127.0.0.1/tcp/7081 --join http://127.0.0.1:7070',
    '<%= config.bin %> serve --config pangea.json --dry-run',
  ];

  static override flags = {
    'data-dir': Flags.string({ description: 'where the node keeps its LMDB files and identity', default: d['data-dir'] }),
    'http-listen': Flags.string({ description: 'HOST:PORT of the client API (port 0: any free port)', default: d['http-listen'] }),
    'p2p-listen': Flags.string({ description: 'libp2p listen multiaddr (repeatable)', multiple: true, default: [...d['p2p-listen']] }),
    join: Flags.string({ description: 'HTTP URL of any member of the cluster to join (ignored on an existing data dir)' }),
    config: Flags.string({ description: 'JSON config file; flags given on the command line override it' }),
    'dry-run': Flags.boolean({ description: 'check the settings and the files they name, print them as JSON and exit (exit 2 on a problem)', default: false }),
    'metrics-listen': Flags.string({ description: 'HOST:PORT of a second listener for /healthz, /readyz and /metrics' }),
    'advertise-http': Flags.string({ description: 'the HTTP URL peers and clients are told (for nodes listening on 0.0.0.0)' }),
    'advertise-p2p': Flags.string({ description: 'a multiaddr peers are told (repeatable)', multiple: true }),
    'admin-token-file': Flags.string({ description: 'file holding the bearer token membership changes require (and --join sends)' }),
    'force-new-cluster': Flags.boolean({ description: 'disaster recovery: restart this data dir as a one-member cluster after a quorum is lost for good', default: d['force-new-cluster'] }),
    'max-value-bytes': Flags.integer({ description: 'largest value accepted', default: d['max-value-bytes'] }),
    'max-request-bytes': Flags.integer({ description: 'largest request body accepted', default: d['max-request-bytes'] }),
    'max-txn-ops': Flags.integer({ description: 'most compares plus operations in one transaction', default: d['max-txn-ops'] }),
    'log-level': Flags.string({ description: 'debug, info, warn or error', default: d['log-level'] }),
    'archive-url': Flags.string({ description: 'cluster-wide: archive object store, file:///DIR or s3://BUCKET[/PREFIX][?region=..&endpoint=..&path_style=true] (default file://<data-dir>/archive)' }),
    'archive-key-file': Flags.string({ description: 'archive encryption key file, see `pangea ces keygen` (default <data-dir>/archive.key, made at bootstrap)' }),
    'segment-entries': Flags.integer({ description: `cluster-wide: log indexes per archived segment, 1..${SEGMENT_ENTRIES_MAX} (default ${SEGMENT_ENTRIES_DEFAULT})` }),
    'snapshot-segments': Flags.integer({ description: `cluster-wide: archive a state snapshot every N segments (default ${SNAPSHOT_SEGMENTS_DEFAULT})` }),
    'archive-delay-entries': Flags.integer({ description: 'archive a segment only once the commit index is this many entries past its end', default: d['archive-delay-entries'] }),
    'archive-delay': Flags.string({ description: 'archive a segment only once it has been committed this long', default: d['archive-delay'] }),
    'archive-interval': Flags.string({ description: 'how often the leader looks for segments to archive (0: no archiving on this node)', default: d['archive-interval'] }),
    'prune-interval': Flags.string({ description: 'how often the archived, verified hot log is pruned (0: never; see `pangea prune-hot`)', default: d['prune-interval'] }),
    'hot-retention': Flags.integer({ description: 'log entries the hot log keeps whatever the archive holds', default: d['hot-retention'] }),
    'hot-quota-bytes': Flags.string({ description: 'hot-log size at which writes are refused with 503, e.g. 8GiB (0: no quota)', default: d['hot-quota-bytes'] }),
    checkpoint: Flags.string({ description: 'trusted chain value INDEX:HASH (64 hex digits) archive reads are checked against (repeatable)', multiple: true }),
    'restore-from': Flags.string({ description: 'bootstrap a new cluster from this archive URL (not with --join)' }),
    'restore-index': Flags.integer({ description: 'restore the state at this log index (default: the latest the archive holds)' }),
    'blocksync-cold-reads-max': Flags.integer({ description: 'archive reads served to catching-up peers at once', default: d['blocksync-cold-reads-max'] }),
    'blocksync-queue-max': Flags.integer({ description: 'archive read requests queued before peers are told to retry', default: d['blocksync-queue-max'] }),
    'blocksync-timeout': Flags.string({ description: 'how long a catch-up request may take', default: d['blocksync-timeout'] }),
  };

  async run(): Promise<void> {
    const { flags, raw } = await this.parse(Serve);
    const typed = new Set(raw.flatMap((t) => (t.type === 'flag' ? [t.flag] : [])));
    let options: ServeOptions;
    try {
      options = resolveServeOptions({
        flags: Object.fromEntries(Object.entries(flags).filter(([name]) => typed.has(name))),
        file: flags.config === undefined ? undefined : loadConfigFile(flags.config),
      });
      if (flags['dry-run']) await checkServeFiles(options);
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    if (flags['dry-run']) {
      this.log(formatServeOptions(options));
      return;
    }

    // Signals: the first stops the node cleanly (answering what it can, closing the log),
    // within STOP_DEADLINE_MS whatever it is doing: starting, joining, catching up,
    // archiving, pruning, or stuck on a wedged disk. A second one exits at once. Nothing
    // acknowledged depends on a clean stop: every acknowledged write is on disk already.
    let server: RunningServer | null = null;
    let stopping = false;
    let stoppedWith: (code: number) => void = () => undefined;
    const stopped = new Promise<number>((resolve) => (stoppedWith = resolve));
    const onSignal = (signal: NodeJS.Signals): void => {
      const code = 128 + (signal === 'SIGINT' ? 2 : 15);
      if (stopping) {
        process.stderr.write(`pangea: ${signal} again: exiting now\n`);
        process.exit(code);
      }
      stopping = true;
      process.stderr.write(`pangea: ${signal}: stopping\n`);
      setTimeout(() => {
        process.stderr.write(`pangea: the node did not stop within ${STOP_DEADLINE_MS / 1000} s; exiting\n`);
        process.exit(code);
      }, STOP_DEADLINE_MS).unref();
      if (server === null) process.exit(0); // still starting: nothing to hand over yet
      server.stop().then(
        () => stoppedWith(0),
        (err: unknown) => {
          server!.logger.error('unclean stop', { err });
          stoppedWith(1);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // lmdb-js rejects promises nobody awaits when a commit fails; the node has stopped by
    // then (fail-stop above). Anything else unexpected ends the process too, loudly.
    process.on('unhandledRejection', (err) => {
      process.stderr.write(`pangea: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    });

    // Loaded here, not at the top: `pangea --help` and the other commands stay fast.
    const { startServer } = await import('../server.js');
    server = await startServer(options, {
      onFatal: (cause) => {
        process.stderr.write(`pangea: ${cause}\n`);
        process.exit(1);
      },
    });
    this.log(server.banner());
    // Exits explicitly: a library timer left running must not keep a stopped node alive.
    process.exit(await stopped);
  }
}
