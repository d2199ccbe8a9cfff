import { Command, Flags } from '@oclif/core';
import { clusterFlags, showBytes, withClient } from '../../cli/cluster-client.js';

export default class KvRange extends Command {
  static override summary = 'List keys and values in key order, under a prefix.';
  static override description = `Pages through the keys (each page a linearizable read of its own, or --stale) and prints
one line per key: the key, a tab, the value (base64:... when it is not UTF-8). --json prints
one JSON object per line with the revision too. --limit bounds the keys printed.`;

  static override examples = ['<%= config.bin %> kv range --prefix config/', '<%= config.bin %> kv range --limit 10 --json'];

  static override flags = {
    ...clusterFlags,
    prefix: Flags.string({ description: 'only keys that start with this', default: '' }),
    limit: Flags.integer({ description: 'print at most this many keys (0: all)', default: 0, min: 0 }),
    stale: Flags.boolean({ description: 'read what the answering node has applied, without asking the leader', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(KvRange);
    await withClient(this, flags, async (c) => {
      let n = 0;
      for await (const item of c.scan({ ...(flags.prefix !== '' ? { prefix: flags.prefix } : {}), ...(flags.stale ? { consistency: 'stale' } : {}) })) {
        if (flags.limit > 0 && n >= flags.limit) break;
        n++;
        this.log(flags.json ? JSON.stringify({ key: item.key, value: showBytes(item.value), revision: item.revision }) : `${item.key}\t${showBytes(item.value)}`);
      }
    });
  }
}
