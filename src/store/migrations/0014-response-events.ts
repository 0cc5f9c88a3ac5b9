import type { Kysely, Migration } from 'kysely';

/**
 * The stream events of responses run in the background and streamed (`background: true, stream: true`), kept as
 * they are made so that any gateway process can send the stream, and a client can resume it after a dropped
 * connection (`starting_after`). One row per event, keyed by response and sequence number; the frame is the SSE text
 * as sent. Events belong to their response: `ON DELETE CASCADE` removes them with it, whichever delete it was (one
 * response, a tenant's, the expiry sweep), so no delete has to name this table. The primary key starts with
 * `response_id`, so it also serves the cascade's lookup and the reads in order, and no other index is needed.
 */
export const responseEventsSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('response_events')
      .addColumn('response_id', 'text', (column) => column.notNull().references('responses.id').onDelete('cascade'))
      .addColumn('sequence_number', 'integer', (column) => column.notNull())
      .addColumn('frame', 'text', (column) => column.notNull())
      .addPrimaryKeyConstraint('response_events_pk', ['response_id', 'sequence_number'])
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropTable('response_events').execute();
  },
};
