import { Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../cli/cluster-client.js';
import { memberMetrics, samples } from '../cli/endpoints.js';
import { DATA_FORMAT } from '../data-dir.js';
import { BUILD_INFO, PANGEA_VERSION } from '../version.js';

export default class Version extends Command {
  static override summary = "Print this build's version; with --cluster, every member's too.";
  static override description = `Prints the version of this pangea, the Node.js it runs on and the data format it writes.
With --cluster, asks every member of the cluster at --endpoints for its build (from
pangea_build_info on /metrics), so a rolling upgrade can be checked.`;

  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --cluster --endpoints http://10.0.0.5:7070'];

  static override flags = {
    ...clusterFlags,
    cluster: Flags.boolean({ description: "also print every member's version", default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Version);
    const self = { version: PANGEA_VERSION, node: process.version, dataFormat: DATA_FORMAT, applyLevels: `${BUILD_INFO.levels[0]}-${BUILD_INFO.levels[1]}` };
    if (!flags.cluster) return this.log(flags.json ? JSON.stringify(self) : `pangea ${self.version} (node ${self.node}, data format ${self.dataFormat}, apply levels ${self.applyLevels})`);
    const all = await withClient(this, flags, (c) => memberMetrics(c));
    const members = all.map((m) => {
      const info = m.text === null ? undefined : samples(m.text, 'pangea_build_info')[0]?.labels;
      return { peerId: m.peerId, http: m.http, ...(info ? { version: info.version, node: info.node, applyLevels: info.apply_levels ?? '1-1' } : { error: m.reason ?? 'no pangea_build_info' }) };
    });
    if (flags.json) return this.log(JSON.stringify({ self, members }));
    this.log(`pangea ${self.version} (node ${self.node}, data format ${self.dataFormat}, apply levels ${self.applyLevels})`);
    for (const m of members) this.log(`${m.peerId}  ${m.http || '-'}  ${'version' in m ? `${m.version} (node ${m.node}, apply levels ${m.applyLevels})` : `unknown: ${m.error}`}`);
  }
}
