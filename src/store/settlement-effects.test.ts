import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BillingRollupsTable, UsageRollupsTable } from './database-schema.js';
import { logOf, settlementOf } from './ledger-fixtures.js';
import {
  isRatedLog,
  type RatedRequestLog,
  type Settlement,
  type UsageEventRecord,
  type UsageRating,
} from './ledger-store.js';
import { settlementEffects } from './settlement-effects.js';

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const START = Date.UTC(2030, 0, 31, 23, 58);

/** The definition, one event at a time: what the optimised aggregation must equal. */
function referenceEffects(batch: readonly Settlement[], inserted: ReadonlySet<string>) {
  const usage = new Map<string, UsageRollupsTable>();
  const billing = new Map<string, BillingRollupsTable>();
  const charges = new Map<string, bigint>();
  const releases = new Map<string, bigint>();
  const counted = new Set<string>();
  for (const settlement of batch) {
    const { log, reservation } = settlement;
    // A request counts once, through its first settlement: the one whose row (and event) the insert stored.
    if (!inserted.has(log.requestId) || counted.has(log.requestId)) continue;
    counted.add(log.requestId);
    if (reservation !== undefined && reservation.amount !== 0n) {
      releases.set(reservation.tenantId, (releases.get(reservation.tenantId) ?? 0n) + reservation.amount);
    }
    // No price: its tokens are usage at no amount; no charge and no bill.
    const unpriced = settlement.rating === undefined;
    if (unpriced && (!isRatedLog(log) || log.promptTokens + log.completionTokens === 0)) continue;
    const event = unpriced
      ? usageEventView(log as RatedRequestLog, NO_RATING)
      : usageEventView(settlement.log as RatedRequestLog, settlement.rating!);
    if (!unpriced) charges.set(event.tenantId, (charges.get(event.tenantId) ?? 0n) + event.amount);
    // Minutes and hours: days are read from the hours, not stored.
    for (const [bucket, size] of [
      ['1m', MINUTE],
      ['1h', HOUR],
    ] as const) {
      const start = event.receivedAt - (event.receivedAt % size);
      const key = JSON.stringify([event.tenantId, bucket, start, event.keyId, event.model]);
      const row = usage.get(key) ?? {
        tenant_id: event.tenantId,
        bucket,
        bucket_start: start,
        key_id: event.keyId ?? '',
        model: event.model,
        requests: 0,
        input_tokens: 0,
        cached_tokens: 0,
        output_tokens: 0,
        amount: 0n,
        cost: 0n,
      };
      row.requests += 1;
      row.input_tokens += event.inputTokens;
      row.cached_tokens += event.cachedTokens;
      row.output_tokens += event.outputTokens;
      row.amount += event.amount;
      row.cost += event.cost ?? 0n;
      usage.set(key, row);
    }
    if (unpriced) continue;
    const day = event.receivedAt - (event.receivedAt % DAY);
    const key = JSON.stringify([
      event.tenantId,
      day,
      event.model,
      event.currency,
      event.priceVersion,
      event.tier,
      event.outputCondition,
      event.batch,
    ]);
    const line = billing.get(key) ?? {
      tenant_id: event.tenantId,
      day,
      model: event.model,
      currency: event.currency,
      price_version: event.priceVersion,
      tier: event.tier,
      output_condition: event.outputCondition ?? '',
      batch: event.batch ? 1 : 0,
      requests: 0,
      input_tokens: 0,
      cached_tokens: 0,
      output_tokens: 0,
      input_list_amount: 0n,
      cached_list_amount: 0n,
      output_list_amount: 0n,
      batch_discount: 0n,
      off_peak_discount: 0n,
      contract_discount: 0n,
      volume_discount: 0n,
      amount: 0n,
      cost: 0n,
    };
    line.requests += 1;
    line.input_tokens += event.inputTokens;
    line.cached_tokens += event.cachedTokens;
    line.output_tokens += event.outputTokens;
    line.input_list_amount += event.inputListAmount;
    line.cached_list_amount += event.cachedListAmount;
    line.output_list_amount += event.outputListAmount;
    line.batch_discount += event.batchDiscount;
    line.off_peak_discount += event.offPeakDiscount;
    line.contract_discount += event.contractDiscount;
    line.volume_discount += event.volumeDiscount;
    line.amount += event.amount;
    line.cost += event.cost ?? 0n;
    billing.set(key, line);
  }
  return { usage: [...usage.values()], billing: [...billing.values()], charges, releases };
}

