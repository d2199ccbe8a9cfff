import tseslint from 'typescript-eslint';

/** The node layer's modules at the top of src/: nothing below may import them. */
const NODE_LAYER = ['driver', 'node', 'server', 'stores', 'config', 'soak', 'client', 'index'];

/** Files matching `files` may not import from the directories in `above` (siblings of theirs
 *  under src/) nor from the node layer. */
function layer(files, above, ignores = []) {
  const patterns = [...above.map((d) => `../${d}/*`), ...NODE_LAYER.map((m) => `../${m}.js`)];
  return [{ files: [files], ignores, rules: { 'no-restricted-imports': ['error', { patterns }] } }];
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  // Layers, each importing only those below it (docs/architecture.md): consensus; codec;
  // storage; log and state; sync; archive; net; the node (driver, composition, commands).
  // The consensus core's own rule (purity) follows.
  ...layer('src/codec/**/*.ts', ['storage', 'log', 'state', 'sync', 'archive', 'net', 'ces', 'commands']),
  ...layer('src/storage/**/*.ts', ['log', 'state', 'sync', 'archive', 'net', 'ces', 'commands']),
  ...layer('src/log/**/*.ts', ['state', 'sync', 'archive', 'net', 'ces', 'commands']),
  ...layer('src/state/**/*.ts', ['log', 'sync', 'archive', 'net', 'ces', 'commands']),
  ...layer('src/sync/**/*.ts', ['archive', 'net', 'ces', 'commands']),
  // prune-hot, a command's whole work on a data dir (it opens the node's stores), sits in the node layer.
  ...layer('src/archive/**/*.ts', ['net', 'commands'], ['src/archive/prune-hot.ts']),
  ...layer('src/net/**/*.ts', ['archive', 'commands']),
  ...layer('src/ces/**/*.ts', ['consensus', 'codec', 'storage', 'log', 'state', 'sync', 'archive', 'net', 'commands']),
  {
    // The consensus core is pure: no I/O, no clock, no randomness of its own.
    files: ['src/consensus/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['node:*', 'lmdb', 'libp2p', '@libp2p/*', '@chainsafe/*', 'fs', 'net', 'http'] }],
      'no-restricted-globals': ['error', 'Date', 'setTimeout', 'setInterval', 'setImmediate', 'process', 'performance'],
      'no-restricted-properties': ['error', { object: 'Math', property: 'random' }],
    },
  },
);
