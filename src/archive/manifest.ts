/**
 * The archive's manifest: what the archive holds (segments, snapshots, their shards'
 * checksums, ranges, chain values, CES parameters, key id), versioned and signed.
 *
 * A manifest object is never overwritten. Each version is a new object named
 * `manifests/<round>-<signer>-<version>.json` (round and version zero-padded, so key order
 * is (ballot, version) order), written by the leader of ballot (round, signer) and signed
 * with its ed25519 identity key (@noble/curves). Every version contains everything the
 * previous one did. Readers take the valid manifest with the highest ballot, then the
 * highest version: a deposed leader's late write has a lower ballot than its successor's
 * and is ignored. A signature binds the body to its signer; `trusted` decides which signers
 * count (the cluster's members when the reader knows them).
 *
 * Why the manifest need not be the only defence: every segment and snapshot is encrypted and
 * authenticated under the cluster's archive key (CES), and a segment's hash chain must
 * continue the previous one's. The signature decides between manifests, not between bytes.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { peerIdFromString } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import type { Ballot, LogPoint } from '../consensus/index.js';
import type { CesParams } from '../ces/index.js';
import type { ObjectStore } from './store.js';

export const MANIFEST_VERSION = 1;
export const MANIFEST_PREFIX = 'manifests/';
const SIGNING_CONTEXT = 'pangea-manifest/1\n';
/** Manifests read per listing before giving up on finding a valid one. */
const CANDIDATES_MAX = 64;

export interface ShardRecord {
  readonly size: number;
  /** Hex SHA-256 of the shard object. */
  readonly sha256: string;
}

/** One CES-encoded object: `k + m` shard objects `<prefix>/shard-<i>`. */
export interface EncodedObject {
  /** Key prefix of its shards. */
  readonly prefix: string;
  /** The CES label it was encoded under. */
  readonly label: string;
  /** Plaintext bytes. */
  readonly rawBytes: number;
  readonly shards: readonly ShardRecord[];
}

export interface SegmentRecord extends EncodedObject {
  readonly first: { readonly slot: number; readonly index: number };
  readonly last: { readonly slot: number; readonly index: number };
  /** Hex chain values before the first command and after the last. */
  readonly chainBefore: string;
  readonly chainAfter: string;
  /** What its indexes changed, for watch below the hot log (effects-object.ts). Absent for
   *  a segment archived by a leader whose journal did not reach back to it. */
  readonly effects?: EffectsRecord;
}

/** A segment's effects object: its rows' hash chain (effects-object.ts EffectsDigest). */
export interface EffectsRecord extends EncodedObject {
  readonly digest: string;
}

export interface SnapshotRecord extends EncodedObject {
  /** The applied point the snapshot holds (a segment boundary). */
  readonly point: LogPoint;
  readonly chain: string;
}

export interface ManifestBody {
  readonly v: number;
  readonly cluster: string;
  readonly version: number;
  readonly ballot: Ballot;
  /** Wall-clock milliseconds at signing: informational only. */
  readonly created: number;
  readonly keyId: string;
  readonly ces: CesParams;
  /** Contiguous, in order. Listed only after each was read back and verified. */
  readonly segments: readonly SegmentRecord[];
  /** In point order. */
  readonly snapshots: readonly SnapshotRecord[];
  /** The voters when it was signed (peer ids). */
  readonly voters: readonly string[];
}

export interface SignedManifest {
  readonly key: string;
  readonly body: ManifestBody;
}

export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

