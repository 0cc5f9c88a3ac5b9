/**
 * Mappings between the ledger's records (`ledger-store.ts`, camelCase, `bigint` nano-units) and its table rows
 * (`database-schema.ts`). Rows read back carry money as decimal text (`MoneyAsText`): both databases return it
 * exactly that way when a query casts the column to text, and `BigInt(text)` loses nothing.
 */

import { assertNever } from '../errors/assert-never.js';
import type {
  BillingRollupsTable,
  BudgetsTable,
  RequestLogTable,
  UsageEventsTable,
  UsageRollupsTable,
  WalletsTable,
  WalletTransactionsTable,
} from './database-schema.js';
import type {
  BillingMode,
  BillingRollupRow,
  BudgetRecord,
  RollupBucket,
  Settlement,
  StreamCheckpoint,
  UsageEventRecord,
  UsageRating,
  UsageRollupRow,
  WalletRecord,
  WalletTransactionKind,
  WalletTransactionRecord,
} from './ledger-store.js';
import type { RequestLogRecord } from './store.js';

/** A row as read back: every `bigint` column arrives as decimal text. */
export type MoneyAsText<T> = {
  [K in keyof T]: T[K] extends bigint ? string : T[K] extends bigint | null ? string | null : T[K];
};

/** The amount columns shared by usage events and billing rollups (list amounts by class, discounts, total, cost). */
const AMOUNT_COLUMNS = [
  'input_list_amount',
  'cached_list_amount',
  'output_list_amount',
  'batch_discount',
  'off_peak_discount',
  'contract_discount',
  'volume_discount',
  'amount',
  'cost',
] as const;

/** The primary key of `usage_rollups`. */
export const USAGE_ROLLUP_KEY = [
  'tenant_id',
  'bucket',
  'bucket_start',
  'key_id',
  'model',
] as const satisfies readonly (keyof UsageRollupsTable)[];
/** The columns a usage-rollup upsert adds to (every column after the primary key). */
export const USAGE_ROLLUP_SUMS = [
  'requests',
  'input_tokens',
  'cached_tokens',
  'output_tokens',
  'amount',
  'cost',
] as const satisfies readonly (keyof UsageRollupsTable)[];
/** The primary key of `billing_rollups`. */
export const BILLING_ROLLUP_KEY = [
  'tenant_id',
  'day',
  'model',
  'currency',
  'price_version',
  'tier',
  'output_condition',
  'batch',
] as const satisfies readonly (keyof BillingRollupsTable)[];
/** The columns a billing-rollup upsert adds to. */
export const BILLING_ROLLUP_SUMS = [
  'requests',
  'input_tokens',
  'cached_tokens',
  'output_tokens',
  ...AMOUNT_COLUMNS,
] as const satisfies readonly (keyof BillingRollupsTable)[];

/** Every `usage_events` column (the view's, in migration 0002's order). */
export const USAGE_EVENT_COLUMNS = [
  'request_id',
  'tenant_id',
  'key_id',
  'model',
  'deployment',
  'batch',
  'received_at',
  'currency',
  'price_version',
  'tier',
  'output_condition',
  'input_tokens',
  'cached_tokens',
  'output_tokens',
  'reasoning_tokens',
  'estimated',
  ...AMOUNT_COLUMNS,
  'detail',
] as const satisfies readonly (keyof UsageEventsTable)[];

/**
 * The rating columns of a `request_log` row (migration 0006): a priced request's usage event, beyond what the log
 * row says already. Null when the request has no event.
 */
const RATING_COLUMNS = [
  'batch',
  'currency',
  'price_version',
  'tier',
  'output_condition',
  ...AMOUNT_COLUMNS,
  'detail',
] as const satisfies readonly (keyof RequestLogTable & keyof UsageEventsTable)[];

/** The `request_log` columns of every request, in the order of `requestLogParameters`. */
export const REQUEST_LOG_INSERT_COLUMNS = [
  'request_id',
  'tenant_id',
  'key_id',
  'endpoint',
  'model',
  'deployment',
  'status',
  'error_code',
  'stream',
  'prompt_tokens',
  'cached_tokens',
  'completion_tokens',
  'reasoning_tokens',
  'usage_estimated',
  'latency_ms',
  'ttft_ms',
  'attempts',
  'created_at',
  'attempt_log',
] as const satisfies readonly (keyof RequestLogTable)[];

