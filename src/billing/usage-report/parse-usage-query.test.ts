import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../errors/gateway-error.js';
import { encodeUsageCursor, parseUsageQuery, usageRollupQueryFor } from './parse-usage-query.js';

const NOW = Date.UTC(2026, 10, 20, 12, 34, 56);
const NOV1 = Date.UTC(2026, 10, 1);
const HOUR = 3_600_000;
const DAY = 86_400_000;

function paramOf(run: () => unknown): string | null {
  try {
    run();
  } catch (error: unknown) {
    if (error instanceof InvalidRequestError) {
      expect(error.status).toBe(400);
      expect(error.code).toBe('invalid_usage_query');
      return error.param;
    }
    throw error;
  }
  throw new Error('expected an InvalidRequestError');
}

describe('parseUsageQuery', () => {
  it("reads OpenAI's parameters, with OpenAI's defaults", () => {
    const query = parseUsageQuery({ start_time: String(NOV1 / 1000) }, NOW);
    expect(query).toEqual({
      bucket: '1d',
      bucketMs: DAY,
      start: NOV1,
      end: Date.UTC(2026, 10, 21), // now, ceiled to the day
      pageStart: NOV1,
      pageEnd: NOV1 + 7 * DAY, // default limit 7 for 1d
      limit: 7,
      groupBy: [],
      models: null,
      apiKeyIds: null,
    });
    expect(usageRollupQueryFor(query, 'ten_a')).toEqual({
      bucket: '1d',
      start: NOV1,
      end: NOV1 + 7 * DAY,
      tenantId: 'ten_a',
    });
  });

  it("reads the issue's names, ISO times, lists and aliases", () => {
    const query = parseUsageQuery(
      {
        start: '2026-11-01T10:30:00Z',
        end: '2026-11-01T13:00:00+01:00', // 12:00Z
        bucket: '1h',
        group_by: 'model,key',
        models: ['sim-pro-32k', 'sim-pro-128k'],
        api_key_ids: 'key_1',
        limit: '5',
      },
      NOW,
    );
    expect(query).toMatchObject({
      bucket: '1h',
      start: NOV1 + 10 * HOUR, // floored to the hour
      end: NOV1 + 12 * HOUR,
      pageEnd: NOV1 + 12 * HOUR,
      limit: 5,
      groupBy: ['model', 'api_key_id'],
      models: ['sim-pro-32k', 'sim-pro-128k'],
      apiKeyIds: ['key_1'],
    });
    expect(
      parseUsageQuery({ start: '2026-11-01', bucket_width: '1m', group_by: ['api_key_id', 'key'] }, NOW),
    ).toMatchObject({
      start: NOV1,
      limit: 60,
      groupBy: ['api_key_id'],
    });
    expect(parseUsageQuery({ start_time: NOV1 / 1000, end_time: NOV1 / 1000 + 1 }, NOW).end).toBe(NOV1 + DAY);
  });

  it('pages with an opaque cursor', () => {
    const first = parseUsageQuery({ start_time: String(NOV1 / 1000), bucket_width: '1d', limit: '7' }, NOW);
    const cursor = encodeUsageCursor(first.pageEnd);
    const second = parseUsageQuery({ start_time: String(NOV1 / 1000), limit: '7', page: cursor }, NOW);
    expect(second.pageStart).toBe(NOV1 + 7 * DAY);
    expect(second.pageEnd).toBe(NOV1 + 14 * DAY);
    const last = parseUsageQuery(
      { start_time: String(NOV1 / 1000), limit: '7', page: encodeUsageCursor(NOV1 + 14 * DAY) },
      NOW,
    );
    expect(last.pageEnd).toBe(Date.UTC(2026, 10, 21));
    expect(paramOf(() => parseUsageQuery({ start_time: String(NOV1 / 1000), page: 'garbage!' }, NOW))).toBe('page');
    // A cursor outside the range or off the bucket grid.
    expect(
      paramOf(() => parseUsageQuery({ start_time: String(NOV1 / 1000), page: encodeUsageCursor(NOV1 - DAY) }, NOW)),
    ).toBe('page');
    expect(
      paramOf(() => parseUsageQuery({ start_time: String(NOV1 / 1000), page: encodeUsageCursor(NOV1 + HOUR) }, NOW)),
    ).toBe('page');
  });

  it('refuses bad input naming the parameter', () => {
    const start = String(NOV1 / 1000);
    expect(paramOf(() => parseUsageQuery({}, NOW))).toBe('start_time');
    expect(paramOf(() => parseUsageQuery({ start_time: '2026-11-01' }, NOW))).toBe('start_time');
    expect(paramOf(() => parseUsageQuery({ start: 'yesterday' }, NOW))).toBe('start');
    expect(paramOf(() => parseUsageQuery({ start: '2026-02-30' }, NOW))).toBe('start');
    expect(paramOf(() => parseUsageQuery({ start: '2026-11-01T00:00:00' }, NOW))).toBe('start'); // no zone
    expect(paramOf(() => parseUsageQuery({ start_time: '-5' }, NOW))).toBe('start_time');
    expect(paramOf(() => parseUsageQuery({ start_time: start, start: '2026-11-01' }, NOW))).toBe('start');
    expect(paramOf(() => parseUsageQuery({ start_time: start, end_time: start }, NOW))).toBe('end_time');
    expect(paramOf(() => parseUsageQuery({ start_time: start, end: '2026-10-01' }, NOW))).toBe('end');
    expect(paramOf(() => parseUsageQuery({ start_time: start, bucket_width: '5m' }, NOW))).toBe('bucket_width');
    expect(paramOf(() => parseUsageQuery({ start_time: start, bucket: '1w' }, NOW))).toBe('bucket');
    expect(paramOf(() => parseUsageQuery({ start_time: start, bucket: '1h', bucket_width: '1d' }, NOW))).toBe('bucket');
    expect(paramOf(() => parseUsageQuery({ start_time: start, group_by: 'project_id' }, NOW))).toBe('group_by');
    expect(paramOf(() => parseUsageQuery({ start_time: start, group_by: [1] }, NOW))).toBe('group_by');
    expect(paramOf(() => parseUsageQuery({ start_time: start, limit: '32' }, NOW))).toBe('limit');
    expect(paramOf(() => parseUsageQuery({ start_time: start, limit: '0' }, NOW))).toBe('limit');
    expect(paramOf(() => parseUsageQuery({ start_time: start, limit: '1.5' }, NOW))).toBe('limit');
    expect(paramOf(() => parseUsageQuery({ start_time: start, limit: ['1', '2'] }, NOW))).toBe('limit');
    expect(parseUsageQuery({ start_time: start, bucket: '1h', limit: '168' }, NOW).limit).toBe(168);
    expect(paramOf(() => parseUsageQuery({ start_time: start, bucket: '1h', limit: '169' }, NOW))).toBe('limit');
  });

  it('limits the range by bucket width', () => {
    const end = Date.UTC(2026, 10, 1) / 1000;
    // 31 days of minutes are fine, 32 are not.
    expect(
      parseUsageQuery({ start_time: String(end - 31 * 86_400), end_time: String(end), bucket: '1m' }, NOW).end,
    ).toBe(end * 1000);
    expect(
      paramOf(() =>
        parseUsageQuery({ start_time: String(end - 32 * 86_400), end_time: String(end), bucket: '1m' }, NOW),
      ),
    ).toBe('start_time');
    expect(paramOf(() => parseUsageQuery({ start: '2025-01-01', end: '2026-11-01', bucket: '1h' }, NOW))).toBe('start');
    expect(parseUsageQuery({ start: '2025-01-01', end: '2026-11-01', bucket: '1d' }, NOW).limit).toBe(7);
  });
});
