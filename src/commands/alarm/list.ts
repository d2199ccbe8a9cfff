import { Command } from '@oclif/core';
import { clusterFlags, withClient } from '../../cli/cluster-client.js';
import { alarmsOf, memberMetrics } from '../../cli/endpoints.js';

export default class AlarmList extends Command {
  static override summary = 'List what needs attention on each member: hot-log quota, archive and prune errors, a stalled commit, not ready.';
  static override description = `Reads every member's /metrics directly and prints one line per alarm: the member, the alarm
and what it means (hot_quota: writes refused until the archive catches up; archive or prune:
the last error; commit_stalled: writes waiting while the commit index stands still;
not_ready; unreachable). Prints nothing when there is none. Exit 0 either way (1 only when
no member can be listed).`;

  static override examples = ['<%= config.bin %> alarm list', '<%= config.bin %> alarm list --json'];

  static override flags = { ...clusterFlags };

  async run(): Promise<void> {
    const { flags } = await this.parse(AlarmList);
    const all = await withClient(this, flags, (c) => memberMetrics(c));
    const alarms = all.flatMap((m) => (m.text === null ? [{ peerId: m.peerId, http: m.http, alarm: `unreachable: ${m.reason}` }] : alarmsOf(m.text).map((alarm) => ({ peerId: m.peerId, http: m.http, alarm }))));
    if (flags.json) return this.log(JSON.stringify(alarms));
    for (const a of alarms) this.log(`${a.peerId}  ${a.http || '-'}  ${a.alarm}`);
  }
}
