/**
 * The node's persistent libp2p identity: one ed25519 key in `<dataDir>/identity.key`
 * (libp2p's protobuf encoding, mode 0600). Its peer id is the consensus NodeId, so losing
 * the file means the node must rejoin as a new member.
 *
 * ```ts
 * const { privateKey, peerId } = await loadOrCreateIdentity('/var/lib/pangea');
 * ```
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';

export const IDENTITY_FILE = 'identity.key';

export interface Identity {
  readonly privateKey: PrivateKey;
  /** The libp2p peer id string (base58 `12D3KooW...`). */
  readonly peerId: string;
}

/** Loads `<dataDir>/identity.key`, or creates it (atomically: tmp + fsync + rename). */
export async function loadOrCreateIdentity(dataDir: string): Promise<Identity> {
  const path = join(dataDir, IDENTITY_FILE);
  let bytes: Uint8Array | null = null;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (bytes !== null) {
    const privateKey = privateKeyFromProtobuf(bytes);
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
  }
  const privateKey = await generateKeyPair('Ed25519');
  await mkdir(dataDir, { recursive: true });
  await writeAtomic(path, privateKeyToProtobuf(privateKey));
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  // Make the rename itself durable.
  const dir = await open(join(path, '..'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
