import { describe, expect, it } from 'vitest';
import {
  MIGRATION_TEST_KINDS,
  migrationTestStores,
  tablesAndIndexesOf,
} from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0011-responses';
const openStore = migrationTestStores('m0012');

const NAMES = [
  'conversations',
  'conversations_tenant_id_idx',
  'conversation_items',
  'conversation_items_item_id_idx',
] as const;

/** Which of the migration's tables and indexes the store has. */
async function schemaOf(store: KyselyStore): Promise<string[]> {
  const found = await tablesAndIndexesOf(store);
  return NAMES.filter((name) => found.has(name));
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0012 (conversations) on ${kind}`, () => {
    it('creates both tables and their indexes, drops them going down, and comes back up', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual([]);
        await store.migrate();
        expect(await schemaOf(store)).toEqual([...NAMES]);
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual([]);
        await store.migrate();
        expect(await schemaOf(store)).toEqual([...NAMES]);
      } finally {
        await store.close();
      }
    });
  });
}
