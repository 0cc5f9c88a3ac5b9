import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import {
  MIGRATION_TEST_KINDS,
  migrationTestStores,
  tablesAndIndexesOf,
} from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0012-conversations';
const openStore = migrationTestStores('m0013');

/** Which of the migration's columns `responses` has, and whether it has the heartbeat index. */
async function schemaOf(store: KyselyStore): Promise<{ columns: string[]; index: boolean }> {
  // Introspection on PostgreSQL lists every schema's tables, and other test files migrate theirs at the same time:
  // read this store's own schema only.
  const columns =
    store.kind === 'sqlite'
      ? await sql<{ name: string }>`select name from pragma_table_info('responses')`.execute(store.kysely)
      : await sql<{ name: string }>`select column_name as name from information_schema.columns
          where table_schema = current_schema() and table_name = 'responses'`.execute(store.kysely);
  const names = new Set(columns.rows.map((row) => row.name));
  return {
    columns: ['status', 'heartbeat_at'].filter((name) => names.has(name)),
    index: (await tablesAndIndexesOf(store)).has('responses_heartbeat_at_idx'),
  };
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0013 (background responses) on ${kind}`, () => {
    it('adds the status and heartbeat columns and the heartbeat index, keeps stored responses, goes down and back up', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ columns: [], index: false });
        await sql`insert into responses (id, tenant_id, key_id, previous_response_id, input_items, response,
          created_at, expires_at) values ('resp_old', 'ten_a', 'key_a', null, '[]', '{"status":"completed"}', 1, 2)`.execute(
          store.kysely,
        );

        await store.migrate();
        expect(await schemaOf(store)).toEqual({ columns: ['status', 'heartbeat_at'], index: true });
        const old = await sql<{ response: string; status: string | null; heartbeat_at: number | null }>`select
          response, status, heartbeat_at from responses where id = 'resp_old'`.execute(store.kysely);
        expect(old.rows).toEqual([{ response: '{"status":"completed"}', status: null, heartbeat_at: null }]);

        await store.migrate(BEFORE);
        expect(await schemaOf(store)).toEqual({ columns: [], index: false });
        const kept = await sql<{ id: string }>`select id from responses`.execute(store.kysely);
        expect(kept.rows).toEqual([{ id: 'resp_old' }]);

        await store.migrate();
        expect(await schemaOf(store)).toEqual({ columns: ['status', 'heartbeat_at'], index: true });
      } finally {
        await store.close();
      }
    });
  });
}
