/**
 * The stored form of a slot: a msgpack array `[round, leader, chosen, commands]`, where an
 * application command is its bytes and a membership change is `[op, node]` or
 * `[op, node, meta]`. The slot number is the key, so it is not repeated in the value.
 */
import type { Batch, Command, ConfigChange, StoredSlot } from '../consensus/index.js';
import { pack, unpack } from '../storage/env.js';

type StoredCommand = Uint8Array | [ConfigChange['op'], string] | [ConfigChange['op'], string, Uint8Array];

export function encodeSlot(slot: StoredSlot): Uint8Array {
  return pack([slot.ballot.round, slot.ballot.leader, slot.chosen, commandsValue(slot.batch)]);
}

/** A batch as a msgpack-ready value (also the archive's segment records). */
export function commandsValue(batch: Batch): StoredCommand[] {
  return batch.map((cmd) => {
    if (cmd.kind === 'app') return cmd.data;
    const { op, node, meta } = cmd.change;
    return meta === undefined ? [op, node] : [op, node, meta];
  });
}

const CHANGE_OPS: readonly string[] = ['add_voter', 'add_learner', 'promote', 'remove'];

/** Decodes what `encodeSlot` wrote; throws on anything else (the log is our own file). */
export function decodeSlot(slotNumber: number, stored: Uint8Array): StoredSlot {
  const v = unpack(stored);
  if (!Array.isArray(v) || v.length !== 4) throw new Error(`slot ${slotNumber}: corrupt record`);
  const [round, leader, chosen, commands] = v as unknown[];
  if (typeof round !== 'number' || typeof leader !== 'string' || typeof chosen !== 'boolean' || !Array.isArray(commands)) {
    throw new Error(`slot ${slotNumber}: corrupt record`);
  }
  return { slot: slotNumber, ballot: { round, leader }, batch: batchOf(slotNumber, commands), chosen };
}

/** The batch `commandsValue` described; throws on anything else. */
export function batchOf(slotNumber: number, commands: readonly unknown[]): Batch {
  return commands.map((c: unknown): Command => {
    if (c instanceof Uint8Array) return { kind: 'app', data: c };
    if (Array.isArray(c) && CHANGE_OPS.includes(c[0] as string) && typeof c[1] === 'string') {
      const op = c[0] as ConfigChange['op'];
      const meta: unknown = c[2];
      if (meta === undefined) return { kind: 'config', change: { op, node: c[1] } };
      if (meta instanceof Uint8Array) return { kind: 'config', change: { op, node: c[1], meta } };
    }
    throw new Error(`slot ${slotNumber}: corrupt command`);
  });
}
