import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, fail, showBytes, withClient } from '../../cli/cluster-client.js';

export default class KvGet extends Command {
  static override summary = 'Print the value of a key (exit 1 when it is absent).';
  static override description = `Reads the key linearizably (as of a read index the leader confirmed), or with --stale as
the node that answers has applied it. Prints the value as text (base64:... when it is not
UTF-8), or with --json the key, value, revision and the index the read reflects.`;

  static override examples = ['<%= config.bin %> kv get greeting', '<%= config.bin %> kv get greeting --endpoints http://10.0.0.5:7070 --json'];

  static override args = { key: Args.string({ description: 'the key (UTF-8)', required: true }) };

  static override flags = {
    ...clusterFlags,
    stale: Flags.boolean({ description: 'read what the answering node has applied, without asking the leader', default: false }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(KvGet);
    const r = await withClient(this, flags, (c) => c.get(args.key, flags.stale ? { consistency: 'stale' } : {}));
    if (r === null) {
      if (flags.json) this.log(JSON.stringify({ key: args.key, found: false }));
      fail(this, `${args.key}: not found`, 1);
    }
    this.log(flags.json ? JSON.stringify({ key: args.key, value: showBytes(r.value), revision: r.revision, index: r.index }) : showBytes(r.value));
  }
}