/** What an unpriced request adds: its tokens, no amount, no cost. */
const NO_RATING: UsageRating = {
  batch: false,
  currency: 'CNY',
  priceVersion: '',
  tier: '',
  outputCondition: null,
  inputListAmount: 0n,
  cachedListAmount: 0n,
  outputListAmount: 0n,
  batchDiscount: 0n,
  offPeakDiscount: 0n,
  contractDiscount: 0n,
  volumeDiscount: 0n,
  amount: 0n,
  cost: null,
  detail: '{}',
};

/** The usage event a rated row reads back as (the `usage_events` view's definition). */
function usageEventView(log: RatedRequestLog, rating: UsageRating): UsageEventRecord {
  return {
    ...rating,
    requestId: log.requestId,
    tenantId: log.tenantId,
    keyId: log.keyId,
    model: log.model,
    deployment: log.deployment,
    receivedAt: log.createdAt,
    inputTokens: log.promptTokens - log.cachedTokens,
    cachedTokens: log.cachedTokens,
    outputTokens: log.completionTokens,
    reasoningTokens: log.reasoningTokens,
    estimated: log.usageEstimated,
  };
}

const money = fc.oneof(fc.constant(0n), fc.bigInt({ min: -(10n ** 15n), max: 10n ** 15n }));

const eventArbitrary = fc.record({
  id: fc.integer({ min: 0, max: 40 }),
  tenant: fc.constantFrom('ten_a', 'ten_b', 'ten_c'),
  keyId: fc.constantFrom('key_1', 'key_2', null),
  model: fc.constantFrom('m-x', 'm-y'),
  // Up to 3 days from two minutes before midnight: crosses minute, hour and day boundaries.
  offset: fc.oneof(fc.integer({ min: 0, max: 5 * MINUTE }), fc.integer({ min: 0, max: 3 * DAY })),
  priceVersion: fc.constantFrom('v1', 'v2'),
  tier: fc.constantFrom('0-32768', '32769-131072'),
  outputCondition: fc.constantFrom(null, 'output<=200'),
  batch: fc.boolean(),
  tokens: fc.tuple(fc.nat(100_000), fc.nat(10_000), fc.nat(10_000)),
  amounts: fc.tuple(money, money, money, money, money, money, money, money),
  cost: fc.option(money, { nil: null }),
  reservation: fc.option(fc.bigInt({ min: 0n, max: 10n ** 12n }), { nil: undefined }),
  // Mostly true, so most events count and groups fill up.
  inserted: fc.constantFrom(true, true, true, false),
  hasEvent: fc.constantFrom(true, true, true, false),
});

type EventInput = typeof eventArbitrary extends fc.Arbitrary<infer T> ? T : never;

