import type { Kysely, Migration } from 'kysely';

/**
 * `request_log.attempt_log`: what each upstream attempt of a request did (text, JSON chosen by the request path),
 * null when not recorded. Nullable with no default, so adding it rewrites no existing row on either database.
 */
export const requestLogAttemptsSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable('request_log').addColumn('attempt_log', 'text').execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable('request_log').dropColumn('attempt_log').execute();
  },
};
