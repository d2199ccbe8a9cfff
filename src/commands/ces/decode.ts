import { Args, Command, Flags } from '@oclif/core';
import { decodeDir, loadKeyRing } from '../../ces/files.js';
import { CesError } from '../../ces/errors.js';

export default class CesDecode extends Command {
  static override summary = 'Rebuild, decrypt and decompress an object from the shard files in SHARDDIR.';
  static override description = 'Uses whatever shard-<i> files are there; any k good ones suffice. OUTPUT appears only if decoding succeeds.';
  static override args = {
    sharddir: Args.string({ description: 'directory holding shard-<i> files', required: true }),
    output: Args.string({ description: 'file to write ("-" for stdout)', required: true }),
  };
  static override flags = {
    'key-file': Flags.string({ description: 'key file; repeat for a key ring (keys rotate)', required: true, multiple: true, multipleNonGreedy: true }),
    label: Flags.string({ description: 'the label given at encoding', default: '' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CesDecode);
    try {
      await decodeDir(args.sharddir, args.output, await loadKeyRing(flags['key-file']), flags.label);
    } catch (e) {
      if (e instanceof CesError) this.error(e.message, { exit: 1 });
      throw e;
    }
  }
}
