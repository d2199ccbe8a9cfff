import { readFile } from 'node:fs/promises';
import { Args, Command, Flags } from '@oclif/core';
import { clusterFlags, fail, withClient } from '../../cli/cluster-client.js';
import type { CollectionDefinition } from '../../client.js';

export default class CollectionsDefine extends Command {
  static override summary = 'Define a collection, or change its definition, from a JSON file.';
  static override description = `FILE (or - for stdin) holds {"kind", "schema", "primaryKey", "indexes"} as the API takes
it. A change of schema applies to records written after it; an index added to a collection
with records is built by the leader in steps (see \`collections get\`). --if-version N changes
it only over version N; --if-absent only creates it. Prints the new version.`;

  static override examples = ['<%= config.bin %> collections define people people.json', 'cat people.json | <%= config.bin %> collections define people - --if-absent'];

  static override args = {
    name: Args.string({ description: 'the collection ([a-z0-9_-], 1 to 64)', required: true }),
    file: Args.string({ description: 'the definition (JSON), or - for stdin', required: true }),
  };

  static override flags = {
    ...clusterFlags,
    'if-version': Flags.integer({ description: 'change it only if its version is this one', min: 1, exclusive: ['if-absent'] }),
    'if-absent': Flags.boolean({ description: 'create it only if it does not exist', default: false }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(CollectionsDefine);
    let def: CollectionDefinition;
    try {
      const text = args.file === '-' ? await readStdin() : await readFile(args.file, 'utf8');
      def = JSON.parse(text) as CollectionDefinition;
    } catch (err) {
      fail(this, `${args.file}: ${(err as Error).message}`, 2);
    }
    const r = await withClient(this, flags, (c) => c.collection(args.name).define(def, { ...(flags['if-version'] === undefined ? {} : { ifVersion: flags['if-version'] }), ...(flags['if-absent'] ? { ifAbsent: true } : {}) }));
    this.log(flags.json ? JSON.stringify(r) : `version ${r.version} index ${r.index}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