/** Every `request_log` column, the rating ones too, in the order of `pricedRequestLogParameters`. */
export const PRICED_REQUEST_LOG_COLUMNS = [
  ...REQUEST_LOG_INSERT_COLUMNS,
  ...RATING_COLUMNS,
] as const satisfies readonly (keyof RequestLogTable)[];

/** The rating columns of a request without a usage event. */
const NO_RATING: readonly null[] = RATING_COLUMNS.map(() => null);

/** A log record as the positional parameters of `REQUEST_LOG_INSERT_COLUMNS` (its rating columns stay null). */
export function requestLogParameters(record: RequestLogRecord): unknown[] {
  return [
    record.requestId,
    record.tenantId,
    record.keyId,
    record.endpoint,
    record.model,
    record.deployment,
    record.status,
    record.errorCode,
    record.stream ? 1 : 0,
    record.promptTokens,
    record.cachedTokens,
    record.completionTokens,
    record.reasoningTokens,
    record.usageEstimated ? 1 : 0,
    record.latencyMs,
    record.ttftMs,
    record.attempts,
    record.createdAt,
    record.attemptLog ?? null,
  ];
}

/**
 * A request's `request_log` row — its log record and, when it was priced, its rating — as the positional parameters
 * of `PRICED_REQUEST_LOG_COLUMNS` (same values as `requestLogRow`).
 */
export function pricedRequestLogParameters(record: RequestLogRecord, rating: UsageRating | undefined): unknown[] {
  const parameters = requestLogParameters(record);
  if (rating === undefined) return parameters.concat(NO_RATING);
  parameters.push(
    rating.batch ? 1 : 0,
    rating.currency,
    rating.priceVersion,
    rating.tier,
    rating.outputCondition,
    rating.inputListAmount,
    rating.cachedListAmount,
    rating.outputListAmount,
    rating.batchDiscount,
    rating.offPeakDiscount,
    rating.contractDiscount,
    rating.volumeDiscount,
    rating.amount,
    rating.cost,
    rating.detail,
  );
  return parameters;
}

/** `pricedRequestLogParameters` as a row object, for Kysely inserts. */
export function requestLogRow(record: RequestLogRecord, rating?: UsageRating): RequestLogTable {
  const values = pricedRequestLogParameters(record, rating);
  return Object.fromEntries(PRICED_REQUEST_LOG_COLUMNS.map((column, index) => [column, values[index]])) as never;
}

/** Money columns of each ledger table: the columns a read must cast to text. */
export const MONEY_COLUMNS = {
  wallets: ['balance', 'credit_limit', 'reserved'],
  wallet_transactions: ['amount'],
  usage_events: AMOUNT_COLUMNS,
  usage_rollups: ['amount', 'cost'],
  billing_rollups: AMOUNT_COLUMNS,
  stream_checkpoints: ['reservation'],
  budgets: ['monthly_limit'],
} as const;

/** `''` stands for null in primary-key label columns (`key_id` of usage rollups, `output_condition` of billing). */
export const NULL_LABEL = '';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
/** One UTC day, ms. */
export const DAY_MS = 86_400_000;

/** Every rollup bucket, finest first. */
export const ROLLUP_BUCKETS: readonly RollupBucket[] = ['1m', '1h', '1d'];

/** Epoch ms of the start of the UTC bucket containing `at`. */
export function bucketStart(bucket: RollupBucket, at: number): number {
  const size = bucketSize(bucket);
  return Math.floor(at / size) * size;
}

function bucketSize(bucket: RollupBucket): number {
  switch (bucket) {
    case '1m':
      return MINUTE_MS;
    case '1h':
      return HOUR_MS;
    case '1d':
      return DAY_MS;
    default:
      return assertNever(bucket);
  }
}

