/** The `serve` config file: JSON whose keys are the flags' names. Unknown keys are errors. */
import { readFileSync } from 'node:fs';

export const CONFIG_KEYS = [
  'data-dir',
  'http-listen',
  'p2p-listen',
  'join',
  'metrics-listen',
  'advertise-http',
  'advertise-p2p',
  'admin-token-file',
  'force-new-cluster',
  'max-value-bytes',
  'max-request-bytes',
  'max-txn-ops',
  'log-level',
] as const;

const KINDS: Record<(typeof CONFIG_KEYS)[number], 'string' | 'strings' | 'boolean' | 'integer'> = {
  'data-dir': 'string',
  'http-listen': 'string',
  'p2p-listen': 'strings',
  join: 'string',
  'metrics-listen': 'string',
  'advertise-http': 'string',
  'advertise-p2p': 'strings',
  'admin-token-file': 'string',
  'force-new-cluster': 'boolean',
  'max-value-bytes': 'integer',
  'max-request-bytes': 'integer',
  'max-txn-ops': 'integer',
  'log-level': 'string',
};

export type ConfigFile = Partial<Record<(typeof CONFIG_KEYS)[number], unknown>>;

export function loadConfigFile(path: string): ConfigFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`config file ${path} must hold a JSON object`);
  const allowed = new Set<string>(CONFIG_KEYS);
  for (const [key, value] of Object.entries(parsed)) {
    if (!allowed.has(key)) throw new Error(`config file ${path}: unknown key "${key}" (known: ${CONFIG_KEYS.join(', ')})`);
    const kind = KINDS[key as (typeof CONFIG_KEYS)[number]];
    const ok =
      kind === 'string' ? typeof value === 'string'
      : kind === 'strings' ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : kind === 'boolean' ? typeof value === 'boolean'
      : Number.isSafeInteger(value) && (value as number) >= 0;
    if (!ok) throw new Error(`config file ${path}: "${key}" must be ${kind === 'strings' ? 'an array of strings' : `a ${kind === 'integer' ? 'non-negative integer' : kind}`}`);
  }
  return parsed as ConfigFile;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** `HOST:PORT` (IPv6 as `[::1]:PORT`); port 0 asks for any free port. */
export function parseHostPort(value: string, flag: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${flag} must be HOST:PORT, not "${value}"`);
  return { host: (m[1] ?? m[2])!, port };
}
