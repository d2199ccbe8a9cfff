import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
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
