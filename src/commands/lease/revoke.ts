import { Args, Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class LeaseRevoke extends Command {
  static override summary = 'Revoke a lease: its keys are deleted, in one log command.';
  static override examples = ['<%= config.bin %> lease revoke 1234'];

  static override args = { id: Args.string({ description: 'the lease id', required: true }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeaseRevoke);
    const r = await withClient(this, flags, (c) => c.revokeLease(args.id));
    this.log(flags.json ? JSON.stringify(r) : `${r.revoked ? 'revoked' : 'no such lease'} index ${r.index}`);
  }
}
