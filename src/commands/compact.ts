import { Command, Flags } from '@oclif/core';
import { formatBytes } from '../archive/inspect.js';
import { DataDirError, checkNodeDir, lockDataDir } from '../data-dir.js';
import { compactEnvFile } from '../storage/compact.js';

export default class Compact extends Command {
  static override summary = "Give a stopped node's free disk space back: rewrite its LMDB file with only the pages in use.";
  static override description = `LMDB reuses the pages that pruning the hot log (prune-hot, or the node's own pruning) and
deleted keys free, but never shrinks its file. This writes a compacted copy beside it, fsyncs
it, checks that it holds the same records (entries of every table, the log's and the state's
points), and only then swaps it in, durably. Works on the data dir of a STOPPED node: refuses
while a node runs on it or another tool holds DIR/prune.lock. Needs free space for the copy.

Exit status: 0 when compacted, 1 when refused (a node runs, the copy failed its check), 2 for
usage errors.`;

  static override examples = ['<%= config.bin %> compact --data-dir ./pangea-data'];

  static override flags = {
    'data-dir': Flags.string({ description: "the stopped node's data dir", required: true }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Compact);
    const dir = flags['data-dir'];
    try {
      checkNodeDir(dir);
      const lock = await lockDataDir(dir);
      try {
        const r = await compactEnvFile(dir);
        this.log(`compacted ${dir}: ${formatBytes(r.bytesBefore)} -> ${formatBytes(r.bytesAfter)}`);
      } finally {
        await lock.release();
      }
    } catch (err) {
      const code = err instanceof DataDirError ? (err.code === 'busy' ? 1 : 2) : 1;
      process.stderr.write(`pangea: ${(err as Error).message}\n`);
      this.exit(code);
    }
  }
}
