import { Command, Flags, type Interfaces } from '@oclif/core';
import type { RunningServer, ServeOptions } from '../server.js';
import { CONFIG_KEYS, SERVE_SETTINGS, checkServeFiles, formatServeOptions, loadConfigFile, resolveServeOptions, type SettingRow } from '../config.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- oclif's own type for a command's flags
type FlagDef = Interfaces.Flag<any>;

/** A setting's flag, from its row (config.ts): its type, `--help` line and default. */
function flagOf(row: SettingRow): FlagDef {
  const d = row.default;
  switch (row.kind) {
    case 'boolean':
      return Flags.boolean({ description: row.help, ...(typeof d === 'boolean' ? { default: d } : {}) });
    case 'integer':
      return Flags.integer({ description: row.help, ...(typeof d === 'number' ? { default: d } : {}) });
    case 'strings':
      return Flags.string({ description: row.help, multiple: true, ...(Array.isArray(d) && d.length > 0 ? { default: [...(d as string[])] } : {}) });
    default:
      return Flags.string({ description: row.help, ...(typeof d === 'string' ? { default: d } : {}) });
  }
}

/** How long a signalled node may take to stop before it exits anyway. */
const STOP_DEADLINE_MS = 8000;

export default class Serve extends Command {
  static override summary = 'Run a Pangea node.';
  static override description = `An empty data dir without --join bootstraps a one-member cluster; with --join URL the node
is added to the cluster of that member through the log (as a learner, promoted to voter once
it has caught up). A node restarted on an existing data dir resumes; a --join given then
must name a member of the same cluster.
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

  static override flags: Interfaces.FlagInput = {
    ...Object.fromEntries(CONFIG_KEYS.map((key) => [key, flagOf(SERVE_SETTINGS[key])])),
    config: Flags.string({ description: 'JSON config file; flags given on the command line override it' }),
    'dry-run': Flags.boolean({ description: 'check the settings and the files they name, print them as JSON and exit (exit 2 on a problem)', default: false }),
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
      // The files the settings name must be there and readable (a mistyped key file is an
      // error, not a node that runs without its archive).
      await checkServeFiles(options);
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
    // A test hook, off unless the variable is set: SIGUSR2 steps this node's clock.
    const jump = Number(process.env.PANGEA_TEST_CLOCK_JUMP_MS ?? NaN);
    if (Number.isFinite(jump)) process.on('SIGUSR2', () => void import('../node.js').then((m) => m.jumpClock(jump)));
    // lmdb-js rejects promises nobody awaits when a commit fails; the node has stopped by
    // then (fail-stop above). Anything else unexpected ends the process too, loudly.
    process.on('unhandledRejection', (err) => {
      process.stderr.write(`pangea: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    });

    // Loaded here, not at the top: `pangea --help` and the other commands stay fast.
    const { startServer } = await import('../server.js');
    try {
      server = await startServer(options, {
        onFatal: (cause) => {
          process.stderr.write(`pangea: ${cause}\n`);
          process.exit(1);
        },
        // Removed from the cluster: stop cleanly and exit 1, naming why.
        onRemoved: (why) => {
          process.stderr.write(`pangea: ${why}\n`);
          if (stopping) return;
          stopping = true;
          setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref();
          if (server === null) process.exit(1);
          server.stop().then(
            () => stoppedWith(1),
            () => stoppedWith(1),
          );
        },
      });
    } catch (err) {
      // One line, as written (oclif's error box would wrap it mid-sentence).
      process.stderr.write(`pangea: cannot start: ${(err as Error).message}\n`);
      process.exit(1);
    }
    this.log(server.banner());
    // Exits explicitly: a library timer left running must not keep a stopped node alive.
    process.exit(await stopped);
  }
}
