import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { MIGRATION_TEST_KINDS, migrationTestStores } from '../../../test/support/migration-stores.js';
import type { UsageRollupsTable } from '../database-schema.js';
import { type MoneyAsText, usageRollupFromRow } from '../ledger-rows.js';
import type { UsageRollupRow } from '../ledger-store.js';

const BEFORE = '0006-ledger-in-request-log';
const HOUR = 3_600_000;
const DAY = 86_400_000;
const START = Date.UTC(2030, 3, 1);
const openStore = migrationTestStores('m0007');

/** Hour rows of two groups over two days and a bit, with the day rows a store before 0007 kept beside them. */
function legacyRollups(): UsageRollupsTable[] {
  const hours: UsageRollupsTable[] = [];
  for (const [keyId, model] of [
    ['key_a', 'm-1'],
    ['', 'm-2'],
  ] as const) {
    for (let hour = 0; hour < 50; hour += 3) {
      hours.push({
        tenant_id: 'ten_a',
        bucket: '1h',
        bucket_start: START + hour * HOUR,
        key_id: keyId,
        model,
        requests: hour + 1,
        input_tokens: 100 * hour,
        cached_tokens: hour,
        output_tokens: 7 * hour,
        // Past 2^53 on purpose: sums must stay exact.
        amount: 2n ** 55n + BigInt(hour),
        cost: BigInt(hour * 3),
      });
    }
  }
  const days = new Map<string, UsageRollupsTable>();
  for (const row of hours) {
    const day = row.bucket_start - (row.bucket_start % DAY);
    const key = `${day}|${row.key_id}|${row.model}`;
    const sum = days.get(key);
    if (sum === undefined) {
      days.set(key, { ...row, bucket: '1d', bucket_start: day });
      continue;
    }
    sum.requests += row.requests;
    sum.input_tokens += row.input_tokens;
    sum.cached_tokens += row.cached_tokens;
    sum.output_tokens += row.output_tokens;
    sum.amount += row.amount;
    sum.cost += row.cost;
  }
  return [...hours, ...days.values()];
}

function asRecord(row: UsageRollupsTable): UsageRollupRow {
  return {
    bucket: row.bucket as UsageRollupRow['bucket'],
    bucketStart: row.bucket_start,
    tenantId: row.tenant_id,
    keyId: row.key_id === '' ? null : row.key_id,
    model: row.model,
    requests: row.requests,
    inputTokens: row.input_tokens,
    cachedTokens: row.cached_tokens,
    outputTokens: row.output_tokens,
    amount: row.amount,
    cost: row.cost,
  };
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0007 (days read from hours) on ${kind}`, () => {
    it('drops the stored day rows, reads the same days from the hours, and rebuilds them on the way down', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        const db = store.kysely;
        const legacy = legacyRollups();
        await db.insertInto('usage_rollups').values(legacy).execute();
        const storedDays = legacy.filter((row) => row.bucket === '1d').map(asRecord);
        expect(storedDays.length).toBe(6);
        const range = { tenantId: 'ten_a', start: START, end: START + 3 * DAY };
        // This code reads days from the hours; they equal the day rows the older store kept.
        const before = await store.queryUsageRollups({ bucket: '1d', ...range });
        expect(before).toEqual(expect.arrayContaining(storedDays));
        expect(before.length).toBe(storedDays.length);

        await store.migrate();
        const dayRows = await sql<{
          n: number | string;
        }>`select count(*) as n from usage_rollups where bucket = '1d'`.execute(db);
        expect(Number(dayRows.rows[0]!.n)).toBe(0);
        expect(await store.queryUsageRollups({ bucket: '1d', ...range })).toEqual(before);
        expect(await store.queryUsageRollups({ bucket: '1h', ...range })).toHaveLength(legacy.length - 6);

        await store.migrate(BEFORE);
        // The rebuilt day rows themselves, not the query (which reads days from the hours either way).
        const rebuilt = await sql<MoneyAsText<UsageRollupsTable>>`select tenant_id, bucket, bucket_start, key_id, model,
          requests, input_tokens, cached_tokens, output_tokens, cast(amount as text) as amount, cast(cost as text) as cost
          from usage_rollups where bucket = '1d'`.execute(db);
        const rebuiltDays = rebuilt.rows.map(usageRollupFromRow);
        expect(rebuiltDays).toEqual(expect.arrayContaining(storedDays));
        expect(rebuiltDays.length).toBe(storedDays.length);
      } finally {
        await store.close();
      }
    });
  });
}
