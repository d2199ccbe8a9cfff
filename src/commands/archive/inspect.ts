import { Command, Flags } from '@oclif/core';
import { formatInspect, inspectArchive, type InspectReport } from '../../archive/inspect.js';
import { openObjectStore } from '../../archive/open-store.js';
import { ObjectStoreError } from '../../archive/store.js';

/** Manifest versions opened and listed by default (each holds the whole listing). */
const VERSIONS_DEFAULT = 20;

export default class ArchiveInspect extends Command {
  static override summary = 'Show what an archive holds, from its signed manifests (no key needed).';
  static override description = `Lists the newest manifest versions (name, version, ballot round, signer, creation time,
and whether each is valid or why not), then summarises the best valid manifest: cluster, key id,
CES parameters, segments (count, index and slot range, bytes), each snapshot (index, slot,
bytes) and any gap between segments. Reads manifests only: run \`pangea archive verify\` to
check the objects themselves. Exit 1 when the store cannot be read or holds no valid manifest.`;

  static override examples = [
    '<%= config.bin %> archive inspect --url file:///var/lib/pangea/archive',
    "<%= config.bin %> archive inspect --url 's3://backups/pangea?region=eu-west-1' --json",
  ];

  static override flags = {
    url: Flags.string({ description: 'the archive: file:///DIR or s3://BUCKET[/PREFIX][?region=..&endpoint=..&path_style=true]', required: true }),
    versions: Flags.integer({ description: 'newest manifest versions to open and list (0: all)', default: VERSIONS_DEFAULT, min: 0 }),
    json: Flags.boolean({ description: 'print the report as JSON', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ArchiveInspect);
    let report: InspectReport;
    try {
      const store = await openObjectStore(flags.url);
      try {
        report = await inspectArchive(store, flags.versions);
      } finally {
        await store.close();
      }
    } catch (err) {
      if (err instanceof ObjectStoreError) this.error(err.message, { exit: err.code === 'bad_url' ? 2 : 1 });
      throw err;
    }
    this.log(flags.json ? JSON.stringify(report, null, 2) : formatInspect(report));
    if (report.best === null) this.exit(1);
  }
}
