import { Args, Command } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';

export default class MemberPromote extends Command {
  static override summary = 'Make a learner a voter, through the log.';
  static override description = `The leader refuses (409) unless the member is a learner it has heard from within an election
timeout, so a node that is down or still far behind never becomes a voter. Needs the admin
token where the cluster requires one.`;

  static override examples = ['<%= config.bin %> member promote 12D3KooW... --admin-token-file token'];

  static override args = { peerId: Args.string({ description: "the learner's peer id", required: true }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(MemberPromote);
    const r = await withClient(this, flags, async (c) => {
      const m = (await c.members()).find((x) => x.peerId === args.peerId);
      if (m === undefined) fail(this, `${args.peerId} is not a member (add it with \`member add\` first)`, 1);
      if (m.role === 'voter') fail(this, `${args.peerId} is a voter already`, 1);
      return c.addMember({ peerId: m.peerId, http: m.http, p2p: m.p2p, role: 'voter' });
    });
    this.log(flags.json ? JSON.stringify(r) : `promoted ${args.peerId} to voter at index ${r.index}`);
  }
}
