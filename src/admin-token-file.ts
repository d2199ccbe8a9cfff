/**
 * The token in an `--admin-token-file`, read by `serve` and by the commands that change
 * membership. Its own module so a client command (`pangea kv get`) does not load the server's
 * settings (src/config.ts imports the HTTP server, the archive stores, libp2p's multiaddr):
 * measured, that halved a command's start-up (0.45 s to load `kv get`, ~0.2 s without).
 */
import { readFile } from 'node:fs/promises';

/** Throws an Error naming the flag, never the token. */
export async function readAdminTokenFile(path: string): Promise<string> {
  let token: string;
  try {
    token = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new Error(`--admin-token-file: cannot read ${path}: ${(err as Error).message}`);
  }
  if (token === '') throw new Error(`--admin-token-file: ${path} is empty`);
  return token;
}
