import { Command } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';
import { endpointStatuses } from '../../cli/endpoints.js';

export default class EndpointHealth extends Command {
  static override summary = 'Check that every member is reachable and ready (exit 1 if any is not).';
  static override description = `Asks each member's /readyz directly and prints one line per member: healthy, or why not.
Exit 0 only when every member is ready, so scripts and probes can gate on it.`;

  static override examples = ['<%= config.bin %> endpoint health --endpoints http://10.0.0.5:7070'];

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(EndpointHealth);
    const all = await withClient(this, flags, (c) => endpointStatuses(c));
    if (flags.json) this.log(JSON.stringify(all.map((s) => ({ peerId: s.peerId, http: s.http, healthy: s.ready, ...(s.reason !== undefined ? { reason: s.reason } : {}) }))));
    else for (const s of all) this.log(`${s.http || s.peerId}  ${s.ready ? 'healthy' : `unhealthy: ${s.reason}`}`);
    const bad = all.filter((s) => !s.ready).length;
    if (bad > 0) fail(this, `${bad} of ${all.length} members are not healthy`, 1);
  }
}