export function manifestKey(ballot: Ballot, version: number): string {
  return `${MANIFEST_PREFIX}${pad(ballot.round, 16)}-${ballot.leader}-${pad(version, 12)}.json`;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

const NAME = /^manifests\/(\d{16})-([1-9A-HJ-NP-Za-km-z]{20,100})-(\d{12})\.json$/;

export function parseManifestKey(key: string): { round: number; signer: string; version: number } | null {
  const m = NAME.exec(key);
  return m ? { round: Number(m[1]), signer: m[2]!, version: Number(m[3]) } : null;
}

/** The ed25519 seed of a libp2p Ed25519 identity key. */
function seedOf(key: PrivateKey): Uint8Array {
  if (key.type !== 'Ed25519') throw new ManifestError(`manifests are signed with ed25519 identity keys, not ${key.type}`);
  return key.raw.subarray(0, 32);
}

export function signManifest(body: ManifestBody, key: PrivateKey): Uint8Array {
  const text = JSON.stringify(body);
  const sig = ed25519.sign(new TextEncoder().encode(SIGNING_CONTEXT + text), seedOf(key));
  return new TextEncoder().encode(JSON.stringify({ sig: Buffer.from(sig).toString('hex'), body: text }) + '\n');
}

/** Parses and checks one manifest object; throws ManifestError saying why it is not valid. */
export function openManifest(key: string, bytes: Uint8Array, cluster: string | null): ManifestBody {
  const name = parseManifestKey(key);
  if (name === null) throw new ManifestError(`${key}: not a manifest name`);
  let outer: { sig?: unknown; body?: unknown };
  let body: ManifestBody;
  try {
    outer = JSON.parse(new TextDecoder().decode(bytes)) as typeof outer;
    if (typeof outer.sig !== 'string' || typeof outer.body !== 'string') throw new Error('no sig and body');
    body = JSON.parse(outer.body) as ManifestBody;
  } catch (err) {
    throw new ManifestError(`${key}: unreadable (${(err as Error).message})`);
  }
  let publicKey: Uint8Array;
  try {
    const pk = peerIdFromString(name.signer).publicKey;
    if (pk === undefined || pk.type !== 'Ed25519') throw new Error('not an ed25519 peer id');
    publicKey = pk.raw;
  } catch (err) {
    throw new ManifestError(`${key}: signer ${name.signer} is not an ed25519 peer id (${(err as Error).message})`);
  }
  const signed = new TextEncoder().encode(SIGNING_CONTEXT + outer.body);
  let ok = false;
  try {
    ok = /^[0-9a-f]{128}$/.test(outer.sig) && ed25519.verify(Buffer.from(outer.sig, 'hex'), signed, publicKey);
  } catch {
    ok = false;
  }
  if (!ok) throw new ManifestError(`${key}: bad signature`);
  if (body.v !== MANIFEST_VERSION) throw new ManifestError(`${key}: unknown manifest version ${String(body.v)}`);
  if (body.version !== name.version || body.ballot?.round !== name.round || body.ballot?.leader !== name.signer) {
    throw new ManifestError(`${key}: its body names another version or ballot`);
  }
  if (cluster !== null && body.cluster !== cluster) throw new ManifestError(`${key}: belongs to cluster ${body.cluster}, not ${cluster}`);
  if (!Array.isArray(body.segments) || !Array.isArray(body.snapshots)) throw new ManifestError(`${key}: malformed lists`);
  return body;
}

export interface ManifestScan {
  /** The manifest to use, or null when the archive has none valid. */
  readonly best: SignedManifest | null;
  /** Manifests skipped on the way, and why (bad signature, untrusted signer...). */
  readonly rejected: readonly { key: string; reason: string }[];
  /** Every manifest name in the store. */
  readonly names: readonly string[];
}

/**
 * Finds the manifest to use: the valid one with the highest (ballot, version) whose signer
 * `trusted` accepts (default: any valid signature). Reads from the highest name down.
 */
export async function readBestManifest(
  store: ObjectStore,
  cluster: string | null,
  trusted: (signer: string) => boolean = () => true,
): Promise<ManifestScan> {
  const names = (await store.list(MANIFEST_PREFIX)).map((o) => o.key).filter((k) => parseManifestKey(k) !== null);
  const ordered = [...names].sort(compareManifestKeys).reverse();
  const rejected: { key: string; reason: string }[] = [];
  for (const key of ordered.slice(0, CANDIDATES_MAX)) {
    const signer = parseManifestKey(key)!.signer;
    if (!trusted(signer)) {
      rejected.push({ key, reason: `signer ${signer} is not a member` });
      continue;
    }
    try {
      const body = openManifest(key, await store.get(key), cluster);
      return { best: { key, body }, rejected, names };
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      rejected.push({ key, reason: err.message });
    }
  }
  return { best: null, rejected, names };
}

/** (round, signer, version) order; names are zero-padded, but compare numbers anyway. */
export function compareManifestKeys(a: string, b: string): number {
  const x = parseManifestKey(a)!;
  const y = parseManifestKey(b)!;
  return x.round - y.round || (x.signer < y.signer ? -1 : x.signer > y.signer ? 1 : 0) || x.version - y.version;
}
