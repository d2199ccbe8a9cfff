import { readFileSync } from 'node:fs';
import { Command, Flags } from '@oclif/core';
import type { TxnCompare, TxnOp, TxnRequest } from '../../client.js';
import { clusterFlags, fail, showBytes, withClient } from '../../cli/cluster-client.js';

export default class KvTxn extends Command {
  static override summary = 'Run a transaction (compares, then one branch of puts, deletes and gets) at one log index.';
  static override description = `Reads the transaction as JSON from --file (or - for standard input), in the contract's form
with UTF-8 values: {"compare": [{"key", "target": "value"|"revision"|"exists", "op":
"=="|"!="|"<"|">", "value"}], "success": [{"op": "put"|"delete"|"get", "key", "value"}],
"failure": [...]}. Prints {"succeeded", "index", "results"} as JSON. Retried like a put,
with one request id, so it applies at most once.`;

  static override examples = [
    `echo '{"compare":[{"key":"a","target":"exists","op":"==","value":false}],"success":[{"op":"put","key":"a","value":"1"}]}' | <%= config.bin %> kv txn --file -`,
  ];

  static override flags = {
    ...clusterFlags,
    file: Flags.string({ description: 'the transaction as JSON (- for standard input)', required: true }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(KvTxn);
    let t: TxnRequest;
    try {
      t = parseTxn(readFileSync(flags.file === '-' ? 0 : flags.file, 'utf8'));
    } catch (err) {
      fail(this, `--file: ${(err as Error).message}`, 2);
    }
    const r = await withClient(this, flags, (c) => c.txn(t));
    const results = r.results.map((x) => ('value' in x ? { value: x.value === null ? null : showBytes(x.value), revision: x.revision } : x));
    this.log(JSON.stringify({ succeeded: r.succeeded, index: r.index, results }));
  }
}

/** The contract's txn JSON with UTF-8 values; the node checks the rest (400 with the reason). */
function parseTxn(text: string): TxnRequest {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('a transaction is a JSON object');
  const o = j as Record<string, unknown>;
  const list = (name: string): unknown[] => {
    const v = o[name] ?? [];
    if (!Array.isArray(v)) throw new Error(`"${name}" must be an array`);
    return v;
  };
  for (const k of Object.keys(o)) if (!['compare', 'success', 'failure', 'encoding'].includes(k)) throw new Error(`unknown field "${k}"`);
  if (o.encoding !== undefined && o.encoding !== 'utf8') throw new Error('values here are UTF-8 text ("encoding": "utf8" or none)');
  return { compare: list('compare') as TxnCompare[], success: list('success') as TxnOp[], failure: list('failure') as TxnOp[] };
}
