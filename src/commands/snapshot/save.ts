import { Args, Command } from '@oclif/core';
import { formatBytes } from '../../archive/inspect.js';
import { clusterFlags, endpointList, fail } from '../../cli/cluster-client.js';
import { SnapshotSaveError, saveSnapshot } from '../../cli/snapshot-save.js';
import { readAdminTokenFile } from '../../admin-token-file.js';

export default class SnapshotSave extends Command {
  static override summary = "Save a running cluster's state to FILE, which `serve --restore-from FILE` restores.";
  static override description = `Streams the state from the first member in --endpoints that answers: all of it, from one read
transaction taken after a linearizable read, so the file holds every write acknowledged before
the command started. The file is written to FILE.part, fsynced, read back through (its SHA-256,
every frame, the record count) and only then renamed to FILE; a failed save leaves FILE as it
was. It holds every key and value in plaintext: keep it as you keep a data dir.

Restore it as a new cluster with \`pangea serve --data-dir NEW --restore-from FILE\` (the new
cluster has a new id and this node as its only member; the others join it). Needs the admin
token where the cluster requires one.

Exit status: 0 when saved, 1 when no member could stream one or the copy failed its check,
2 for usage errors.`;

  static override examples = [
    '<%= config.bin %> snapshot save backup.snapshot --endpoints http://10.0.0.5:7070 --admin-token-file token',
    '<%= config.bin %> serve --data-dir ./restored --restore-from backup.snapshot',
  ];

  static override args = {
    file: Args.string({ description: 'where to write the snapshot', required: true }),
  };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(SnapshotSave);
    let endpoints: string[];
    let adminToken: string | undefined;
    try {
      endpoints = endpointList(flags);
      const file = flags['admin-token-file'];
      adminToken = file === undefined ? undefined : await readAdminTokenFile(file);
    } catch (err) {
      fail(this, (err as Error).message, 2);
    }
    try {
      const s = await saveSnapshot(endpoints, args.file, { headersMs: flags['deadline-ms'], ...(adminToken !== undefined ? { adminToken } : {}) });
      const point = s.applied.point;
      if (flags.json) {
        this.log(JSON.stringify({ path: s.path, endpoint: s.endpoint, index: point.index, slot: point.slot, records: s.records, bytes: s.bytes, sha256: s.sha256 }));
      } else {
        this.log(`saved the state at index ${point.index} (${s.records} records, ${formatBytes(s.bytes)}, sha256 ${s.sha256}) from ${s.endpoint} to ${s.path}`);
      }
    } catch (err) {
      if (err instanceof SnapshotSaveError) fail(this, err.message, 1);
      throw err;
    }
  }
}
