import type { Kysely, Migration } from 'kysely';

/**
 * Responses run in the background (`background: true`). A stored response keeps its Response object's `status`, so
 * that ending or cancelling a run can be one compare-and-set on it (`UPDATE … WHERE status IN ('queued',
 * 'in_progress')`), and `heartbeat_at` (epoch ms, `bigint` as the other times), the last time the process running it
 * said it still runs. Rows stored before this migration are all finished, and their status lives in their JSON only,
 * so both columns stay NULL for them; a NULL status is never running. Only running responses have a heartbeat, so
 * the index on it holds few non-NULL keys and the sweep that fails the runs of a dead process reads only those.
 */
export const backgroundResponsesSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable('responses').addColumn('status', 'text').execute();
    await db.schema.alterTable('responses').addColumn('heartbeat_at', 'bigint').execute();
    await db.schema.createIndex('responses_heartbeat_at_idx').on('responses').column('heartbeat_at').execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropIndex('responses_heartbeat_at_idx').execute();
    await db.schema.alterTable('responses').dropColumn('heartbeat_at').execute();
    await db.schema.alterTable('responses').dropColumn('status').execute();
  },
};
