import { Command, Flags } from '@oclif/core';
import { NODE_ARCHIVE_DEFAULTS } from '../archive/options.js';
import { PruneRefused, pruneHot, type PruneHotResult } from '../archive/prune-hot.js';
import { formatBytes } from '../archive/inspect.js';
import { ObjectStoreError } from '../archive/store.js';
import { DataDirError, checkNodeDir, lockDataDir } from '../data-dir.js';
import { createProgress, type Progress } from '../progress.js';

/** Exit statuses of a process ended by a signal (128 + its number). */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

export default class PruneHot extends Command {
  static override summary = "Prune a stopped node's hot log behind the verified archive.";
  static override description = `For a node whose --prune-interval is 0, or to reclaim space at once. Works on the data dir of a
STOPPED node: refuses while a node runs on it (the pid in node.json is alive) or another tool
holds DIR/prune.lock. Reads the cluster's archive settings from the node's state and the best
manifest signed by one of its members, picks the latest archived snapshot at least
--hot-retention indexes behind the applied index, verifies in full every archived segment from
the pruned point through it and the snapshot (against the node's own chain values), and only
then removes those log entries, in one atomic LMDB transaction. Nothing is pruned when any
object fails verification: the bad objects are listed (see \`pangea archive verify --repair\`).

Exit status: 0 when pruned or there is nothing to prune, 1 when refused (a node runs, an object
is bad, the archive does not cover the range), 2 for usage errors.`;

  static override examples = [
    '<%= config.bin %> prune-hot --data-dir ./pangea-data --dry-run',
    '<%= config.bin %> prune-hot --data-dir ./pangea-data --hot-retention 10000 --key-file /etc/pangea/archive.key',
  ];

  static override flags = {
    'data-dir': Flags.string({ description: 'the stopped node\'s data dir', required: true }),
    'hot-retention': Flags.integer({ description: 'log indexes the hot log keeps behind the applied index', default: NODE_ARCHIVE_DEFAULTS.hotRetention, min: 0 }),
    'key-file': Flags.string({ description: 'the archive key file (default DIR/archive.key)' }),
    'dry-run': Flags.boolean({ description: 'choose and verify, but do not prune', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(PruneHot);
    const dataDir = flags['data-dir'];
    let result: PruneHotResult;
    try {
      checkNodeDir(dataDir);
      const lock = await lockDataDir(dataDir);
      // Ctrl-C or a TERM: exit (the lock file goes with the process's 'exit'). A compaction
      // under way is one LMDB transaction: it lands whole or not at all.
      const onSignal = (signal: keyof typeof SIGNAL_EXIT): void => process.exit(SIGNAL_EXIT[signal]);
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let progress: Progress | null = null;
      try {
        result = await pruneHot({
          dataDir,
          hotRetention: flags['hot-retention'],
          keyFile: flags['key-file'],
          dryRun: flags['dry-run'],
          onProgress: (done, total) => {
            progress ??= createProgress('verifying', total);
            progress.update(done);
          },
        });
      } finally {
        (progress as Progress | null)?.done();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        await lock.release();
      }
    } catch (err) {
      if (err instanceof DataDirError) this.error(err.message, { exit: err.code === 'busy' ? 1 : 2 });
      if (err instanceof PruneRefused) {
        for (const o of err.bad) this.log([`BAD ${o.kind} ${o.prefix}`, ...o.problems.map((p) => `  ${p}`)].join('\n'));
        this.error(err.message, { exit: err.code === 'usage' ? 2 : 1 });
      }
      if (err instanceof ObjectStoreError) this.error(err.message, { exit: 1 });
      throw err;
    }

    if (result.outcome === 'nothing') {
      this.log(result.reason);
      return;
    }
    const { from, through } = result;
    this.log(
      [
        `${result.outcome === 'pruned' ? 'pruned' : 'dry run: would prune'} the hot log of ${dataDir}: indexes ${from.index}..${through.index} (slots ${from.slot}..${through.slot})`,
        `  behind ${result.snapshot}; ${result.verified} archived object(s) verified`,
        `  hot log ${formatBytes(result.hotBytesBefore)} -> ${formatBytes(result.hotBytesAfter)}`,
        ...(result.outcome === 'pruned' ? [`  LMDB reuses the freed pages; to give the space back to the disk: pangea compact --data-dir ${dataDir}`] : []),
      ].join('\n'),
    );
  }
}
