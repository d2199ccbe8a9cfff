/** Structured logs: one JSON object a line on stderr, filtered by level. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function isLogLevel(v: string): v is LogLevel {
  return v in ORDER;
}

export function createLogger(level: LogLevel = 'info', base: Record<string, unknown> = {}, out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = ORDER[level];
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[lvl] < min) return;
    out(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }, replacer) + '\n');
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { message: value.message, name: value.name };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
