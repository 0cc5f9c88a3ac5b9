import { describe, expect, it } from 'vitest';
import { openAIErrors } from '../../../test/support/openai-schema.js';
import type { UsageRollupRow } from '../../store/ledger-store.js';
import { buildUsagePage, UsageRowError } from './build-usage-page.js';
import { parseUsageQuery, usageRollupQueryFor } from './parse-usage-query.js';

const NOV1 = Date.UTC(2026, 10, 1);
const HOUR = 3_600_000;
const NOW = Date.UTC(2026, 10, 20);

function row(overrides: Partial<UsageRollupRow>): UsageRollupRow {
  return {
    bucket: '1h',
    bucketStart: NOV1,
    tenantId: 'ten_a',
    keyId: 'key_1',
    model: 'sim-pro-32k',
    requests: 1,
    inputTokens: 100,
    cachedTokens: 0,
    outputTokens: 10,
    amount: 100_000n,
    cost: 40_000n,
    ...overrides,
  };
}

const rows: UsageRollupRow[] = [
  row({
    bucketStart: NOV1,
    keyId: 'key_1',
    model: 'sim-pro-32k',
    requests: 2,
    inputTokens: 1000,
    cachedTokens: 200,
    outputTokens: 50,
    amount: 1_234_567n,
  }),
  row({
    bucketStart: NOV1,
    keyId: 'key_2',
    model: 'sim-pro-32k',
    requests: 1,
    inputTokens: 10,
    cachedTokens: 5,
    outputTokens: 7,
    amount: 3n,
  }),
  row({
    bucketStart: NOV1,
    keyId: null,
    model: 'sim-pro-128k',
    requests: 4,
    inputTokens: 400,
    cachedTokens: 0,
    outputTokens: 40,
    amount: 1_000_000_000n,
  }),
  row({
    bucketStart: NOV1 + 2 * HOUR,
    keyId: 'key_1',
    model: 'sim-pro-128k',
    requests: 1,
    inputTokens: 1,
    cachedTokens: 1,
    outputTokens: 1,
    amount: 0n,
  }),
];

/** Three hourly buckets: 00:00, 01:00 (empty), 02:00. */
const baseQuery = { start: '2026-11-01T00:00:00Z', end: '2026-11-01T03:00:00Z', bucket: '1h' };

describe('buildUsagePage', () => {
  it('returns every bucket and merges everything without group_by', () => {
    const page = buildUsagePage(rows, parseUsageQuery(baseQuery, NOW));
    expect(openAIErrors('UsageResponse', page)).toEqual([]);
    expect(page).toEqual({
      object: 'page',
      has_more: false,
      next_page: null,
      data: [
        {
          object: 'bucket',
          start_time: NOV1 / 1000,
          end_time: NOV1 / 1000 + 3600,
          results: [
            {
              object: 'organization.usage.completions.result',
              // Non-cached 1000 + 10 + 400, plus cached 200 + 5.
              input_tokens: 1615,
              output_tokens: 97,
              input_cached_tokens: 205,
              input_audio_tokens: 0,
              output_audio_tokens: 0,
              num_model_requests: 7,
              project_id: null,
              user_id: null,
              api_key_id: null,
              model: null,
              batch: null,
              amount: '1.00123457', // 1,234,567 + 3 + 1,000,000,000 nano
            },
          ],
        },
        { object: 'bucket', start_time: NOV1 / 1000 + 3600, end_time: NOV1 / 1000 + 7200, results: [] },
        {
          object: 'bucket',
          start_time: NOV1 / 1000 + 7200,
          end_time: NOV1 / 1000 + 10_800,
          results: [
            expect.objectContaining({ input_tokens: 2, input_cached_tokens: 1, num_model_requests: 1, amount: '0' }),
          ],
        },
      ],
    });
  });

  it('splits by model and key, in a stable order', () => {
    const page = buildUsagePage(rows, parseUsageQuery({ ...baseQuery, group_by: 'model,key' }, NOW));
    expect(openAIErrors('UsageResponse', page)).toEqual([]);
    const first = page.data[0]!.results.map((result) => [
      result.model,
      result.api_key_id,
      result.input_tokens,
      result.num_model_requests,
      result.amount,
    ]);
    expect(first).toEqual([
      ['sim-pro-128k', null, 400, 4, '1'],
      ['sim-pro-32k', 'key_1', 1200, 2, '0.001234567'],
      ['sim-pro-32k', 'key_2', 15, 1, '0.000000003'],
    ]);
    const byModel = buildUsagePage(rows, parseUsageQuery({ ...baseQuery, group_by: 'model' }, NOW));
    expect(byModel.data[0]!.results.map((result) => [result.model, result.api_key_id, result.output_tokens])).toEqual([
      ['sim-pro-128k', null, 40],
      ['sim-pro-32k', null, 57],
    ]);
  });

  it('filters by model and key', () => {
    const page = buildUsagePage(rows, parseUsageQuery({ ...baseQuery, api_key_ids: 'key_1' }, NOW));
    expect(page.data.map((bucket) => bucket.results.map((result) => result.num_model_requests))).toEqual([
      [2],
      [],
      [1],
    ]);
    const models = buildUsagePage(rows, parseUsageQuery({ ...baseQuery, models: 'sim-pro-128k' }, NOW));
    expect(models.data.map((bucket) => bucket.results.map((result) => result.num_model_requests))).toEqual([
      [4],
      [],
      [1],
    ]);
  });

  it('pages through the range', () => {
    const query = parseUsageQuery({ ...baseQuery, limit: '2' }, NOW);
    expect(usageRollupQueryFor(query, 'ten_a')).toEqual({
      bucket: '1h',
      start: NOV1,
      end: NOV1 + 2 * HOUR,
      tenantId: 'ten_a',
    });
    const first = buildUsagePage(rows, query);
    expect(openAIErrors('UsageResponse', first)).toEqual([]);
    expect(first.data.map((bucket) => bucket.start_time)).toEqual([NOV1 / 1000, NOV1 / 1000 + 3600]);
    expect(first.has_more).toBe(true);
    expect(first.next_page).toEqual(expect.any(String));
    const second = buildUsagePage(rows, parseUsageQuery({ ...baseQuery, limit: '2', page: first.next_page }, NOW));
    expect(second.data.map((bucket) => bucket.start_time)).toEqual([NOV1 / 1000 + 7200]);
    expect(second.data[0]!.results).toHaveLength(1);
    expect(second).toMatchObject({ has_more: false, next_page: null });
  });

  it('refuses rows that would land in the wrong bucket', () => {
    const query = parseUsageQuery(baseQuery, NOW);
    expect(() => buildUsagePage([row({ bucket: '1m' })], query)).toThrow(UsageRowError);
    expect(() => buildUsagePage([row({ bucketStart: NOV1 + 60_000 })], query)).toThrow(UsageRowError);
  });

  it('is checked against the schema: a wrong shape fails validation', () => {
    const page = buildUsagePage(rows, parseUsageQuery(baseQuery, NOW));
    const broken = structuredClone(page) as unknown as { data: { results: Record<string, unknown>[] }[] };
    broken.data[0]!.results[0]!.input_tokens = '1615';
    expect(openAIErrors('UsageResponse', broken)).not.toEqual([]);
    expect(openAIErrors('UsageResponse', { ...page, next_page: 3 })).not.toEqual([]);
  });
});
