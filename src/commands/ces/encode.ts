import { Args, Command, Flags } from '@oclif/core';
import { encodeFile } from '../../ces/files.js';
import { readKeyFile } from '../../ces/keys.js';
import { CesError } from '../../ces/errors.js';
import { paramsDefault } from '../../ces/params.js';

export default class CesEncode extends Command {
  static override summary = 'Compress, encrypt and erasure-code a file into OUTDIR/shard-0 .. shard-{k+m-1}.';
  static override args = {
    input: Args.string({ description: 'file to encode ("-" for stdin)', required: true }),
    outdir: Args.string({ description: 'directory for the shard files', required: true }),
  };
  static override flags = {
    'key-file': Flags.string({ description: 'key file (see `pangea ces keygen`)', required: true }),
    'data-shards': Flags.integer({ description: 'k: data shards, 1..24', default: paramsDefault.dataShards }),
    'parity-shards': Flags.integer({ description: 'm: parity shards, 0..6', default: paramsDefault.parityShards }),
    label: Flags.string({ description: 'context bound into the object (cluster id, index range...); decode needs the same', default: '' }),
    'stripe-bytes': Flags.integer({ description: 'plaintext bytes per stripe', default: paramsDefault.stripeBytes }),
    level: Flags.integer({ description: 'zstd level', default: paramsDefault.level }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CesEncode);
    try {
      const key = await readKeyFile(flags['key-file']);
      const r = await encodeFile(args.input, args.outdir, key, flags.label, {
        dataShards: flags['data-shards'],
        parityShards: flags['parity-shards'],
        stripeBytes: flags['stripe-bytes'],
        level: flags.level,
      });
      const ratio = r.compressedBytes > 0 ? (r.totalBytes / r.compressedBytes).toFixed(2) : '-';
      this.logToStderr(`encoded ${r.totalBytes} bytes in ${r.stripeCount} stripes into ${r.params.dataShards}+${r.params.parityShards} ` +
        `shards of ${r.shardBytes} bytes (compression ${ratio}x, key id ${key.idHex}, object ${r.objectId})`);
    } catch (e) {
      if (e instanceof CesError) this.error(e.message, { exit: 1 });
      throw e;
    }
  }
}
