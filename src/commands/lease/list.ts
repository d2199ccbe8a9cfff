import { Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';
import type { LeaseInfo } from '../../client.js';

export default class LeaseList extends Command {
  static override summary = 'List the live leases: id, TTL, time left (cluster time) and keys attached.';
  static override examples = ['<%= config.bin %> lease list', '<%= config.bin %> lease list --json'];

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(LeaseList);
    const all = await withClient(this, flags, async (c) => {
      const out: LeaseInfo[] = [];
      for (let after: string | undefined; ; ) {
        const page = await c.leases({ limit: 10_000, ...(after !== undefined ? { after } : {}) });
        out.push(...page.items);
        if (!page.more || page.items.length === 0) return out;
        after = page.items[page.items.length - 1]!.id;
      }
    });
    for (const l of all) this.log(flags.json ? JSON.stringify(l) : `${l.id}\tttl ${l.ttl}s\tremaining ${(l.remainingMs / 1000).toFixed(1)}s\tkeys ${l.keys}`);
  }
}
