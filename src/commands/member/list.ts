import { Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class MemberList extends Command {
  static override summary = "List the cluster's members: peer id, role, HTTP and p2p addresses, and which one leads.";
  static override description = `As the first member that answers sees the cluster (GET /v1/cluster). --json prints that
view whole: cluster id, leader, commit and applied index, members.`;

  static override examples = ['<%= config.bin %> member list', '<%= config.bin %> member list --endpoints http://10.0.0.5:7070 --json'];

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(MemberList);
    const view = await withClient(this, flags, (c) => c.cluster());
    if (flags.json) return this.log(JSON.stringify(view));
    this.log(`cluster ${view.clusterId}, leader ${view.leader ?? '(none known)'}, commit index ${view.commitIndex}`);
    for (const m of view.members) {
      this.log(`${m.peerId}  ${m.role}${m.peerId === view.leader ? ' (leader)' : ''}  ${m.http || '-'}  ${m.p2p.join(',') || '-'}`);
    }
  }
}
