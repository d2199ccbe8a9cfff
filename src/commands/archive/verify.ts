import { join } from 'node:path';
import { Command, Flags } from '@oclif/core';
import { AuditError, auditArchive, formatAudit, type AuditReport } from '../../archive/audit.js';
import { ARCHIVE_KEY_FILE } from '../../data-dir.js';
import { openObjectStore } from '../../archive/open-store.js';
import { ObjectStoreError, type ObjectStore } from '../../archive/store.js';
import { readKeyFile, type CesKey } from '../../ces/index.js';
import { DataDirError, checkNodeDir, readClusterId } from '../../data-dir.js';
import { openStores, type Stores } from '../../stores.js';
import { createProgress, type Progress } from '../../progress.js';

export default class ArchiveVerify extends Command {
  static override summary = "Verify every object an archive's best manifest lists; --repair rebuilds lost and damaged shards.";
  static override description = `Reads every shard of every listed segment and snapshot (or of those in --from-index..--to-index),
checks it against the manifest's checksum, decodes the object under the key (which authenticates
it), and checks each segment's hash chain and each snapshot's point. Prints every bad object with
its problems (bad or missing shards, decode failures, chain mismatches) and a summary.

With --repair, an object that decodes from its good shards is made whole again: each shard
present but wrong is moved aside (copied to quarantine/<object>/shard-<i>.<hash>, checked, then
deleted; never overwritten in place), and it and the missing ones (up to m of an object) are
rebuilt, uploaded create-if-absent and checked against the manifest's checksums.

With --data-dir (a node's data dir, running or not) only manifests of that node's cluster signed
by its members count, its own chain values are checked too, and --url and --key-file default to
its archive settings and its archive.key.

Exit status: 0 when every object is good (after repair), 1 when any is bad or the archive has
no valid manifest, 2 for usage errors (bad flags, unreadable or wrong key file, bad URL).`;

  static override examples = [
    '<%= config.bin %> archive verify --url file:///var/lib/pangea/archive --key-file archive.key',
    '<%= config.bin %> archive verify --url file:///var/lib/pangea/archive --key-file archive.key --from-index 10001 --to-index 20000 --repair',
    '<%= config.bin %> archive verify --data-dir ./pangea-data --json',
  ];

  static override flags = {
    url: Flags.string({ description: 'the archive: file:///DIR or s3://BUCKET[/PREFIX][?region=..] (default with --data-dir: its cluster\'s)' }),
    'key-file': Flags.string({ description: 'the archive key file (default with --data-dir: DIR/archive.key)' }),
    'from-index': Flags.integer({ description: 'first log index to verify', min: 1 }),
    'to-index': Flags.integer({ description: 'last log index to verify', min: 1 }),
    repair: Flags.boolean({ description: 'move damaged shards aside and rebuild them and missing ones (up to m of an object) from the others', default: false }),
    'data-dir': Flags.string({ description: "a node's data dir: trust only its cluster's members and check its chain values" }),
    json: Flags.boolean({ description: 'print the report as JSON', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ArchiveVerify);
    const from = flags['from-index'];
    const to = flags['to-index'];
    if (from !== undefined && to !== undefined && from > to) this.error(`--from-index ${from} is after --to-index ${to}`, { exit: 2 });
    const dataDir = flags['data-dir'];
    if (dataDir === undefined && (flags.url === undefined || flags['key-file'] === undefined)) {
      this.error('give --url and --key-file (or --data-dir of a node of the cluster)', { exit: 2 });
    }

    let stores: Stores | null = null;
    let store: ObjectStore | null = null;
    let progress: Progress | null = null;
    let report: AuditReport;
    try {
      let cluster: string | null = null;
      let members: Set<string> | null = null;
      let url = flags.url;
      if (dataDir !== undefined) {
        checkNodeDir(dataDir);
        cluster = await readClusterId(dataDir);
        stores = openStores(dataDir);
        members = new Set(stores.state.members().map((m) => m.peerId));
        url ??= stores.state.archiveSettings()?.url;
        if (url === undefined) this.error(`${dataDir}: its cluster has no archive settings yet; give --url`, { exit: 2 });
      }
      const key = await this.key(flags['key-file'] ?? join(dataDir!, ARCHIVE_KEY_FILE));
      store = await openObjectStore(url!);
      const own = stores;
      report = await auditArchive({
        store,
        key,
        cluster,
        trusted: members === null ? undefined : (s) => members.has(s),
        fromIndex: from,
        toIndex: to,
        repair: flags.repair,
        ownChain: own === null ? undefined : (i) => own.state.chainAt(i),
        onProgress: (done, total) => {
          progress ??= createProgress('verifying', total);
          progress.update(done);
        },
      });
    } catch (err) {
      if (err instanceof DataDirError) this.error(err.message, { exit: 2 });
      if (err instanceof ObjectStoreError) this.error(err.message, { exit: err.code === 'bad_url' ? 2 : 1 });
      if (err instanceof AuditError) this.error(err.message, { exit: err.code === 'wrong_key' ? 2 : 1 });
      throw err;
    } finally {
      (progress as Progress | null)?.done();
      await store?.close();
      await stores?.close();
    }

    this.log(flags.json ? JSON.stringify(report, null, 2) : formatAudit(report));
    const bad = report.objects.filter((o) => !o.ok);
    if (bad.length > 0) this.error(`${bad.length} bad object(s): ${bad.map((o) => o.prefix).join(', ')}`, { exit: 1 });
  }

  /** The key in `path`; exit 2 when it cannot be read. */
  private async key(path: string): Promise<CesKey> {
    try {
      return await readKeyFile(path);
    } catch (err) {
      this.error(`cannot read the archive key ${path}: ${(err as Error).message}`, { exit: 2 });
    }
  }
}
