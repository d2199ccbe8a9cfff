/**
 * Gives a stopped node's disk space back (`pangea compact`). LMDB never shrinks its file:
 * pages freed by pruning the hot log or deleting keys are reused, never returned. A
 * compacting copy (lmdb-js `backup(path, true)`, LMDB's `mdb_env_copy2` with
 * `MDB_CP_COMPACT`) writes only the pages in use; it replaces the file once it is durable and
 * holds the same records.
 *
 * Crash safety: the copy is written beside the file, fsynced, checked, then renamed over it
 * and the directory fsynced. Before the rename the old file is untouched; after it the new
 * one is whole. LMDB's lock file (the reader table, no data) is removed with the old file, and
 * recreated at the next open.
 */
import { existsSync, statSync } from 'node:fs';
import { open as openFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { syncDir } from '../durable-file.js';
import { DBS_MAX, ENV_FILE } from './env.js';

/** The named databases whose entries are counted in both files before the swap. */
const CHECKED_DBS = ['log.meta', 'log.slots', 'log.seq', 'sm.meta', 'sm.kv', 'sm.sessions', 'sm.session_use', 'sm.members', 'sm.chain', 'sm.segments', 'sm.voters_ever', 'sm.configs', 'sm.removed', 'sm.effects', 'sm.leases', 'sm.lease_expiry', 'sm.lease_keys', 'sm.blocks', 'sm.actions', 'sm.action_expiry', 'sm.block_holds', 'sm.block_log', 'sm.block_revs', 'sm.providers', 'sm.provided', 'sm.lease_providers', 'sm.collections', 'sm.coll_defs', 'sm.records', 'sm.rec_index', 'sm.coll_garbage', 'sm.lease_records', 'sm.coll_building'] as const;
/** Records compared byte for byte: the log's promise, commit and compaction points, and
 *  the state's applied point and archive settings. */
const CHECKED_RECORDS: readonly (readonly [string, string])[] = [
  ['log.meta', 'promised'],
  ['log.meta', 'commit'],
  ['log.meta', 'compacted'],
  ['sm.meta', 'applied'],
  ['sm.meta', 'archive'],
];

export interface CompactResult {
  readonly bytesBefore: number;
  readonly bytesAfter: number;
}

/** What both files must agree on: entries per named database, and the key records. */
function fingerprint(root: RootDatabase): string {
  const parts: string[] = [];
  for (const name of CHECKED_DBS) {
    const db = root.openDB<Uint8Array, Uint8Array>({ name, keyEncoding: 'binary', encoding: 'binary' });
    parts.push(`${name}=${db.getCount()}`);
  }
  for (const [name, key] of CHECKED_RECORDS) {
    const db = root.openDB<Uint8Array, string>({ name, encoding: 'binary' });
    const v = db.getBinary(key);
    parts.push(`${name}/${key}=${v === undefined ? '-' : Buffer.from(v).toString('hex')}`);
  }
  return parts.join(' ');
}

/**
 * Rewrites `dir`'s LMDB file with only the pages in use. The caller holds the data dir's lock
 * (no node or tool has the file open). Throws, leaving the old file in place, if the copy
 * cannot be made or does not hold the same records.
 */
export async function compactEnvFile(dir: string): Promise<CompactResult> {
  const path = join(dir, ENV_FILE);
  if (!existsSync(path)) throw new Error(`${dir} has no ${ENV_FILE}`);
  const copy = join(dir, `.${ENV_FILE}.compact.tmp`);
  await rm(copy, { force: true });
  await rm(`${copy}-lock`, { force: true });
  const bytesBefore = statSync(path).size;
  const source = open({ path, noSubdir: true, maxDbs: DBS_MAX, readOnly: true });
  let expected: string;
  try {
    expected = fingerprint(source);
    await source.backup(copy, true);
  } finally {
    await source.close();
  }
  try {
    const fh = await openFile(copy, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const check = open({ path: copy, noSubdir: true, maxDbs: DBS_MAX, readOnly: true });
    let got: string;
    try {
      got = fingerprint(check);
    } finally {
      await check.close();
    }
    if (got !== expected) throw new Error(`the compacted copy differs from ${path}; left it as it was (${got} != ${expected})`);
    const bytesAfter = statSync(copy).size;
    await rename(copy, path);
    await rm(`${path}-lock`, { force: true });
    await syncDir(dir);
    return { bytesBefore, bytesAfter };
  } finally {
    await rm(copy, { force: true });
    await rm(`${copy}-lock`, { force: true });
  }
}
