import { Command, Flags } from '@oclif/core';
import { startServer, type ServeOptions } from '../server.js';
import { isLogLevel } from '../logger.js';
import { loadConfigFile, parseHostPort } from '../config.js';

export default class Serve extends Command {
  static override summary = 'Run a Pangea node.';
  static override description = `An empty data dir without --join bootstraps a one-member cluster; with --join URL the node
is added to the cluster of that member through the log (as a learner, promoted to voter once
it has caught up). A node restarted on an existing data dir resumes and ignores --join.
Stops cleanly on SIGINT and SIGTERM.`;

  static override examples = [
    '<%= config.bin %> serve',
    '<%= config.bin %> serve --data-dir ./n2 --http-listen 127.0.0.1:7080 --p2p-listen /ip4/127.0.0.1/tcp/7081 --join http://127.0.0.1:7070',
  ];

  static override flags = {
    'data-dir': Flags.string({ description: 'where the node keeps its LMDB files and identity', default: './pangea-data' }),
    'http-listen': Flags.string({ description: 'HOST:PORT of the client API (port 0: any free port)', default: '127.0.0.1:7070' }),
    'p2p-listen': Flags.string({
      description: 'libp2p listen multiaddr (repeatable)',
      multiple: true,
      default: ['/ip4/127.0.0.1/udp/7071/quic-v1', '/ip4/127.0.0.1/tcp/7071'],
    }),
    join: Flags.string({ description: 'HTTP URL of any member of the cluster to join (ignored on an existing data dir)' }),
    config: Flags.string({ description: 'JSON config file; flags given on the command line override it' }),
    'metrics-listen': Flags.string({ description: 'HOST:PORT of a second listener for /healthz, /readyz and /metrics' }),
    'advertise-http': Flags.string({ description: 'the HTTP URL peers and clients are told (for nodes listening on 0.0.0.0)' }),
    'advertise-p2p': Flags.string({ description: 'a multiaddr peers are told (repeatable)', multiple: true }),
    'admin-token-file': Flags.string({ description: 'file holding the bearer token membership changes require (and --join sends)' }),
    'force-new-cluster': Flags.boolean({ description: 'disaster recovery: restart this data dir as a one-member cluster after a quorum is lost for good', default: false }),
    'max-value-bytes': Flags.integer({ description: 'largest value accepted', default: 1 << 20, min: 0 }),
    'max-request-bytes': Flags.integer({ description: 'largest request body accepted', default: 2 << 20, min: 1 }),
    'max-txn-ops': Flags.integer({ description: 'most compares plus operations in one transaction', default: 128, min: 1 }),
    'log-level': Flags.string({ description: 'debug, info, warn or error', default: 'info' }),
  };

  async run(): Promise<void> {
    const { flags, raw } = await this.parse(Serve);
    const given = new Set(raw.filter((r) => r.type === 'flag').map((r) => (r as { flag: string }).flag));
    const file = flags.config ? loadConfigFile(flags.config) : {};
    const fileValues = file as Record<string, unknown>;
    const flagValues = flags as Record<string, unknown>;
    // A flag typed on the command line wins over the config file, which wins over defaults.
    const pick = (k: string): unknown => (given.has(k) || fileValues[k] === undefined ? flagValues[k] : fileValues[k]);

    const level = pick('log-level') as string;
    if (!isLogLevel(level)) this.error(`--log-level must be debug, info, warn or error, not ${level}`, { exit: 2 });
    const options: ServeOptions = {
      dataDir: pick('data-dir') as string,
      httpListen: parseHostPort(pick('http-listen') as string, '--http-listen'),
      p2pListen: pick('p2p-listen') as string[],
      join: pick('join') as string | undefined,
      metricsListen: pick('metrics-listen') ? parseHostPort(pick('metrics-listen') as string, '--metrics-listen') : undefined,
      advertiseHttp: pick('advertise-http') as string | undefined,
      advertiseP2p: pick('advertise-p2p') as string[] | undefined,
      adminTokenFile: pick('admin-token-file') as string | undefined,
      forceNewCluster: pick('force-new-cluster') as boolean,
      maxValueBytes: pick('max-value-bytes') as number,
      maxRequestBytes: pick('max-request-bytes') as number,
      maxTxnOps: pick('max-txn-ops') as number,
      logLevel: level,
    };
    const server = await startServer(options);
    this.log(server.banner());
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        server.logger.info('stopping', { signal });
        server.stop().then(resolve, (err: unknown) => {
          server.logger.error('unclean stop', { err });
          resolve();
        });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  }
}
