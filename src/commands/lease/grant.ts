import { Args, Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';

export default class LeaseGrant extends Command {
  static override summary = 'Grant a lease of TTL seconds and print its id.';
  static override description = `Keys attached to the lease (pangea kv put KEY VALUE --lease ID) are deleted when it expires:
TTL seconds of cluster time after its last keep-alive (pangea lease keepalive), or at once by
pangea lease revoke. TTL is 2 to 2592000 (30 days).`;

  static override examples = ['<%= config.bin %> lease grant 30'];

  static override args = { ttl: Args.integer({ description: 'seconds, 2 to 2592000', required: true, min: 2, max: 2_592_000 }) };

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeaseGrant);
    const r = await withClient(this, flags, (c) => c.grantLease(args.ttl));
    this.log(flags.json ? JSON.stringify(r) : `lease ${r.id} ttl ${r.ttl} index ${r.index}`);
  }
}
