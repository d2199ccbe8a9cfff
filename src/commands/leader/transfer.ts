import { Args, Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class LeaderTransfer extends Command {
  static override summary = 'Hand leadership to another voter, e.g. before taking the leader down for maintenance.';
  static override description = `The leader stops taking writes (they are answered 503, safe to retry), commits what it has in
flight, and tells the voter to campaign at once; the command returns once that voter leads.
The leader refuses (409) a peer that is not a voter or has not answered it within an election
timeout. If no new leader is heard of within an election timeout, the old one goes on leading
and the command fails. Needs the admin token where the cluster requires one.`;

  static override examples = ['<%= config.bin %> leader transfer 12D3KooW... --admin-token-file token'];

  static override args = { peerId: Args.string({ description: 'the voter to lead', required: true }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeaderTransfer);
    const r = await withClient(this, flags, (c) => c.transferLeader(args.peerId));
    this.log(flags.json ? JSON.stringify(r) : `${r.leader} leads now`);
  }
}
