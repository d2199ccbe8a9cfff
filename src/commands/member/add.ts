import { Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class MemberAdd extends Command {
  static override summary = 'Add a member through the log (as a learner; promote it once it has caught up).';
  static override description = `A new node is added as a learner: it receives the log but does not vote. Promote it with
\`member promote\` once it has caught up; the leader refuses to promote a learner it has not
heard from lately, and refuses a voter that is not a learner first. \`serve --join\` does
both steps itself. Needs the admin token where the cluster requires one.`;

  static override examples = ['<%= config.bin %> member add --peer-id 12D3KooW... --http http://10.0.0.7:7070 --p2p /ip4/10.0.0.7/tcp/7071 --admin-token-file token'];

  static override flags = {
    ...clusterFlags,
    'peer-id': Flags.string({ description: "the new node's libp2p peer id (its banner prints it)", required: true }),
    http: Flags.string({ description: 'its HTTP address, as clients reach it', required: true }),
    p2p: Flags.string({ description: 'its p2p multiaddr (repeatable)', multiple: true, required: true }),
    role: Flags.string({ description: 'learner, or voter for a learner already in the cluster', options: ['learner', 'voter'], default: 'learner' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(MemberAdd);
    const r = await withClient(this, flags, (c) => c.addMember({ peerId: flags['peer-id'], http: flags.http, p2p: flags.p2p, role: flags.role as 'learner' | 'voter' }));
    this.log(flags.json ? JSON.stringify(r) : `added ${flags['peer-id']} as ${flags.role} at index ${r.index}`);
  }
}
