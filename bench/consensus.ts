/**
 * `npm run bench -- consensus`: the consensus core alone, three replicas in one process, a
 * zero-latency network and instant persistence. Reports commands committed per second and
 * the CPU cost per command at batch sizes 1, 16 and 256 (commands per slot).
 */
import { Replica, bootstrapState, type Envelope, type Ready } from '../src/consensus/index.js';

const IDS = ['a', 'b', 'c'];
const RUN_MS = 2000;

interface Figures {
  commandsPerS: number;
  cpuNsPerCommand: number;
  slotsPerS: number;
}

function measure(batch: number): Figures {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
  const config = { voters: IDS, learners: [] };
  const replicas = new Map(
    IDS.map((id) => [id, new Replica({ id, cluster: 'bench', random, batchCommandsMax: batch, alpha: 32 }, bootstrapState(config))]),
  );
  const inbox: Envelope[] = [];
  let committed = 0;
  let slots = 0;
  const perform = (r: Replica, ready: Ready, leader: boolean): void => {
    r.persisted(ready.persistSeq); // instant, durable storage
    for (const env of ready.sendAfterPersist) inbox.push(env);
    for (const env of ready.send) inbox.push(env);
    if (leader) {
      for (const e of ready.commit) committed += e.batch.length;
      slots += ready.commit.length;
    }
  };
  const pump = (): void => {
    for (;;) {
      let progressed = false;
      for (const r of replicas.values()) {
        const ready = r.ready();
        if (ready !== null) {
          perform(r, ready, r.currentRole === 'leader');
          progressed = true;
        }
      }
      while (inbox.length > 0) {
        const env = inbox.shift()!;
        replicas.get(env.to)!.step(env);
        progressed = true;
      }
      if (!progressed) return;
    }
  };
  const leader = replicas.get('a')!;
  for (let i = 0; i < 100 && leader.currentRole !== 'leader'; i++) {
    leader.tick();
    pump();
  }
  if (leader.currentRole !== 'leader') throw new Error('no leader elected');

  const data = new Uint8Array(100);
  const cmd = { kind: 'app' as const, data };
  const window = batch * 32;
  committed = 0;
  slots = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let elapsed = 0;
  while ((elapsed = performance.now() - t0) < RUN_MS) {
    while (leader.queuedCommands < window) leader.propose(cmd);
    pump();
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuNs = (cpu.user + cpu.system) * 1000;
  return {
    commandsPerS: Math.round(committed / (elapsed / 1000)),
    cpuNsPerCommand: Math.round(cpuNs / Math.max(1, committed)),
    slotsPerS: Math.round(slots / (elapsed / 1000)),
  };
}

export async function run(): Promise<void> {
  const out: Record<string, number> = {};
  console.log('consensus core, 3 replicas in one process, zero-latency network, instant persistence');
  for (const batch of [1, 16, 256]) {
    measure(batch); // warm-up
    const f = measure(batch);
    console.log(
      `batch ${String(batch).padStart(3)}: ${f.commandsPerS.toLocaleString('en')} commands/s, ` +
        `${f.slotsPerS.toLocaleString('en')} slots/s, ${f.cpuNsPerCommand.toLocaleString('en')} ns CPU per command (all three replicas)`,
    );
    out[`commands_per_s_batch_${batch}`] = f.commandsPerS;
    out[`cpu_ns_per_command_batch_${batch}`] = f.cpuNsPerCommand;
    out[`slots_per_s_batch_${batch}`] = f.slotsPerS;
  }
  console.log(JSON.stringify(out));
}