function settlementFrom(input: EventInput): Settlement {
  const requestId = `req_${input.id}`;
  const [inputList, cachedList, outputList, batchDiscount, offPeak, contract, volume, amount] = input.amounts;
  const event: UsageEventRecord = {
    requestId,
    tenantId: input.tenant,
    keyId: input.keyId,
    model: input.model,
    deployment: null,
    batch: input.batch,
    receivedAt: START + input.offset,
    currency: 'CNY',
    priceVersion: input.priceVersion,
    tier: input.tier,
    outputCondition: input.outputCondition,
    inputTokens: input.tokens[0],
    cachedTokens: input.tokens[1],
    outputTokens: input.tokens[2],
    reasoningTokens: 0,
    estimated: false,
    inputListAmount: inputList,
    cachedListAmount: cachedList,
    outputListAmount: outputList,
    batchDiscount,
    offPeakDiscount: offPeak,
    contractDiscount: contract,
    volumeDiscount: volume,
    amount,
    cost: input.cost,
    detail: '{}',
  };
  const settlement: Settlement = input.hasEvent ? settlementOf(event) : { log: logOf(event) };
  settlement.checkpointRequestId = requestId;
  if (input.reservation !== undefined) settlement.reservation = { tenantId: input.tenant, amount: input.reservation };
  return settlement;
}

function byJson<T>(rows: readonly T[]): string[] {
  return rows
    .map((row) => JSON.stringify(row, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value)))
    .sort();
}

describe('settlementEffects', () => {
  it('equals the event-by-event definition, counting only inserted ids, each once', () => {
    let merged = 0;
    fc.assert(
      fc.property(fc.array(eventArbitrary, { minLength: 0, maxLength: 150, size: 'max' }), (inputs) => {
        const batch = inputs.map(settlementFrom);
        // An id counts as inserted when its first settlement in the batch says so (duplicates share the id).
        const inserted = new Set<string>();
        const seen = new Set<number>();
        for (const input of inputs) {
          if (seen.has(input.id)) continue;
          seen.add(input.id);
          if (input.inserted) inserted.add(`req_${input.id}`);
        }
        const expected = referenceEffects(batch, inserted);
        const actual = settlementEffects(batch, new Set(inserted));

        expect(byJson(actual.usageRollups)).toEqual(byJson(expected.usage));
        expect(byJson(actual.billingRollups)).toEqual(byJson(expected.billing));
        expect(new Map(actual.charges.map((charge) => [charge.tenantId, charge.amount]))).toEqual(expected.charges);
        expect(new Map(actual.releases.map((release) => [release.tenantId, release.amount]))).toEqual(
          expected.releases,
        );
        expect(actual.checkpointIds).toEqual([...new Set(batch.map((each) => each.log.requestId))].sort());
        if (actual.usageRollups.some((row) => row.bucket === '1m' && row.requests > 1)) merged++;
      }),
      { numRuns: 200 },
    );
    // The generator must exercise aggregation (several events in one row), not only one event per row.
    expect(merged).toBeGreaterThan(50);
  });

  it('sorts rows by primary key, so concurrent transactions lock them in one order', () => {
    const inputs = fc.sample(fc.array(eventArbitrary, { minLength: 30, maxLength: 60 }), { numRuns: 1, seed: 7 })[0]!;
    const batch = inputs.map((input) => settlementFrom({ ...input, hasEvent: true }));
    const ids = new Set(batch.map((each) => each.log.requestId));
    const effects = settlementEffects(batch, new Set(ids));
    const usageKeys = effects.usageRollups.map((row) => [
      row.tenant_id,
      row.bucket,
      row.bucket_start,
      row.key_id,
      row.model,
    ]);
    expect(usageKeys).toEqual([...usageKeys].sort(compareTuples));
    const billingKeys = effects.billingRollups.map((row) => [
      row.tenant_id,
      row.day,
      row.model,
      row.currency,
      row.price_version,
      row.tier,
      row.output_condition,
      row.batch,
    ]);
    expect(billingKeys).toEqual([...billingKeys].sort(compareTuples));
    expect(effects.usageRollups.length).toBeGreaterThan(3);
  });
});

function compareTuples(a: readonly (string | number)[], b: readonly (string | number)[]): number {
  for (let index = 0; index < a.length; index++) {
    const left = a[index]!;
    const right = b[index]!;
    if (left < right) return -1;
    if (left > right) return 1;
  }
  return 0;
}
