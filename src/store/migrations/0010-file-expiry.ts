import type { Kysely, Migration } from 'kysely';

/**
 * Files that expire. A batch keeps the expiry its creator asked for its output and error files
 * (`output_expires_after.seconds`, null for never), and files are found by their expiry, so the sweep that deletes
 * expired ones reads only those. (`files.expires_at` itself exists since migration 0003.)
 */
export const fileExpirySchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable('batches').addColumn('output_expires_after', 'integer').execute();
    await db.schema.createIndex('files_expires_at_idx').on('files').column('expires_at').execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropIndex('files_expires_at_idx').execute();
    await db.schema.alterTable('batches').dropColumn('output_expires_after').execute();
  },
};
