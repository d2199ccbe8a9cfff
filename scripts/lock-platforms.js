#!/usr/bin/env node
// The npm registry mirror these machines reach lacks some platform-specific optional packages
// (@chainsafe/libp2p-quic-darwin-arm64@2.1.1, @msgpackr-extract/*-darwin-arm64@3.0.7, ...).
// `npm install` then leaves them out of package-lock.json and `npm ci` refuses the lock.
// This adds the entries npm would have written (version, os, cpu, optional), so `npm ci`
// accepts the lock and skips them on other platforms, as it would with the full registry.
// Run after `npm install` changes the lock: node scripts/lock-platforms.js
import { readFileSync, writeFileSync } from 'node:fs';

const path = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(path, 'utf8'));
const pkgs = lock.packages;
const platform = (name) => {
  const os = ['darwin', 'linux', 'win32', 'freebsd', 'android'].find((o) => name.includes(`-${o}`));
  const cpu = ['arm64', 'x64', 'arm', 'ia32'].find((c) => new RegExp(`-${c}(-|$)`).test(name));
  const libc = /-musl$/.test(name) ? ['musl'] : /-gnu(eabihf)?$/.test(name) ? ['glibc'] : undefined;
  return os && cpu ? { os: [os], cpu: [cpu], ...(libc ? { libc } : {}) } : null;
};
let added = 0;
for (const [key, entry] of Object.entries(pkgs)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const base = key === '' ? '' : `${key}/`;
    const candidates = [`${base}node_modules/${dep}`, `node_modules/${dep}`];
    if (candidates.some((c) => pkgs[c])) continue;
    const p = platform(dep);
    if (!p) continue;
    pkgs[`node_modules/${dep}`] = { version, ...p, optional: true };
    added++;
  }
}
lock.packages = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)));
writeFileSync(path, JSON.stringify(lock, null, 2) + '\n');
console.log(`added ${added} platform entries to package-lock.json`);
