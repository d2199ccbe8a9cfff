#!/usr/bin/env node
// The `pangea` command. The polyfill loads first: libp2p 3 needs Promise.withResolvers (Node 22+).
import '../dist/src/polyfill.js';
import { execute } from '@oclif/core';

await execute({ dir: import.meta.url });
