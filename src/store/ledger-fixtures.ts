/**
 * Test fixtures of the ledger's records: a request-log record, a usage event and a billing-rollup row with every field
 * at a neutral value, so a test states only what it is about. Amounts left out follow the ledger invariant: `amount`
 * is the list amounts plus the discounts. Used by tests and their child processes, never by the gateway.
 */
import { AMOUNT_PART_FIELDS } from './ledger-rows.js';
import {
  type BillingRollupRow,
  type Nano,
  type RatedRequestLog,
  type RatedSettlement,
  ratingOf,
  type UsageEventRecord,
} from './ledger-store.js';
import type { RequestLogRecord } from './store.js';

/** Every part and the amount at zero, in the records' column order. */
const NO_AMOUNTS = { ...Object.fromEntries(AMOUNT_PART_FIELDS.map((part) => [part, 0n])), amount: 0n } as Record<
  (typeof AMOUNT_PART_FIELDS)[number] | 'amount',
  bigint
>;

/** A successful, unstreamed chat request of `tenantId`. */
export function requestLogFixture(
  fields: Partial<RequestLogRecord> & Pick<RequestLogRecord, 'requestId' | 'tenantId'>,
): RequestLogRecord {
  // Keys in the record type's order, as the store reads rows back (tests compare serialized rows).
  const { requestId, tenantId, ...rest } = fields;
  return {
    requestId,
    tenantId,
    keyId: null,
    endpoint: 'chat',
    model: 'model-a',
    deployment: 'sim/model-a',
    status: 200,
    errorCode: null,
    stream: false,
    promptTokens: 0,
    cachedTokens: 0,
    completionTokens: 0,
    reasoningTokens: 0,
    usageEstimated: false,
    latencyMs: 1,
    ttftMs: null,
    attempts: 1,
    createdAt: 1_700_000_000_000,
    ...rest,
  };
}

/** A usage event rated at list price with no tokens unless given; `amount` defaults to its parts' sum. */
export function usageEventFixture(
  fields: Partial<UsageEventRecord> & Pick<UsageEventRecord, 'requestId' | 'tenantId'>,
): UsageEventRecord {
  const { requestId, tenantId, ...rest } = fields;
  const event: UsageEventRecord = {
    requestId,
    tenantId,
    keyId: null,
    model: 'model-a',
    deployment: 'sim/model-a',
    batch: false,
    receivedAt: 1_700_000_000_000,
    currency: 'CNY',
    priceVersion: 'v1',
    tier: '0-32768',
    outputCondition: null,
    inputTokens: 0,
    cachedTokens: 0,
    outputTokens: 0,
    reasoningTokens: 0,
    estimated: false,
    ...NO_AMOUNTS,
    cost: null,
    detail: '{}',
    ...rest,
  };
  if (fields.amount === undefined) event.amount = sumOfParts(event);
  return event;
}

/** The log record of the request `event` rated: same id, tenant, key, model, deployment, time and tokens. */
export function logOf(event: UsageEventRecord, overrides: Partial<RatedRequestLog> = {}): RatedRequestLog {
  const log = requestLogFixture({
    requestId: event.requestId,
    tenantId: event.tenantId,
    keyId: event.keyId,
    model: event.model,
    deployment: event.deployment,
    promptTokens: event.inputTokens + event.cachedTokens,
    cachedTokens: event.cachedTokens,
    completionTokens: event.outputTokens,
    reasoningTokens: event.reasoningTokens,
    usageEstimated: event.estimated,
    latencyMs: 100,
    createdAt: event.receivedAt,
    ...overrides,
  });
  // Tenant and model come from the event (strings) or from overrides typed to keep them strings.
  return log as RatedRequestLog;
}

/** The settlement that stores `event`: its log record (`logOf`) and its rating, plus what else it ends. */
export function settlementOf(
  event: UsageEventRecord,
  extra: Omit<RatedSettlement, 'log' | 'rating'> = {},
): RatedSettlement {
  return { log: logOf(event), rating: ratingOf(event), ...extra };
}

/** A billing-rollup row of one request with no tokens unless given; `amount` defaults to its parts' sum. */
export function billingRollupFixture(
  fields: Partial<BillingRollupRow> & Pick<BillingRollupRow, 'day' | 'tenantId'>,
): BillingRollupRow {
  const { day, tenantId, ...rest } = fields;
  const row: BillingRollupRow = {
    day,
    tenantId,
    model: 'model-a',
    currency: 'CNY',
    priceVersion: 'v1',
    tier: 'all',
    outputCondition: null,
    batch: false,
    requests: 1,
    inputTokens: 0,
    cachedTokens: 0,
    outputTokens: 0,
    ...NO_AMOUNTS,
    cost: 0n,
    ...rest,
  };
  if (fields.amount === undefined) row.amount = sumOfParts(row);
  return row;
}

function sumOfParts(parts: Omit<BillingRollupRow, 'cost'> | UsageEventRecord): bigint {
  return AMOUNT_PART_FIELDS.reduce((sum, part) => sum + parts[part], 0n);
}

/** A top-up of `amount` nano CNY (what tests fund a wallet with). */
export function topUpFixture(tenantId: string, amount: Nano, idempotencyKey: string | null = null) {
  return { tenantId, kind: 'topup' as const, amount, currency: 'CNY', idempotencyKey, note: null };
}
