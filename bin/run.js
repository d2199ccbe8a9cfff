#!/usr/bin/env node
// The `pangea` command. Node 22.1+ caches compiled code between runs (start-up ~2x faster;
// a no-op on Node 20). The polyfill loads first: libp2p 3 needs Promise.withResolvers (Node 22+).
import module from 'node:module';

module.enableCompileCache?.();
await import('../dist/src/polyfill.js');
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
