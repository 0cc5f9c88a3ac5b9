/**
 * The query of the tenant usage API, `GET /v1/usage`, read the way OpenAI's organization Usage API
 * (`GET /v1/organization/usage/completions`) reads its own, plus the names issue 3 gives them:
 *
 * | parameter | also accepted | meaning |
 * |---|---|---|
 * | `start_time` | `start` | Unix seconds (OpenAI), or, for `start`, an ISO 8601 date or instant with a zone. Required. |
 * | `end_time` | `end` | Same forms, exclusive. Default: `now`. |
 * | `bucket_width` | `bucket` | `1m`, `1h` or `1d`. Default `1d`. |
 * | `group_by` | | `model`, `api_key_id` (alias `key`); repeated or comma-separated. Default: no grouping. |
 * | `models`, `api_key_ids` | | Only usage of these (repeated or comma-separated). |
 * | `limit` | | Buckets per page: `1d` default 7, max 31; `1h` 24 / 168; `1m` 60 / 1440 (OpenAI's limits). |
 * | `page` | | The `next_page` cursor of the previous response. |
 *
 * Buckets are whole UTC rollup buckets: the start is floored and the end ceiled to the bucket width (the rollups
 * cannot split a bucket). The whole range may span at most 31 days of `1m`, 366 days of `1h` or 3,660 days of `1d`
 * buckets; a page covers `limit` buckets and the caller reads the rollups of that page only (`usageRollupQueryFor`).
 */
import { InvalidRequestError } from '../../errors/gateway-error.js';
import type { RollupBucket, UsageRollupQuery } from '../../store/ledger-store.js';

/** Bucket widths, as OpenAI names them. */
export const USAGE_BUCKET_WIDTHS = ['1m', '1h', '1d'] as const satisfies readonly RollupBucket[];

/** Fields results can be grouped by. */
export const USAGE_GROUP_FIELDS = ['model', 'api_key_id'] as const;
/** A group-by field. */
export type UsageGroupField = (typeof USAGE_GROUP_FIELDS)[number];

/** Limits per bucket width. */
export const USAGE_LIMITS: Readonly<
  Record<
    RollupBucket,
    { readonly widthMs: number; readonly defaultLimit: number; readonly maxLimit: number; readonly maxRangeMs: number }
  >
> = {
  '1m': { widthMs: 60_000, defaultLimit: 60, maxLimit: 1440, maxRangeMs: 31 * 86_400_000 },
  '1h': { widthMs: 3_600_000, defaultLimit: 24, maxLimit: 168, maxRangeMs: 366 * 86_400_000 },
  '1d': { widthMs: 86_400_000, defaultLimit: 7, maxLimit: 31, maxRangeMs: 3660 * 86_400_000 },
};

/** A validated usage query. Times are epoch ms, aligned to the bucket width. */
export interface UsageQuery {
  readonly bucket: RollupBucket;
  /** Bucket width, ms. */
  readonly bucketMs: number;
  /** Start of the first bucket of the whole range, inclusive. */
  readonly start: number;
  /** End of the last bucket of the whole range, exclusive. */
  readonly end: number;
  /** Start of this page's first bucket (the cursor's, or `start`). */
  readonly pageStart: number;
  /** End of this page's last bucket: `min(end, pageStart + limit × bucketMs)`. */
  readonly pageEnd: number;
  /** Buckets per page. */
  readonly limit: number;
  /** In the order given, without duplicates. */
  readonly groupBy: readonly UsageGroupField[];
  /** Only these models; null: all. */
  readonly models: readonly string[] | null;
  /** Only these API keys; null: all. */
  readonly apiKeyIds: readonly string[] | null;
}

function invalid(param: string, message: string): InvalidRequestError {
  return new InvalidRequestError(message, { param, code: 'invalid_usage_query' });
}

/** A query value that may be repeated (`a=1&a=2`) or comma-separated (`a=1,2`); empty items are dropped. */
function list(query: Record<string, unknown>, name: string): string[] | null {
  const raw = query[name] ?? query[`${name}[]`];
  if (raw === undefined) return null;
  const values = Array.isArray(raw) ? raw : [raw];
  const items: string[] = [];
  for (const value of values) {
    if (typeof value !== 'string') throw invalid(name, `${name} must be a string or a list of strings`);
    items.push(
      ...value
        .split(',')
        .map((item) => item.trim())
        .filter((item) => item !== ''),
    );
  }
  return items;
}

function single(query: Record<string, unknown>, name: string): string | undefined {
  const raw = query[name];
  if (raw === undefined) return undefined;
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw);
  if (typeof raw !== 'string') throw invalid(name, `${name} must be given once`);
  return raw;
}

const UNIX_SECONDS = /^(0|[1-9][0-9]{0,11})$/;
const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

function parseTime(text: string, name: string, allowIso: boolean): number {
  if (UNIX_SECONDS.test(text)) return Number(text) * 1000;
  const match = allowIso ? ISO_INSTANT.exec(text) : null;
  if (match === null) {
    throw invalid(
      name,
      allowIso
        ? `${name} must be Unix seconds or an ISO 8601 date or instant with a zone (e.g. 2026-11-01T00:00:00Z)`
        : `${name} must be Unix seconds`,
    );
  }
  const [, year, month, day] = match;
  const date = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  const ms = Date.parse(text);
  if (date.getUTCMonth() !== Number(month) - 1 || date.getUTCDate() !== Number(day) || Number.isNaN(ms)) {
    throw invalid(name, `${name} is not a valid date: ${text}`);
  }
  return ms;
}

