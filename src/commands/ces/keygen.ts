import { Command, Flags } from '@oclif/core';
import { writeNewKeyFile } from '../../ces/keys.js';
import { CesError } from '../../ces/errors.js';

export default class CesKeygen extends Command {
  static override summary = 'Create a CES key file (32 random bytes, hex, mode 0600).';
  static override description = 'Refuses to overwrite an existing file. Prints the key id, which shard headers record.';
  static override flags = {
    out: Flags.string({ description: 'key file to create', required: true }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(CesKeygen);
    try {
      const key = await writeNewKeyFile(flags.out);
      this.log(`wrote ${flags.out} (key id ${key.idHex})`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') this.error(`${flags.out} exists; not overwriting it`, { exit: 1 });
      if (e instanceof CesError) this.error(e.message, { exit: 1 });
      throw e;
    }
  }
}
