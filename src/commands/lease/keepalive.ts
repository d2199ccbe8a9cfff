import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';
import { PangeaError } from '../../client.js';
import { sleep } from '../../sleep.js';

export default class LeaseKeepalive extends Command {
  static override summary = 'Renew a lease to its full TTL (once, or with --forever until stopped).';
  static override description = `Exit 1 when the lease is unknown or has expired. --forever renews every third of the TTL
until interrupted or the lease is gone (a shell script's liveness key).`;

  static override examples = ['<%= config.bin %> lease keepalive 1234', '<%= config.bin %> lease keepalive 1234 --forever'];

  static override args = { id: Args.string({ description: 'the lease id', required: true }) };

  static override flags = {
    ...clusterFlags,
    forever: Flags.boolean({ description: 'renew every third of the TTL until interrupted', default: false }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeaseKeepalive);
    for (;;) {
      const r = await withClient(this, flags, (c) =>
        c.keepAliveLease(args.id).catch((e: unknown) => {
          if (e instanceof PangeaError && e.code === 'lease_not_found') fail(this, `lease ${args.id}: not found (unknown, revoked or expired)`, 1);
          throw e;
        }),
      );
      this.log(flags.json ? JSON.stringify(r) : `lease ${r.id} ttl ${r.ttl} index ${r.index}`);
      if (!flags.forever) return;
      await sleep((r.ttl * 1000) / 3);
    }
  }
}
