import { type Kysely, type Migration, sql } from 'kysely';

/**
 * Usage rollups keep minutes and hours only: a day is read as the sum of its 24 hour rows (`queryUsageRollups`).
 * Every settlement upserted a day row per (tenant, key, model) besides its minute and hour rows; those upserts were
 * about a third of the rollup writes, and a 30-day query now sums 720 hour rows per group instead of reading 30.
 * Up deletes the stored day rows (they would go stale); down rebuilds them from the hours.
 */
export const daysFromHoursSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await sql`delete from usage_rollups where bucket = '1d'`.execute(db);
  },

  async down(db: Kysely<unknown>): Promise<void> {
    const day = sql`bucket_start - bucket_start % ${sql.lit(DAY_MS)}`;
    await sql`
      insert into usage_rollups (tenant_id, bucket, bucket_start, key_id, model,
        requests, input_tokens, cached_tokens, output_tokens, amount, cost)
      select tenant_id, '1d', ${day}, key_id, model, sum(requests), sum(input_tokens), sum(cached_tokens),
        sum(output_tokens), sum(amount), sum(cost)
      from usage_rollups where bucket = '1h'
      group by tenant_id, ${day}, key_id, model`.execute(db);
  },
};

/** One UTC day, ms (a shipped migration keeps its own constants). */
const DAY_MS = 86_400_000;
