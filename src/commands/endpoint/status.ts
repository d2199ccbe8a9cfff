import { Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';
import { endpointStatuses } from '../../cli/endpoints.js';

export default class EndpointStatus extends Command {
  static override summary = 'Ask every member for its own view: ready or not, the leader it follows, its commit and applied index.';
  static override description = `Lists the members (from the first endpoint that answers), then asks each one directly, so a
member that is down, not ready or behind shows as such: its peer id, role, HTTP address,
ready or why not, the leader it knows, its commit index and how far its applied index
trails it. --json prints one object per member.`;

  static override examples = ['<%= config.bin %> endpoint status', '<%= config.bin %> endpoint status --json'];

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(EndpointStatus);
    const all = await withClient(this, flags, (c) => endpointStatuses(c));
    if (flags.json) return this.log(JSON.stringify(all));
    for (const s of all) {
      const state = !s.reachable ? `unreachable (${s.reason})` : s.ready ? 'ready' : `not ready (${s.reason})`;
      const indexes = s.commitIndex !== undefined ? `  leader ${s.leader ?? '-'}  commit ${s.commitIndex}  applied ${s.appliedIndex} (lag ${s.commitIndex - (s.appliedIndex ?? 0)})` : '';
      this.log(`${s.peerId}  ${s.role}  ${s.http || '-'}  ${state}${indexes}`);
    }
  }
}
