import { type Kysely, type Migration, PostgresAdapter, sql } from 'kysely';

/**
 * Cheaper ledger ingest (`settle` writes every row of the request log and the ledger):
 * - drops `request_log_created_idx` (created_at alone): every request paid for it, and no query of the gateway
 *   needs it — reads of the log name a tenant (`request_log_tenant_created_idx`). Listing every tenant's log by
 *   time (an operator's tool) now scans the table;
 * - PostgreSQL only: rollups and wallets are updated by nearly every commit; a fill factor of 70% leaves room on
 *   each page for the new row version, so updates stay HOT (no new index entries, pruned in place) instead of
 *   adding an entry to every index per update. Applies to pages written from now on.
 */
export const ledgerIngestSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropIndex('request_log_created_idx').execute();
    if (isPostgres(db)) {
      for (const table of UPDATED_TABLES) {
        await sql`alter table ${sql.table(table)} set (fillfactor = ${sql.lit(FILL_FACTOR)})`.execute(db);
      }
    }
  },

  async down(db: Kysely<unknown>): Promise<void> {
    if (isPostgres(db)) {
      for (const table of UPDATED_TABLES) await sql`alter table ${sql.table(table)} reset (fillfactor)`.execute(db);
    }
    await db.schema.createIndex('request_log_created_idx').on('request_log').column('created_at').execute();
  },
};

/** Percent of each heap page filled by inserts on the update-heavy tables (PostgreSQL's default is 100). */
const FILL_FACTOR = 70;

const UPDATED_TABLES = ['usage_rollups', 'billing_rollups', 'wallets'] as const;

function isPostgres(db: Kysely<unknown>): boolean {
  // The migrator hands every dialect the same migration; the adapter is the only thing that tells them apart.
  return db.getExecutor().adapter instanceof PostgresAdapter;
}
