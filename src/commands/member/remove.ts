import { Args, Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class MemberRemove extends Command {
  static override summary = 'Remove a member, through the log.';
  static override description = `The leader refuses (409) a removal that would leave voters unable to answer as a quorum,
and answers 404 for a peer that is not a member. The removed node exits by itself once every
voter left has durably learned the slots before its removal; stopping it sooner can leave a
voter that was down meanwhile unable to catch up. Needs the admin token where the cluster
requires one.`;

  static override examples = ['<%= config.bin %> member remove 12D3KooW... --admin-token-file token'];

  static override args = { peerId: Args.string({ description: "the member's peer id", required: true }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(MemberRemove);
    const r = await withClient(this, flags, (c) => c.removeMember(args.peerId));
    this.log(flags.json ? JSON.stringify(r) : `removed ${args.peerId} at index ${r.index}`);
  }
}