/** Maps a `usage_events` row (money as text or bigint) back to the record. */
export function usageEventFromRow(row: MoneyAsText<UsageEventsTable> | UsageEventsTable): UsageEventRecord {
  return {
    requestId: row.request_id,
    tenantId: row.tenant_id,
    keyId: row.key_id,
    model: row.model,
    deployment: row.deployment,
    batch: Number(row.batch) === 1,
    receivedAt: Number(row.received_at),
    currency: row.currency,
    priceVersion: row.price_version,
    tier: row.tier,
    outputCondition: row.output_condition,
    inputTokens: Number(row.input_tokens),
    cachedTokens: Number(row.cached_tokens),
    outputTokens: Number(row.output_tokens),
    reasoningTokens: Number(row.reasoning_tokens),
    estimated: Number(row.estimated) === 1,
    inputListAmount: BigInt(row.input_list_amount),
    cachedListAmount: BigInt(row.cached_list_amount),
    outputListAmount: BigInt(row.output_list_amount),
    batchDiscount: BigInt(row.batch_discount),
    offPeakDiscount: BigInt(row.off_peak_discount),
    contractDiscount: BigInt(row.contract_discount),
    volumeDiscount: BigInt(row.volume_discount),
    amount: BigInt(row.amount),
    cost: row.cost === null ? null : BigInt(row.cost),
    detail: row.detail,
  };
}

/** Maps a `wallets` row back to the record. */
export function walletFromRow(row: MoneyAsText<WalletsTable>): WalletRecord {
  return {
    tenantId: row.tenant_id,
    mode: row.mode as BillingMode,
    currency: row.currency,
    balance: BigInt(row.balance),
    creditLimit: BigInt(row.credit_limit),
    reserved: BigInt(row.reserved),
    updatedAt: Number(row.updated_at),
  };
}

/** Maps a `wallet_transactions` row back to the record. */
export function walletTransactionFromRow(row: MoneyAsText<WalletTransactionsTable>): WalletTransactionRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    kind: row.kind as WalletTransactionKind,
    amount: BigInt(row.amount),
    currency: row.currency,
    idempotencyKey: row.idempotency_key,
    note: row.note,
    createdAt: Number(row.created_at),
  };
}

/** Maps a `usage_rollups` row back to the record. */
export function usageRollupFromRow(row: MoneyAsText<UsageRollupsTable>): UsageRollupRow {
  return {
    bucket: row.bucket as RollupBucket,
    bucketStart: Number(row.bucket_start),
    tenantId: row.tenant_id,
    keyId: row.key_id === NULL_LABEL ? null : row.key_id,
    model: row.model,
    requests: Number(row.requests),
    inputTokens: Number(row.input_tokens),
    cachedTokens: Number(row.cached_tokens),
    outputTokens: Number(row.output_tokens),
    amount: BigInt(row.amount),
    cost: BigInt(row.cost),
  };
}

/** Maps a `billing_rollups` row back to the record. */
export function billingRollupFromRow(row: MoneyAsText<BillingRollupsTable>): BillingRollupRow {
  return {
    day: Number(row.day),
    tenantId: row.tenant_id,
    model: row.model,
    currency: row.currency,
    priceVersion: row.price_version,
    tier: row.tier,
    outputCondition: row.output_condition === NULL_LABEL ? null : row.output_condition,
    batch: Number(row.batch) === 1,
    requests: Number(row.requests),
    inputTokens: Number(row.input_tokens),
    cachedTokens: Number(row.cached_tokens),
    outputTokens: Number(row.output_tokens),
    inputListAmount: BigInt(row.input_list_amount),
    cachedListAmount: BigInt(row.cached_list_amount),
    outputListAmount: BigInt(row.output_list_amount),
    batchDiscount: BigInt(row.batch_discount),
    offPeakDiscount: BigInt(row.off_peak_discount),
    contractDiscount: BigInt(row.contract_discount),
    volumeDiscount: BigInt(row.volume_discount),
    amount: BigInt(row.amount),
    cost: BigInt(row.cost),
  };
}

/** Maps a budget to its row. */
export function budgetToRow(budget: BudgetRecord): BudgetsTable {
  return {
    scope: budget.scope,
    scope_id: budget.scopeId,
    tenant_id: budget.tenantId,
    monthly_limit: budget.monthlyLimit,
    enforcement: budget.enforcement,
    thresholds: JSON.stringify(budget.thresholds),
    webhook_url: budget.webhookUrl,
    updated_at: budget.updatedAt,
  };
}

