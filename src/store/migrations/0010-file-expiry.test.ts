import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { MIGRATION_TEST_KINDS, migrationTestStores } from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0009-tenant-list-index';
const openStore = migrationTestStores('m0010');

/** Whether `batches` has the column and `files` the expiry index. */
async function schemaOf(store: KyselyStore): Promise<{ column: boolean; index: boolean }> {
  // Introspection on PostgreSQL lists every schema's tables, and other test files migrate theirs at the same time:
  // read this store's own schema only.
  const columns =
    store.kind === 'sqlite'
      ? await sql<{ name: string }>`select name from pragma_table_info('batches')`.execute(store.kysely)
      : await sql<{ name: string }>`select column_name as name from information_schema.columns
          where table_schema = current_schema() and table_name = 'batches'`.execute(store.kysely);
  const column = columns.rows.some((row) => row.name === 'output_expires_after');
  const indexes =
    store.kind === 'sqlite'
      ? await sql<{ name: string }>`select name from sqlite_master where type = 'index'`.execute(store.kysely)
      : await sql<{
          name: string;
        }>`select indexname as name from pg_indexes where schemaname = current_schema()`.execute(store.kysely);
  return { column, index: indexes.rows.some((row) => row.name === 'files_expires_at_idx') };
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0010 (file expiry) on ${kind}`, () => {
    it("adds the batch's output expiry and the files' expiry index, keeps existing batches, and goes back down", async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ column: false, index: false });
        await sql`insert into batches (id, tenant_id, key_id, endpoint, input_file_id, completion_window, status,
          created_at, expires_at) values ('batch_old', 'ten_a', 'key_a', '/v1/chat/completions', 'file-a', '24h',
          'completed', 1, 2)`.execute(store.kysely);

        await store.migrate();
        expect(await schemaOf(store)).toEqual({ column: true, index: true });
        const old = await sql<{ output_expires_after: number | null }>`select output_expires_after from batches
          where id = 'batch_old'`.execute(store.kysely);
        expect(old.rows).toEqual([{ output_expires_after: null }]);

        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ column: false, index: false });
      } finally {
        await store.close();
      }
    });
  });
}
