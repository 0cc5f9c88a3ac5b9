import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { MIGRATION_TEST_KINDS, migrationTestStores } from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';
import { requestLogFixture, usageEventFixture } from '../ledger-fixtures.js';
import type { UsageEventRecord } from '../ledger-store.js';

const BEFORE = '0005-ledger-ingest';
const openStore = migrationTestStores('m0006');

/** A priced request's event, with nothing at its default so a lost or swapped column shows. */
function event(requestId: string, overrides: Partial<UsageEventRecord> = {}): UsageEventRecord {
  return usageEventFixture({
    requestId,
    tenantId: 'ten_a',
    keyId: 'key_a',
    model: 'm',
    deployment: 'sim/m',
    batch: true,
    receivedAt: 1_800_000_000_000,
    priceVersion: 'v2',
    tier: '0-32k',
    outputCondition: 'output<=200',
    inputTokens: 900,
    cachedTokens: 100,
    outputTokens: 50,
    reasoningTokens: 7,
    estimated: true,
    inputListAmount: 720_000n,
    cachedListAmount: 20_000n,
    outputListAmount: 100_000n,
    batchDiscount: -420_000n,
    offPeakDiscount: -1n,
    contractDiscount: -2n,
    volumeDiscount: -3n,
    cost: 55n,
    detail: '{"modifiers":["batch"]}',
    ...overrides,
  });
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0006 (usage events into their request-log rows) on ${kind}`, () => {
    it('moves every event into its log row, keeps the reads of usage_events, and migrates back down', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        const db = store.kysely;
        const logged = event('req_logged');
        // Written before 0006 with a log row that disagrees with it (the event's values are the ledger's).
        const disagreeing = event('req_disagreeing', { tenantId: 'ten_b', keyId: null, batch: false, cost: null });
        const unlogged = event('req_unlogged', { receivedAt: 1_800_000_000_500 });
        for (const each of [logged, disagreeing, unlogged]) await insertLegacyEvent(db, each);
        const matchingLog = requestLogFixture({
          requestId: 'req_logged',
          tenantId: 'ten_a',
          keyId: 'key_a',
          model: 'm',
          deployment: 'sim/m',
          stream: true,
          promptTokens: 1000,
          cachedTokens: 100,
          completionTokens: 50,
          reasoningTokens: 7,
          usageEstimated: true,
          latencyMs: 12.5,
          ttftMs: 3.25,
          attempts: 2,
          createdAt: logged.receivedAt,
          attemptLog: '[]',
        });
        const otherLog = requestLogFixture({ requestId: 'req_disagreeing', tenantId: 'ten_a', keyId: 'key_x' });
        const unpricedLog = requestLogFixture({ requestId: 'req_unpriced', tenantId: 'ten_a', status: 429 });
        for (const log of [matchingLog, otherLog, unpricedLog]) {
          await db
            .insertInto('request_log')
            .values({
              request_id: log.requestId,
              tenant_id: log.tenantId,
              key_id: log.keyId,
              endpoint: log.endpoint,
              model: log.model,
              deployment: log.deployment,
              status: log.status,
              error_code: log.errorCode,
              stream: log.stream ? 1 : 0,
              prompt_tokens: log.promptTokens,
              cached_tokens: log.cachedTokens,
              completion_tokens: log.completionTokens,
              reasoning_tokens: log.reasoningTokens,
              usage_estimated: log.usageEstimated ? 1 : 0,
              latency_ms: log.latencyMs,
              ttft_ms: log.ttftMs,
              attempts: log.attempts,
              created_at: log.createdAt,
              attempt_log: log.attemptLog ?? null,
            } as never)
            .execute();
        }

        await store.migrate();
        const everything = { start: 0, end: 2_000_000_000_000 };
        const events = [
          ...(await store.listUsageEvents({ ...everything, tenantId: 'ten_a' })),
          ...(await store.listUsageEvents({ ...everything, tenantId: 'ten_b' })),
        ];
        expect(sortById(events)).toEqual(sortById([logged, disagreeing, unlogged]));
        expect(await store.sumUsageEvents({ ...everything, tenantId: 'ten_a' })).toEqual({
          amount: logged.amount + unlogged.amount,
          count: 2,
        });
        const logs = sortById(
          [
            ...(await store.listRequestLogs({ tenantId: 'ten_a' })),
            ...(await store.listRequestLogs({ tenantId: 'ten_b' })),
          ],
          (log) => log.requestId,
        );
        expect(logs.map((log) => log.requestId)).toEqual([
          'req_disagreeing',
          'req_logged',
          'req_unlogged',
          'req_unpriced',
        ]);
        expect(logs[1]).toEqual(matchingLog);
        expect(logs[0]).toMatchObject({
          tenantId: 'ten_b',
          keyId: null,
          endpoint: 'chat',
          createdAt: 1_800_000_000_000,
        });
        expect(logs[2]).toMatchObject({ endpoint: 'unknown', status: 200, promptTokens: 1000, attempts: 0 });
        expect(logs[3]).toEqual(unpricedLog);

        await store.migrate(BEFORE);
        const restored = await sql<{ request_id: string }>`select request_id from usage_events`.execute(db);
        expect(restored.rows.map((row) => row.request_id).sort()).toEqual([
          'req_disagreeing',
          'req_logged',
          'req_unlogged',
        ]);
        // A table again, with its key: a second event of an id is refused.
        await expect(insertLegacyEvent(db, logged)).rejects.toThrow();
      } finally {
        await store.close();
      }
    });
  });
}

async function insertLegacyEvent(db: KyselyStore['kysely'], record: UsageEventRecord): Promise<void> {
  await sql`insert into usage_events values (${sql.join([
    record.requestId,
    record.tenantId,
    record.keyId,
    record.model,
    record.deployment,
    record.batch ? 1 : 0,
    record.receivedAt,
    record.currency,
    record.priceVersion,
    record.tier,
    record.outputCondition,
    record.inputTokens,
    record.cachedTokens,
    record.outputTokens,
    record.reasoningTokens,
    record.estimated ? 1 : 0,
    record.inputListAmount,
    record.cachedListAmount,
    record.outputListAmount,
    record.batchDiscount,
    record.offPeakDiscount,
    record.contractDiscount,
    record.volumeDiscount,
    record.amount,
    record.cost,
    record.detail,
  ])})`.execute(db);
}

function sortById<T>(rows: T[], id: (row: T) => string = (row) => (row as { requestId: string }).requestId): T[] {
  return [...rows].sort((a, b) => (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0));
}
