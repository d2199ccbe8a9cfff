/** This build's version, from the package.json two levels above dist/src (as installed, too). */
import { readFileSync } from 'node:fs';
import { APPLY_LEVEL_MAX, APPLY_LEVEL_MIN } from './state/command.js';

export const PANGEA_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Where a peer asks what build a node runs (`pangea cluster upgrade` checks every member). */
export const BUILD_PROTOCOL = '/pangea/build/1.0.0';

export interface BuildInfo {
  readonly version: string;
  /** The apply levels this build applies alike (state/command.ts), lowest and highest. */
  readonly levels: readonly [number, number];
}

export const BUILD_INFO: BuildInfo = { version: PANGEA_VERSION, levels: [APPLY_LEVEL_MIN, APPLY_LEVEL_MAX] };

/** A peer's answer on BUILD_PROTOCOL, or null when it is not one. */
export function parseBuildInfo(v: unknown): BuildInfo | null {
  if (typeof v !== 'object' || v === null) return null;
  const { version, levels } = v as Record<string, unknown>;
  const level = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 1;
  if (typeof version !== 'string' || version.length > 64 || !Array.isArray(levels) || levels.length !== 2 || !level(levels[0]) || !level(levels[1])) return null;
  return { version, levels: [levels[0], levels[1]] };
}
