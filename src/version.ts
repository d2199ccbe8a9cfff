/** This build's version, from the package.json two levels above dist/src (as installed, too). */
import { readFileSync } from 'node:fs';

export const PANGEA_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
