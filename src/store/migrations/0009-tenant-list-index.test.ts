import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { MIGRATION_TEST_KINDS, migrationTestStores } from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0008-reservation-owners';
const openStore = migrationTestStores('m0009');

/**
 * The plan of a page of the tenant list, as `listTenants` asks for one (after a cursor, in `(created_at, id)`
 * order), one line per plan step. On PostgreSQL sorting is made as dear as the planner allows, so that a small test
 * table is read through the index whenever there is one.
 */
async function tenantPagePlan(store: KyselyStore): Promise<string> {
  const page = sql`select * from tenants where (created_at, id) > (${1}, ${'ten_a'}) order by created_at, id limit 10`;
  return store.kysely.connection().execute(async (connection) => {
    if (store.kind === 'sqlite') {
      const plan = await sql<{ detail: string }>`explain query plan ${page}`.execute(connection);
      return plan.rows.map((row) => row.detail).join('\n');
    }
    await sql`set enable_sort = off`.execute(connection);
    try {
      const plan = await sql<{ 'QUERY PLAN': string }>`explain ${page}`.execute(connection);
      return plan.rows.map((row) => row['QUERY PLAN']).join('\n');
    } finally {
      await sql`reset enable_sort`.execute(connection);
    }
  });
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0009 (tenant list index) on ${kind}`, () => {
    it('lets a page of tenants be read in order from the index instead of sorting the table, and goes back down', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        const sorting = kind === 'sqlite' ? /TEMP B-TREE FOR ORDER BY/ : /\bSort\b/;
        expect(await tenantPagePlan(store)).toMatch(sorting);

        await store.migrate();
        const indexed = await tenantPagePlan(store);
        expect(indexed).toMatch(/tenants_created_id_idx/);
        expect(indexed).not.toMatch(sorting);

        await store.migrate(BEFORE);
        expect(await tenantPagePlan(store)).toMatch(sorting);
      } finally {
        await store.close();
      }
    });
  });
}
