/**
 * The node's persistent libp2p identity: one ed25519 key in `<dataDir>/identity.key`
 * (libp2p's protobuf encoding, mode 0600). Its peer id is the consensus NodeId, so losing
 * the file means the node must rejoin as a new member.
 *
 * ```ts
 * const { privateKey, peerId } = await loadOrCreateIdentity('/var/lib/pangea');
 * ```
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import { writeFileDurable } from '../durable-file.js';

export const IDENTITY_FILE = 'identity.key';

export interface Identity {
  readonly privateKey: PrivateKey;
  /** The libp2p peer id string (base58 `12D3KooW...`). */
  readonly peerId: string;
}

/** Loads `<dataDir>/identity.key`, or creates it (durably, see src/durable-file.ts). */
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
  await writeFileDurable(path, privateKeyToProtobuf(privateKey), { exclusive: true });
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}
