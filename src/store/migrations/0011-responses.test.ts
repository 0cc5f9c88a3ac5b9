import { describe, expect, it } from 'vitest';
import {
  MIGRATION_TEST_KINDS,
  migrationTestStores,
  tablesAndIndexesOf,
} from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0010-file-expiry';
const openStore = migrationTestStores('m0011');

/** Whether the store has the `responses` table and its expiry index. */
async function schemaOf(store: KyselyStore): Promise<{ table: boolean; index: boolean }> {
  const found = await tablesAndIndexesOf(store);
  return { table: found.has('responses'), index: found.has('responses_expires_at_idx') };
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0011 (responses) on ${kind}`, () => {
    it('creates the table and its expiry index, drops both going down, and comes back up', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ table: false, index: false });
        await store.migrate();
        expect(await schemaOf(store)).toEqual({ table: true, index: true });
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ table: false, index: false });
        await store.migrate();
        expect(await schemaOf(store)).toEqual({ table: true, index: true });
      } finally {
        await store.close();
      }
    });
  });
}
