import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'bench/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Vitest's default on two cores is one worker: the files then run one after another, and most of their time is
    // spent waiting on child processes, sockets and timers, not computing. Two run side by side: the suite took
    // 6.2 minutes instead of 10.8 on this machine. Files may share PostgreSQL and Redis because each uses a schema,
    // key prefix and channel of its own.
    maxWorkers: 2,
  },
});
