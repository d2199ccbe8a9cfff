import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class KvPut extends Command {
  static override summary = 'Write a value to a key, through the log.';
  static override description = `The write is retried across members until it is decided or --deadline-ms passes, with one
request id, so it is applied at most once. --if-match REV writes only if the key is at that
revision, --if-absent only if it does not exist (exit 1 otherwise, with the current revision).
--lease ID attaches the key to a lease; a put without it detaches the key from any.
Prints the revision and the log index the write applied at.`;

  static override examples = ['<%= config.bin %> kv put greeting hello', '<%= config.bin %> kv put greeting hello --if-match 41'];

  static override args = {
    key: Args.string({ description: 'the key (UTF-8)', required: true }),
    value: Args.string({ description: 'the value (UTF-8)', required: true }),
  };

  static override flags = {
    ...clusterFlags,
    'if-match': Flags.integer({ description: 'write only if the key is at this revision', min: 1, exclusive: ['if-absent'] }),
    'if-absent': Flags.boolean({ description: 'write only if the key does not exist', default: false }),
    lease: Flags.string({ description: 'attach the key to this lease (pangea lease grant): it goes when the lease does' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(KvPut);
    const r = await withClient(this, flags, (c) =>
      c.put(args.key, args.value, { ...(flags['if-match'] !== undefined ? { ifMatch: flags['if-match'] } : {}), ...(flags['if-absent'] ? { ifAbsent: true } : {}), ...(flags.lease !== undefined ? { lease: flags.lease } : {}) }),
    );
    this.log(flags.json ? JSON.stringify(r) : `revision ${r.revision} index ${r.index}`);
  }
}
