import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class KvDel extends Command {
  static override summary = 'Delete a key, through the log.';
  static override description = `Prints whether the key existed and the log index of the delete. --if-match REV deletes only
if the key is at that revision (exit 1 otherwise).`;

  static override examples = ['<%= config.bin %> kv del greeting'];

  static override args = { key: Args.string({ description: 'the key (UTF-8)', required: true }) };

  static override flags = {
    ...clusterFlags,
    'if-match': Flags.integer({ description: 'delete only if the key is at this revision', min: 1 }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(KvDel);
    const r = await withClient(this, flags, (c) => c.delete(args.key, flags['if-match'] !== undefined ? { ifMatch: flags['if-match'] } : {}));
    this.log(flags.json ? JSON.stringify(r) : `deleted ${r.deleted} index ${r.index}`);
  }
}
