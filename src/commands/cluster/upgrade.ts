import { Command, Flags } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';
import { APPLY_LEVEL_MAX } from '../../state/command.js';

export default class ClusterUpgrade extends Command {
  static override summary = "Raise the cluster's apply level once every member runs a build that applies it: the last step of a rolling upgrade.";
  static override description = `A build that changes how the log is applied (a new kind of write, a changed rule) keeps
applying it the old way until the cluster's apply level says otherwise, so old and new builds
agree during a rolling upgrade. Once every member runs the new build, this raises the level:
the node asks every member which build it runs and refuses (409, naming them) if any does not
answer or cannot apply the level; otherwise the level is a command in the log and takes
effect on every node at its index. Levels are never lowered: an older build cannot apply the
log past that index (it halts there, saying so). Defaults to the newest level this pangea
knows; \`pangea version --cluster\` and GET /v1/cluster show what each member runs. Needs the
admin token where the cluster requires one.`;

  static override examples = ['<%= config.bin %> cluster upgrade --endpoints http://10.0.0.5:7070 --admin-token-file token'];

  static override flags = {
    ...clusterFlags,
    level: Flags.integer({ description: 'the apply level to raise to (default: the newest this build knows)', min: 1 }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ClusterUpgrade);
    const level = flags.level ?? APPLY_LEVEL_MAX;
    const r = await withClient(this, flags, (c) => c.raiseLevel(level));
    this.log(flags.json ? JSON.stringify(r) : `the cluster is at apply level ${r.level} (index ${r.index})`);
  }
}
