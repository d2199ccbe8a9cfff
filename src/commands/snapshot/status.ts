import { Args, Command, Flags } from '@oclif/core';
import { formatBytes } from '../../archive/inspect.js';
import { fail } from '../../cli/cluster-client.js';
import { SnapshotFileError, checkSnapshotFile } from '../../state/snapshot-file.js';

export default class SnapshotStatus extends Command {
  static override summary = 'Check a snapshot file and print what it holds: index, records, size, checksum, members.';
  static override description = `Reads FILE through: its SHA-256, every frame and the record count, as \`serve --restore-from\`
does before restoring it.

Exit status: 0 when the file is whole, 1 when it is damaged or not a snapshot, 2 for usage
errors.`;

  static override examples = ['<%= config.bin %> snapshot status backup.snapshot'];

  static override args = {
    file: Args.string({ description: 'a file `pangea snapshot save` wrote', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print the answer as JSON', default: false }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(SnapshotStatus);
    try {
      const s = await checkSnapshotFile(args.file);
      const point = s.applied.point;
      const voters = point.epochs.at(-1)?.config.voters ?? [];
      if (flags.json) {
        this.log(JSON.stringify({ index: point.index, slot: point.slot, records: s.records, bytes: s.bytes, sha256: s.sha256, voters }));
      } else {
        this.log(`index ${point.index} (slot ${point.slot}), ${s.records} records, ${formatBytes(s.bytes)}, sha256 ${s.sha256}`);
        this.log(`voters: ${voters.join(', ')}`);
      }
    } catch (err) {
      if (err instanceof SnapshotFileError) fail(this, err.message, 1);
      throw err;
    }
  }
}
