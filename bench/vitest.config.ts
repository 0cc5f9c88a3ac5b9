import { defineConfig } from 'vitest/config';

/** The harness's own tests, outside `npm test`: `npx vitest run --config bench/vitest.config.ts`. */
export default defineConfig({
  test: {
    include: ['bench/**/*.test.ts'],
    testTimeout: 30_000,
    pool: 'forks',
  },
});
