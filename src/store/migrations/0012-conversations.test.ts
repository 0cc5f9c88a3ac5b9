import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { MIGRATION_TEST_KINDS, migrationTestStores } from '../../../test/support/migration-stores.js';
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
  // Introspection on PostgreSQL lists every schema's tables, and other test files migrate theirs at the same time:
  // read this store's own schema only.
  const names =
    store.kind === 'sqlite'
      ? await sql<{ name: string }>`select name from sqlite_master where type in ('table', 'index')`.execute(
          store.kysely,
        )
      : await sql<{ name: string }>`select tablename as name from pg_tables where schemaname = current_schema()
          union all select indexname from pg_indexes where schemaname = current_schema()`.execute(store.kysely);
  const found = new Set(names.rows.map((row) => row.name));
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
