/**
 * The body of `GET /v1/usage`: usage rollups shaped exactly like OpenAI's organization Usage API for completions
 * (`UsageResponse` → `UsageTimeBucket` → `UsageCompletionsResult` in OpenAI's OpenAPI document), so dashboards and
 * scripts written for OpenAI read it unchanged.
 *
 * - Every bucket of the page is present, in time order; a bucket without usage has `results: []` (as OpenAI does).
 * - Rows are merged across whatever `group_by` does not split; a field not grouped by is `null` in the results.
 *   Without `group_by`, a bucket with usage has one result.
 * - `input_tokens` counts all prompt tokens, cached ones included (OpenAI's definition): the rollup's non-cached
 *   `inputTokens` plus `cachedTokens`. Audio tokens are always 0; `project_id`, `user_id` and `batch` are null
 *   (Tollgate's usage rollups are not split by them).
 * - Tollgate adds `amount` to each result: the charged amount as an exact decimal string of the currency unit
 *   (nano precision). `UsageCompletionsResult` does not forbid extra properties (no `additionalProperties: false`),
 *   and the tests validate pages carrying it against the schema. The operator's cost is never included.
 */

import type { UsageRollupRow } from '../../store/ledger-store.js';
import { formatNano } from '../nano.js';
import type { UsageQuery } from './parse-usage-query.js';
import { encodeUsageCursor } from './parse-usage-query.js';

/** OpenAI's `UsageCompletionsResult`, plus Tollgate's `amount`. */
export interface UsageCompletionsResult {
  object: 'organization.usage.completions.result';
  /** Prompt tokens, cached ones included. */
  input_tokens: number;
  output_tokens: number;
  input_cached_tokens: number;
  input_audio_tokens: 0;
  output_audio_tokens: 0;
  num_model_requests: number;
  project_id: null;
  user_id: null;
  /** Set when grouped by `api_key_id`; `null` for requests made without a key (or not grouped). */
  api_key_id: string | null;
  /** Set when grouped by `model`. */
  model: string | null;
  batch: null;
  /** Charged amount, currency units, exact decimal string (Tollgate extension). */
  amount: string;
}

/** OpenAI's `UsageTimeBucket`. Times in Unix seconds. */
export interface UsageTimeBucket {
  object: 'bucket';
  start_time: number;
  end_time: number;
  results: UsageCompletionsResult[];
}

/** OpenAI's `UsageResponse`. */
export interface UsagePage {
  object: 'page';
  data: UsageTimeBucket[];
  has_more: boolean;
  /** Cursor for the next page (`page=`), or null on the last page. */
  next_page: string | null;
}

/** A usage rollup row that does not fit the query. */
export class UsageRowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageRowError';
  }
}

interface Accumulator {
  model: string | null;
  apiKeyId: string | null;
  requests: number;
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  amount: bigint;
}

function compareNullable(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

/**
 * Builds one page of the usage API from the rollup rows of its buckets (`usageRollupQueryFor(query, tenant)`).
 * Rows outside `[pageStart, pageEnd)` or filtered out by `models`/`apiKeyIds` are ignored; a row of another bucket
 * width or not aligned to a bucket is an error (`UsageRowError`), as it would be counted in the wrong bucket.
 */
export function buildUsagePage(rows: readonly UsageRollupRow[], query: UsageQuery): UsagePage {
  const byModel = query.groupBy.includes('model');
  const byKey = query.groupBy.includes('api_key_id');
  const models = query.models === null ? null : new Set(query.models);
  const keys = query.apiKeyIds === null ? null : new Set(query.apiKeyIds);
  const buckets = new Map<number, Map<string, Accumulator>>();
  for (let start = query.pageStart; start < query.pageEnd; start += query.bucketMs) buckets.set(start, new Map());

  for (const row of rows) {
    if (row.bucket !== query.bucket) throw new UsageRowError(`a ${row.bucket} rollup row in a ${query.bucket} query`);
    if (row.bucketStart < query.pageStart || row.bucketStart >= query.pageEnd) continue;
    if (models !== null && !models.has(row.model)) continue;
    if (keys !== null && (row.keyId === null || !keys.has(row.keyId))) continue;
    const bucket = buckets.get(row.bucketStart);
    if (bucket === undefined) {
      throw new UsageRowError(
        `rollup row at ${new Date(row.bucketStart).toISOString()} is not on a ${query.bucket} boundary`,
      );
    }
    const model = byModel ? row.model : null;
    const apiKeyId = byKey ? row.keyId : null;
    const groupKey = JSON.stringify([model, apiKeyId]);
    let group = bucket.get(groupKey);
    if (group === undefined) {
      group = { model, apiKeyId, requests: 0, inputTokens: 0, cachedTokens: 0, outputTokens: 0, amount: 0n };
      bucket.set(groupKey, group);
    }
    group.requests += row.requests;
    group.inputTokens += row.inputTokens;
    group.cachedTokens += row.cachedTokens;
    group.outputTokens += row.outputTokens;
    group.amount += row.amount;
  }

  const data: UsageTimeBucket[] = [...buckets.entries()].map(([start, groups]) => ({
    object: 'bucket',
    start_time: start / 1000,
    end_time: (start + query.bucketMs) / 1000,
    results: [...groups.values()]
      .sort((a, b) => compareNullable(a.model, b.model) || compareNullable(a.apiKeyId, b.apiKeyId))
      .map((group) => ({
        object: 'organization.usage.completions.result',
        input_tokens: group.inputTokens + group.cachedTokens,
        output_tokens: group.outputTokens,
        input_cached_tokens: group.cachedTokens,
        input_audio_tokens: 0,
        output_audio_tokens: 0,
        num_model_requests: group.requests,
        project_id: null,
        user_id: null,
        api_key_id: group.apiKeyId,
        model: group.model,
        batch: null,
        amount: formatNano(group.amount),
      })),
  }));
  const hasMore = query.pageEnd < query.end;
  return { object: 'page', data, has_more: hasMore, next_page: hasMore ? encodeUsageCursor(query.pageEnd) : null };
}
