import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';

export default class BlocksGet extends Command {
  static override summary = 'Print a block\'s body as JSON, now or as of an index (exit 1 when it is absent).';
  static override description = `Reads the block linearizably (or with --stale as the answering node has applied it). With
--at N, the block as of log index N: any index from the node's history floor (the hot log's)
on, and below it only when the block has not changed since (else it fails, history_unavailable).
Prints the body, or with --json the id, revision, body and the index the read reflects.`;

  static override examples = ['<%= config.bin %> blocks get doc.1', '<%= config.bin %> blocks get doc.1 --at 1042 --json'];

  static override args = { id: Args.string({ description: 'the block id (1 to 256 of A-Z a-z 0-9 . _ ~ -)', required: true }) };

  static override flags = {
    ...clusterFlags,
    at: Flags.integer({ description: 'the log index to read the block as of', min: 0 }),
    stale: Flags.boolean({ description: 'read what the answering node has applied, without asking the leader', default: false }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(BlocksGet);
    const r = await withClient(this, flags, (c) => c.getBlock(args.id, { ...(flags.at === undefined ? {} : { at: flags.at }), ...(flags.stale ? { consistency: 'stale' as const } : {}) }));
    if (r.body === null) {
      if (flags.json) this.log(JSON.stringify({ id: args.id, found: false, revision: r.revision, deleted: r.deleted, index: r.index }));
      fail(this, `${args.id}: ${r.deleted ? `deleted at ${r.revision}` : 'not found'}`, 1);
    }
    this.log(flags.json ? JSON.stringify({ id: args.id, revision: r.revision, body: r.body, index: r.index }) : JSON.stringify(r.body, null, 2));
  }
}
