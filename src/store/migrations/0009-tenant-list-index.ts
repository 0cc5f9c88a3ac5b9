import type { Kysely, Migration } from 'kysely';

/**
 * Tenants in the order the admin list pages them, `(created_at, id)`. Without it each page of
 * `GET /admin/v1/tenants` read and sorted the whole table: fine for thousands of tenants, slow for millions. With
 * it a page reads its `limit` rows after the cursor and sorts nothing. (Keys and files are listed per tenant, on
 * their `(tenant_id, created_at)` indexes.)
 */
export const tenantListIndexSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.createIndex('tenants_created_id_idx').on('tenants').columns(['created_at', 'id']).execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropIndex('tenants_created_id_idx').execute();
  },
};
