import type { Kysely, Migration } from 'kysely';

/**
 * Stored responses of the Responses API (`ResponseStore`). Times are epoch ms (`bigint`, as in `files`); the input
 * items and the Response object are JSON `text`. Reads go by id (the primary key) and tenant, so the only other
 * index is the expiry one the sweep reads.
 */
export const responsesSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('responses')
      .addColumn('id', 'text', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('key_id', 'text', (column) => column.notNull())
      .addColumn('previous_response_id', 'text')
      .addColumn('input_items', 'text', (column) => column.notNull())
      .addColumn('response', 'text', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .addColumn('expires_at', 'bigint', (column) => column.notNull())
      .execute();
    await db.schema.createIndex('responses_expires_at_idx').on('responses').column('expires_at').execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropTable('responses').execute();
  },
};
