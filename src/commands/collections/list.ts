import { Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class CollectionsList extends Command {
  static override summary = 'List the collections: name, kind, record count and each index\'s state.';
  static override description = `One line a collection: its name, kind (table or diary), version (the index of its last
define), record count, and its indexes with their states (building, ready, failed). With
--json, the definitions too, one JSON object a line.`;

  static override examples = ['<%= config.bin %> collections list', '<%= config.bin %> collections list --json'];

  static override flags = {
    ...clusterFlags,
    limit: Flags.integer({ description: 'collections to list at most', min: 1, default: 1000 }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(CollectionsList);
    await withClient(this, flags, async (c) => {
      let after: string | undefined;
      let left = flags.limit;
      while (left > 0) {
        const page = await c.collections({ limit: Math.min(left, 1000), ...(after === undefined ? {} : { after }) });
        for (const x of page.items) {
          if (flags.json) this.log(JSON.stringify(x));
          else this.log(`${x.name}  ${x.kind}  version ${x.version}  ${x.count} records${x.indexes.map((i) => `  ${i.name}:${i.state}`).join('')}`);
        }
        left -= page.items.length;
        if (!page.more || page.items.length === 0) break;
        after = page.items[page.items.length - 1]!.name;
      }
    });
  }
}
