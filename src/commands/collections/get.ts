import { Args, Command } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';

export default class CollectionsGet extends Command {
  static override summary = 'Print a collection\'s definition, version, record count and index states as JSON (exit 1 when absent).';
  static override description = `Prints what GET /v1/collections/{name} answers: kind, schema, primary key, indexes (each
with its state: building, ready, or failed naming two records that clash), version and count.`;

  static override examples = ['<%= config.bin %> collections get people'];

  static override args = { name: Args.string({ description: 'the collection ([a-z0-9_-], 1 to 64)', required: true }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CollectionsGet);
    const info = await withClient(this, flags, (c) => c.collection(args.name).info());
    if (info === null) fail(this, `${args.name}: no such collection`, 1);
    this.log(JSON.stringify(info, null, flags.json ? undefined : 2));
  }
}
