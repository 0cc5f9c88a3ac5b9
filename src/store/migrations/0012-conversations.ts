import type { Kysely, Migration } from 'kysely';

/**
 * Conversations of the Conversations API (`ConversationStore`). A conversation keeps `next_position`, the first free
 * position of its items: an append reserves a block of positions by bumping it in one `UPDATE … RETURNING`, so
 * concurrent appends never share a position. Items are keyed by conversation and position; their ids are not unique
 * (an item appended twice keeps both rows), hence the plain index that reads by id use. `created_at` is epoch ms
 * (`bigint`, as in `responses`); metadata and items are JSON `text`.
 */
export const conversationsSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('conversations')
      .addColumn('id', 'text', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('metadata', 'text', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .addColumn('next_position', 'integer', (column) => column.notNull().defaultTo(0))
      .execute();
    await db.schema.createIndex('conversations_tenant_id_idx').on('conversations').column('tenant_id').execute();
    await db.schema
      .createTable('conversation_items')
      .addColumn('conversation_id', 'text', (column) => column.notNull())
      .addColumn('position', 'integer', (column) => column.notNull())
      .addColumn('item_id', 'text', (column) => column.notNull())
      .addColumn('item', 'text', (column) => column.notNull())
      .addPrimaryKeyConstraint('conversation_items_pk', ['conversation_id', 'position'])
      .execute();
    await db.schema
      .createIndex('conversation_items_item_id_idx')
      .on('conversation_items')
      .columns(['conversation_id', 'item_id'])
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropTable('conversation_items').execute();
    await db.schema.dropTable('conversations').execute();
  },
};