/** Reads `primary` (Unix seconds) or `alias` (Unix seconds or ISO); giving both is an error. */
function time(query: Record<string, unknown>, primary: string, alias: string): number | undefined {
  const first = single(query, primary);
  const second = single(query, alias);
  if (first !== undefined && second !== undefined) throw invalid(alias, `give ${primary} or ${alias}, not both`);
  if (first !== undefined) return parseTime(first, primary, false);
  if (second !== undefined) return parseTime(second, alias, true);
  return undefined;
}

function isBucket(value: string): value is RollupBucket {
  return (USAGE_BUCKET_WIDTHS as readonly string[]).includes(value);
}

function groupField(value: string): UsageGroupField {
  switch (value) {
    case 'model':
      return 'model';
    case 'api_key_id':
    case 'key':
      return 'api_key_id';
    default:
      throw invalid('group_by', `cannot group by "${value}": use model, api_key_id (or key)`);
  }
}

/** Page cursor: the start of the page's first bucket, epoch ms, in base64url so clients treat it as opaque. */
export function encodeUsageCursor(pageStart: number): string {
  return Buffer.from(`usage:${pageStart}`, 'utf8').toString('base64url');
}

function decodeCursor(text: string, start: number, end: number, bucketMs: number): number {
  const decoded = /^[A-Za-z0-9_-]{1,64}$/.test(text) ? Buffer.from(text, 'base64url').toString('utf8') : '';
  const match = /^usage:(0|[1-9][0-9]{0,15})$/.exec(decoded);
  const pageStart = match === null ? Number.NaN : Number(match[1]);
  if (!(pageStart >= start && pageStart < end && (pageStart - start) % bucketMs === 0)) {
    throw invalid('page', 'page is not a cursor of this query (use next_page of the previous response)');
  }
  return pageStart;
}

/**
 * Validates a usage query (`query` as Fastify parses a query string; values may be strings, numbers or arrays).
 * `now` (epoch ms) is the default end. Throws `InvalidRequestError` (code `invalid_usage_query`) naming the `param`.
 */
export function parseUsageQuery(query: Record<string, unknown>, now: number): UsageQuery {
  const width = single(query, 'bucket_width');
  const alias = single(query, 'bucket');
  if (width !== undefined && alias !== undefined && width !== alias) {
    throw invalid('bucket', 'bucket and bucket_width disagree; give one');
  }
  const bucketText = width ?? alias ?? '1d';
  if (!isBucket(bucketText)) {
    throw invalid(width === undefined ? 'bucket' : 'bucket_width', `${bucketText} is not one of 1m, 1h, 1d`);
  }
  const bucket = bucketText;
  const limits = USAGE_LIMITS[bucket];
  const bucketMs = limits.widthMs;

  const rawStart = time(query, 'start_time', 'start');
  if (rawStart === undefined) throw invalid('start_time', 'start_time (or start) is required');
  const rawEnd = time(query, 'end_time', 'end') ?? now;
  const startParam = query.start_time === undefined ? 'start' : 'start_time';
  const endParam = query.end === undefined ? 'end_time' : 'end';
  if (rawEnd <= rawStart) throw invalid(endParam, 'the end must be after the start');
  const start = Math.floor(rawStart / bucketMs) * bucketMs;
  const end = Math.ceil(rawEnd / bucketMs) * bucketMs;
  if (end - start > limits.maxRangeMs) {
    throw invalid(
      startParam,
      `the range may span at most ${limits.maxRangeMs / 86_400_000} days with ${bucket} buckets`,
    );
  }

  const limitText = single(query, 'limit');
  let limit = limits.defaultLimit;
  if (limitText !== undefined) {
    if (!/^[1-9][0-9]{0,5}$/.test(limitText) || Number(limitText) > limits.maxLimit) {
      throw invalid('limit', `limit must be an integer from 1 to ${limits.maxLimit} for ${bucket} buckets`);
    }
    limit = Number(limitText);
  }

  const page = single(query, 'page');
  const pageStart = page === undefined || page === '' ? start : decodeCursor(page, start, end, bucketMs);

  const groupBy: UsageGroupField[] = [];
  for (const item of list(query, 'group_by') ?? []) {
    const field = groupField(item);
    if (!groupBy.includes(field)) groupBy.push(field);
  }
  return {
    bucket,
    bucketMs,
    start,
    end,
    pageStart,
    pageEnd: Math.min(end, pageStart + limit * bucketMs),
    limit,
    groupBy,
    models: list(query, 'models'),
    apiKeyIds: list(query, 'api_key_ids'),
  };
}

/** The rollup query that reads exactly this page's buckets of one tenant. */
export function usageRollupQueryFor(query: UsageQuery, tenantId: string): UsageRollupQuery {
  return { bucket: query.bucket, start: query.pageStart, end: query.pageEnd, tenantId };
}
