import { Args, Command, Flags } from '@oclif/core';
import { loadKeyRing, verifyDir } from '../../ces/files.js';
import { CesError } from '../../ces/errors.js';

export default class CesVerify extends Command {
  static override summary = 'Check the shard files in SHARDDIR: which are good, which are bad, and whether the object can be rebuilt.';
  static override description = 'Reads every shard through and authenticates every stripe. Exits 1 if the object cannot be rebuilt.';
  static override args = {
    sharddir: Args.string({ description: 'directory holding shard-<i> files', required: true }),
  };
  static override flags = {
    'key-file': Flags.string({ description: 'key file; repeat for a key ring', required: true, multiple: true, multipleNonGreedy: true }),
    label: Flags.string({ description: 'also check the label (default: accept the one in the shards)' }),
    json: Flags.boolean({ description: 'print the report as JSON' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CesVerify);
    let report;
    try {
      report = await verifyDir(args.sharddir, await loadKeyRing(flags['key-file']), flags.label);
    } catch (e) {
      if (e instanceof CesError) this.error(e.message, { exit: 1 });
      throw e;
    }
    if (flags.json) {
      this.log(JSON.stringify({ ...report, error: report.error?.message }));
    } else {
      const n = (report.dataShards ?? 0) + (report.parityShards ?? 0);
      this.log(`${report.goodShards} of ${n || '?'} shards good (k = ${report.dataShards ?? '?'}, m = ${report.parityShards ?? '?'}); ` +
        `${report.stripeCount} stripes, ${report.totalBytes} bytes checked`);
      for (const s of report.shards) {
        this.log(`  ${s.status.padEnd(8)} ${s.name}${s.shardIndex === undefined ? '' : ` [${s.shardIndex}]`}${s.problems.length ? `: ${s.problems.join('; ')}` : ''}`);
      }
      this.log(report.rebuildable ? 'rebuildable: yes' : `rebuildable: NO (${report.error?.message ?? 'unknown'})`);
    }
    if (!report.rebuildable) this.exit(1);
  }
}
