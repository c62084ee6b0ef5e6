import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', '{node,gossip,crdt,allocator,engines,sim}/**/*.test.ts'],
    setupFiles: ['./gossip/polyfill.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
