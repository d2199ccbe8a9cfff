import { Command, Flags } from '@oclif/core';
import { clusterFlags, fail, showBytes, withClient } from '../cli/cluster-client.js';

export default class Watch extends Command {
  static override summary = 'Print the changes of a key or a prefix as JSON lines, as the cluster applies them.';
  static override description = `One line per log index that changed the key or prefix: {"index", "changes": [{"type":
"put"|"delete", "key", "value", "revision", "cause"}]}, values as text (base64:... when not
UTF-8). Starts after --after N, else at a linearizable read index; reconnects through the
other members with the last index seen, so no change is missed or printed twice. Runs until
interrupted.`;

  static override examples = ['<%= config.bin %> watch --prefix config/', '<%= config.bin %> watch --url http://10.0.0.5:7070 --key leader --after 1200'];

  static override flags = {
    ...clusterFlags,
    url: Flags.string({ description: 'a node to watch through (the same as --endpoints)' }),
    key: Flags.string({ description: 'watch this key', exactlyOne: ['key', 'prefix'] }),
    prefix: Flags.string({ description: 'watch the keys that start with this', exactlyOne: ['key', 'prefix'] }),
    after: Flags.integer({ description: 'the last index already seen: print the changes after it', min: 0 }),
    'no-values': Flags.boolean({ description: 'print puts without their values', default: false }),
    progress: Flags.integer({ description: 'also print {"progress": index} after this many quiet seconds', min: 1, max: 3600 }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Watch);
    const endpoints = flags.url ?? flags.endpoints;
    const stop = new AbortController();
    const onSignal = (): void => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await withClient(this, { ...flags, endpoints }, async (c) => {
        const events = c.watch({
          ...(flags.key !== undefined ? { key: flags.key } : { prefix: flags.prefix! }),
          ...(flags.after !== undefined ? { after: flags.after } : {}),
          ...(flags['no-values'] ? { values: false } : {}),
          ...(flags.progress !== undefined ? { progressS: flags.progress } : {}),
          signal: stop.signal,
        });
        for await (const ev of events) {
          if (ev.kind === 'progress') {
            this.log(JSON.stringify({ progress: ev.index }));
            continue;
          }
          const changes = ev.changes.map((ch) => ({ ...ch, ...(ch.value !== undefined ? { value: showBytes(ch.value) } : {}) }));
          this.log(JSON.stringify({ index: ev.index, changes }));
        }
      });
    } catch (err) {
      fail(this, (err as Error).message, 1);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
