/**
 * What a committed batch of settlements changes besides its own rows, aggregated in memory so the transaction
 * issues one upsert per rollup group and per wallet instead of one per event. Shared by every store
 * implementation; the dialects only differ in how they apply it.
 */
import type { BillingRollupsTable, UsageRollupsTable } from './database-schema.js';
import { bucketStart, NULL_LABEL, ROLLUP_BUCKETS } from './ledger-rows.js';
import type { Nano, Settlement } from './ledger-store.js';

/** The effects of one batch. Lists are sorted by primary key, so concurrent transactions lock rows in one order. */
export interface SettlementEffects {
  /** Per tenant (sorted): Σ amount of the usage events inserted, to subtract from the balance. */
  charges: { tenantId: string; currency: string; amount: Nano }[];
  /** Per tenant (sorted): Σ reservations of the settlements whose request-log row was inserted. */
  releases: { tenantId: string; amount: Nano }[];
  /** Increments of usage rollups, every bucket size. */
  usageRollups: UsageRollupsTable[];
  /** Increments of billing rollups. */
  billingRollups: BillingRollupsTable[];
  /** Checkpoints to delete (every settlement naming one: deleting is idempotent). */
  checkpointIds: string[];
}

/**
 * Aggregates the effects of `batch`, counting only what this commit inserted: an event whose request id was
 * already stored (a retry, a recovered checkpoint, a duplicate inside the batch) moves no balance and no rollup,
 * and a settlement whose request-log row existed already releases no reservation (the first one did).
 * `logs` and `events` hold the request ids the inserts reported; each id counts once, so both sets are consumed
 * (emptied of the ids used) — pass sets built for this call.
 */
export function settlementEffects(
  batch: readonly Settlement[],
  logs: Set<string>,
  events: Set<string>,
): SettlementEffects {
  const charges = new Map<string, { tenantId: string; currency: string; amount: Nano }>();
  const releases = new Map<string, Nano>();
  const usage = new Map<string, UsageRollupsTable>();
  const billing = new Map<string, BillingRollupsTable>();
  const checkpointIds = new Set<string>();

  for (const settlement of batch) {
    if (settlement.checkpointRequestId !== undefined) checkpointIds.add(settlement.checkpointRequestId);
    const reservation = settlement.reservation;
    if (logs.delete(settlement.log.requestId) && reservation !== undefined && reservation.amount !== 0n) {
      releases.set(reservation.tenantId, (releases.get(reservation.tenantId) ?? 0n) + reservation.amount);
    }
    const event = settlement.event;
    if (event === undefined || !events.delete(event.requestId)) continue;

    const charge = charges.get(event.tenantId);
    if (charge === undefined) {
      charges.set(event.tenantId, { tenantId: event.tenantId, currency: event.currency, amount: event.amount });
    } else {
      charge.amount += event.amount;
    }
    const cost = event.cost ?? 0n;
    const keyId = event.keyId ?? NULL_LABEL;
    const group = `${event.tenantId}\u0000${keyId}\u0000${event.model}`;
    for (const bucket of ROLLUP_BUCKETS) {
      const start = bucketStart(bucket, event.receivedAt);
      const key = `${bucket}${start}\u0000${group}`;
      const row = usage.get(key);
      if (row === undefined) {
        usage.set(key, {
          tenant_id: event.tenantId,
          bucket,
          bucket_start: start,
          key_id: keyId,
          model: event.model,
          requests: 1,
          input_tokens: event.inputTokens,
          cached_tokens: event.cachedTokens,
          output_tokens: event.outputTokens,
          amount: event.amount,
          cost,
        });
      } else {
        row.requests += 1;
        row.input_tokens += event.inputTokens;
        row.cached_tokens += event.cachedTokens;
        row.output_tokens += event.outputTokens;
        row.amount += event.amount;
        row.cost += cost;
      }
    }

    const day = bucketStart('1d', event.receivedAt);
    const outputCondition = event.outputCondition ?? NULL_LABEL;
    const batchFlag = event.batch ? 1 : 0;
    const billingKey = [
      event.tenantId,
      day,
      event.model,
      event.currency,
      event.priceVersion,
      event.tier,
      outputCondition,
      batchFlag,
    ].join('\u0000');
    const line = billing.get(billingKey);
    if (line === undefined) {
      billing.set(billingKey, {
        tenant_id: event.tenantId,
        day,
        model: event.model,
        currency: event.currency,
        price_version: event.priceVersion,
        tier: event.tier,
        output_condition: outputCondition,
        batch: batchFlag,
        requests: 1,
        input_tokens: event.inputTokens,
        cached_tokens: event.cachedTokens,
        output_tokens: event.outputTokens,
        input_list_amount: event.inputListAmount,
        cached_list_amount: event.cachedListAmount,
        output_list_amount: event.outputListAmount,
        batch_discount: event.batchDiscount,
        off_peak_discount: event.offPeakDiscount,
        contract_discount: event.contractDiscount,
        volume_discount: event.volumeDiscount,
        amount: event.amount,
        cost,
      });
    } else {
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
      line.cost += cost;
    }
  }

  return {
    charges: [...charges.values()].sort((a, b) => compare(a.tenantId, b.tenantId)),
    releases: [...releases]
      .map(([tenantId, amount]) => ({ tenantId, amount }))
      .sort((a, b) => compare(a.tenantId, b.tenantId)),
    usageRollups: sortedValues(usage),
    billingRollups: sortedValues(billing),
    checkpointIds: [...checkpointIds].sort(compare),
  };
}

function sortedValues<T>(map: Map<string, T>): T[] {
  return [...map].sort(([a], [b]) => compare(a, b)).map(([, value]) => value);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