/** Maps a `budgets` row back to the record. */
export function budgetFromRow(row: MoneyAsText<BudgetsTable>): BudgetRecord {
  return {
    scope: row.scope as BudgetRecord['scope'],
    scopeId: row.scope_id,
    tenantId: row.tenant_id,
    monthlyLimit: BigInt(row.monthly_limit),
    enforcement: row.enforcement as BudgetRecord['enforcement'],
    thresholds: JSON.parse(row.thresholds) as number[],
    webhookUrl: row.webhook_url,
    updatedAt: Number(row.updated_at),
  };
}

/** The nano amounts an event's `amount` is the sum of: its list amounts, then its (negative) discounts. */
export const AMOUNT_PART_FIELDS = [
  'inputListAmount',
  'cachedListAmount',
  'outputListAmount',
  'batchDiscount',
  'offPeakDiscount',
  'contractDiscount',
  'volumeDiscount',
] as const satisfies readonly (keyof UsageEventRecord & keyof BillingRollupRow)[];

const EVENT_NANO_FIELDS = [
  ...AMOUNT_PART_FIELDS,
  'amount',
  'cost',
] as const satisfies readonly (keyof UsageEventRecord)[];

/** JSON's replacer for nano amounts: decimal strings (JSON has no exact 64-bit integers). */
function bigintsAsDigits(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** Turns the nano-amount fields of a parsed event or rating back into bigints, in place. */
function nanoFieldsFromDigits(parsed: Record<string, unknown>): void {
  for (const field of EVENT_NANO_FIELDS) {
    const value = parsed[field];
    parsed[field] = value === null || value === undefined ? null : BigInt(value as string);
  }
}

/** A checkpoint's event as JSON, nano amounts as decimal strings. */
export function checkpointEventToJson(event: UsageEventRecord): string {
  return JSON.stringify(event, bigintsAsDigits);
}

/** Parses `checkpointEventToJson`'s output. */
export function checkpointEventFromJson(json: string): UsageEventRecord {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  nanoFieldsFromDigits(parsed);
  return parsed as unknown as UsageEventRecord;
}

/**
 * A settlement as one line of JSON (the settlement journal and spool), nano amounts as decimal strings as in
 * checkpoints. Every response of the embedded gateway journals one, so the known nano fields are turned into digits
 * first and the copy is stringified without a replacer: a replacer is called for every key and value, which took
 * 7 µs a settlement here against under 3 µs. Should a bigint be anywhere else, stringify throws and the replacer
 * does it.
 */
export function settlementToJson(settlement: Settlement): string {
  const { rating, reservation } = settlement;
  // An unrated settlement without a reservation (no price book) holds no bigint: stringified as it is.
  let plain: Record<string, unknown> = settlement as unknown as Record<string, unknown>;
  if (rating !== undefined || reservation !== undefined) {
    plain = { ...settlement };
    if (rating !== undefined) {
      const digits: Record<string, unknown> = { ...rating };
      for (const field of EVENT_NANO_FIELDS) {
        const value = rating[field];
        if (typeof value === 'bigint') digits[field] = value.toString();
      }
      plain.rating = digits;
    }
    if (reservation !== undefined) plain.reservation = { ...reservation, amount: reservation.amount.toString() };
  }
  try {
    return JSON.stringify(plain);
  } catch {
    return JSON.stringify(settlement, bigintsAsDigits);
  }
}

/** Parses `settlementToJson`'s output. */
export function settlementFromJson(json: string): Settlement {
  const parsed = JSON.parse(json) as {
    rating?: Record<string, unknown>;
    reservation?: { tenantId: string; amount: string | bigint };
  };
  if (parsed.rating !== undefined) nanoFieldsFromDigits(parsed.rating);
  if (parsed.reservation !== undefined) parsed.reservation.amount = BigInt(parsed.reservation.amount);
  return parsed as unknown as Settlement;
}

/** Builds a checkpoint from its row. */
export function checkpointFromRow(row: {
  request_id: string;
  event: string;
  reservation: string | bigint;
  updated_at: number | bigint;
  reservation_owner?: string | null;
}): StreamCheckpoint {
  const checkpoint: StreamCheckpoint = {
    requestId: row.request_id,
    event: checkpointEventFromJson(row.event),
    reservation: BigInt(row.reservation),
    updatedAt: Number(row.updated_at),
  };
  if (row.reservation_owner !== undefined && row.reservation_owner !== null) {
    checkpoint.reservationOwner = row.reservation_owner;
  }
  return checkpoint;
}
