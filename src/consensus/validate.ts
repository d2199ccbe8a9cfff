/**
 * Structural validation of everything that reaches `Replica.step`. A message that fails is
 * dropped and counted, never half-applied: the core trusts nothing it did not build.
 */
import type { Ballot, Batch, Command, ConfigChange, ConfigEpoch, Envelope, LogPoint, Message, SlotValue, StoredSlot } from './types.js';

/** Bounds on what one message may carry; a frame that passes them is still bounded by the
 *  transport's frame size limit. */
export const LIMITS = {
  nodeIdLengthMax: 128,
  clusterIdLengthMax: 128,
  valuesPerMessageMax: 4096,
  commandsPerBatchMax: 65_536,
  epochsMax: 64,
  votersMax: 64,
} as const;

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isId = (v: unknown, max: number = LIMITS.nodeIdLengthMax): v is string =>
  typeof v === 'string' && v.length <= max;
const isNodeId = (v: unknown): v is string => isId(v) && (v as string).length > 0;

export function isBallot(v: unknown): v is Ballot {
  return isObj(v) && isCount(v.round) && isId(v.leader);
}

function isChange(v: unknown): v is ConfigChange {
  return (
    isObj(v) &&
    (v.op === 'add_voter' || v.op === 'add_learner' || v.op === 'promote' || v.op === 'remove') &&
    isNodeId(v.node) &&
    (v.meta === undefined || v.meta instanceof Uint8Array)
  );
}

export function isCommand(v: unknown): v is Command {
  if (!isObj(v)) return false;
  if (v.kind === 'app') return v.data instanceof Uint8Array;
  if (v.kind === 'config') return isChange(v.change);
  return false;
}

function isBatch(v: unknown): v is Batch {
  return Array.isArray(v) && v.length <= LIMITS.commandsPerBatchMax && v.every(isCommand);
}

function isSlotValue(v: unknown): v is SlotValue {
  return isObj(v) && isCount(v.slot) && v.slot > 0 && isBatch(v.batch);
}

function isStoredSlot(v: unknown): v is StoredSlot {
  return isSlotValue(v) && isBallot((v as unknown as Obj).ballot) && typeof (v as unknown as Obj).chosen === 'boolean';
}

function isList<T>(v: unknown, item: (x: unknown) => x is T): v is T[] {
  return Array.isArray(v) && v.length <= LIMITS.valuesPerMessageMax && v.every(item);
}

function isIdList(v: unknown): v is string[] {
  return Array.isArray(v) && v.length <= LIMITS.votersMax && v.every(isNodeId);
}

function isEpoch(v: unknown): v is ConfigEpoch {
  return isObj(v) && isCount(v.fromSlot) && isObj(v.config) && isIdList(v.config.voters) && isIdList(v.config.learners);
}

export function isLogPoint(v: unknown): v is LogPoint {
  return (
    isObj(v) &&
    isCount(v.slot) &&
    isCount(v.index) &&
    Array.isArray(v.epochs) &&
    v.epochs.length > 0 &&
    v.epochs.length <= LIMITS.epochsMax &&
    v.epochs.every(isEpoch)
  );
}

function isMessage(m: unknown): m is Message {
  if (!isObj(m)) return false;
  switch (m.type) {
    case 'prevote':
      return isCount(m.round) && isCount(m.commit);
    case 'prevote_reply':
      return isCount(m.round) && typeof m.granted === 'boolean';
    case 'prepare':
      return isBallot(m.ballot) && isCount(m.commit) && (m.transfer === undefined || isBallot(m.transfer));
    case 'timeout_now':
      return isBallot(m.ballot);
    case 'promise':
      return isBallot(m.ballot) && isCount(m.commit) && isCount(m.compacted) && isList(m.accepted, isStoredSlot);
    case 'accept':
      return isBallot(m.ballot) && isCount(m.commit) && isList(m.values, isSlotValue);
    case 'accepted':
      return isBallot(m.ballot) && isList(m.slots, isCount);
    case 'reject':
      return isBallot(m.ballot) && isBallot(m.promised);
    case 'commit':
      return isBallot(m.ballot) && isCount(m.commit);
    case 'heartbeat':
      return isBallot(m.ballot) && isCount(m.commit) && isCount(m.seq);
    case 'heartbeat_ack':
      return isBallot(m.ballot) && isCount(m.seq);
    case 'catchup_req':
      return isCount(m.from) && isCount(m.to) && m.from > 0;
    case 'catchup':
      return isList(m.values, isSlotValue) && isCount(m.commit) && (m.snapshot === null || isLogPoint(m.snapshot));
    case 'commit_query':
      return true;
    case 'commit_reply':
      return isCount(m.commit) && typeof m.member === 'boolean' && isCount(m.fromSlot);
    case 'read_req':
      return isCount(m.id);
    case 'read_reply':
      return isCount(m.id) && (m.index === null || isCount(m.index));
    default:
      return false;
  }
}

/** The envelope if `raw` is a well-formed one, else null. */
export function validateEnvelope(raw: unknown): Envelope | null {
  if (!isObj(raw)) return null;
  if (!isId(raw.cluster, LIMITS.clusterIdLengthMax) || !isNodeId(raw.from) || !isNodeId(raw.to)) return null;
  return isMessage(raw.msg) ? (raw as unknown as Envelope) : null;
}
