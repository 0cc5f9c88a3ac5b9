/**
 * What a committed batch of settlements changes besides its own rows, aggregated in memory so the transaction
 * issues one upsert per rollup group and per wallet instead of one per event. Shared by every store
 * implementation; the dialects only differ in how they apply it.
 *
 * This runs on the ingest hot path for every event, so it does the least work per event: one string key per event
 * (tenant, key, model), per-minute sums inside that group (most events of a batch share their group's minute, so
 * the last minute is cached), and hour rows folded from the minute sums once per batch rather than from every
 * event. Billing lines reuse the group's last line while its labels stay the same (price version, tier…
 * rarely change between two requests of one key and model). Money stays `bigint` throughout: exact.
 */
import type { BillingRollupsTable, UsageRollupsTable } from './database-schema.js';
import { bucketStart, NULL_LABEL } from './ledger-rows.js';
import { isRatedLog, type Nano, type RatedRequestLog, type Settlement, type UsageRating } from './ledger-store.js';

/** The effects of one batch. Lists are sorted by primary key, so concurrent transactions lock rows in one order. */
export interface SettlementEffects {
  /** Per tenant (sorted): Σ amount of the usage events inserted, to subtract from the balance. */
  charges: { tenantId: string; currency: string; amount: Nano }[];
  /**
   * Per tenant (sorted): Σ reservations taken without an owner of the settlements whose request-log row was
   * inserted, to subtract from `reserved`.
   */
  releases: { tenantId: string; amount: Nano }[];
  /**
   * The same for reservations held by an owner, per (tenant, owner), sorted: each is taken from the owner's hold
   * and, only when the hold still has it, from `reserved` (a swept owner's hold was released already).
   */
  heldReleases: { tenantId: string; owner: string; amount: Nano }[];
  /**
   * Increments of usage rollups, minutes and hours, sorted by (tenant, bucket, bucket start, key, model). Days are
   * not stored: a day is read as the sum of its 24 hours (migration 0007).
   */
  usageRollups: UsageRollupsTable[];
  /** Increments of billing rollups, sorted by their primary key. */
  billingRollups: BillingRollupsTable[];
  /** Checkpoints to delete (every settlement naming one: deleting is idempotent). */
  checkpointIds: string[];
}

/** Usage sums of one group in one bucket. */
interface UsageSums {
  requests: number;
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  amount: Nano;
  cost: Nano;
}

/** The events of one (tenant, key, model) in this batch. */
interface UsageGroup {
  tenantId: string;
  /** `NULL_LABEL` for no key. */
  keyId: string;
  model: string;
  minutes: Map<number, UsageSums>;
  lastMinute: number;
  lastSums: UsageSums | undefined;
  lastLine: BillingRollupsTable | undefined;
}

/**
 * The first settlement of each request id in `batch`, by id: the one whose row a commit stores (a later one of the
 * same id is a duplicate and changes nothing).
 */
export function firstOfEachRequest(batch: readonly Settlement[]): Map<string, Settlement> {
  const first = new Map<string, Settlement>();
  for (const settlement of batch) {
    if (!first.has(settlement.log.requestId)) first.set(settlement.log.requestId, settlement);
  }
  return first;
}

/**
 * Aggregates the effects of `batch`, counting only what this commit inserted. `inserted` holds the request ids
 * whose `request_log` row the insert reported new; each counts once, through its first settlement in the batch: it
 * releases that settlement's reservation and, when it is rated, charges its amount and adds it to the rollups (an
 * unrated one with tokens, which no price covers, adds its tokens to the usage rollups at no amount). An id
 * stored already (a retry, a recovered checkpoint) or repeated inside the batch changes nothing. `inserted` is
 * consumed (emptied of the ids used): pass a set built for this call.
 */
export function settlementEffects(batch: readonly Settlement[], inserted: Set<string>): SettlementEffects {
  const charges = new Map<string, { tenantId: string; currency: string; amount: Nano }>();
  const releases = new Map<string, Nano>();
  const heldReleases = new Map<string, { tenantId: string; owner: string; amount: Nano }>();
  const groups = new Map<string, UsageGroup>();
  const billing = new Map<string, BillingRollupsTable>();
  const checkpointIds = new Set<string>();

  for (const settlement of batch) {
    if (settlement.checkpointRequestId !== undefined) checkpointIds.add(settlement.checkpointRequestId);
    if (!inserted.delete(settlement.log.requestId)) continue;
    const reservation = settlement.reservation;
    if (reservation !== undefined && reservation.amount !== 0n) {
      const { tenantId, owner, amount } = reservation;
      if (owner === undefined) releases.set(tenantId, (releases.get(tenantId) ?? 0n) + amount);
      else {
        const key = `${tenantId}\u0000${owner}`;
        const held = heldReleases.get(key);
        if (held === undefined) heldReleases.set(key, { tenantId, owner, amount });
        else held.amount += amount;
      }
    }
    const { log, rating } = settlement;
    if (rating === undefined) {
      // Unpriced (no price book, or a model it leaves out): no charge and no bill, but its tokens are still usage.
      if (isRatedLog(log) && log.promptTokens + log.completionTokens > 0) {
        addUsage(groupOf(groups, log), bucketStart('1m', log.createdAt), log, 0n, 0n);
      }
      continue;
    }

    const charge = charges.get(log.tenantId);
    if (charge === undefined) {
      charges.set(log.tenantId, { tenantId: log.tenantId, currency: rating.currency, amount: rating.amount });
    } else {
      charge.amount += rating.amount;
    }
    const cost = rating.cost ?? 0n;
    const group = groupOf(groups, log);
    addUsage(group, bucketStart('1m', log.createdAt), log, rating.amount, cost);
    addBilling(group, billing, log, rating, cost);
  }

  const usageRollups: UsageRollupsTable[] = [];
  for (const group of groups.values()) {
    const hours = new Map<number, UsageSums>();
    for (const [minute, sums] of group.minutes) {
      usageRollups.push(usageRow(group, '1m', minute, sums));
      foldInto(hours, bucketStart('1h', minute), sums);
    }
    for (const [hour, sums] of hours) usageRollups.push(usageRow(group, '1h', hour, sums));
  }
  usageRollups.sort(compareUsageRows);

  return {
    charges: [...charges.values()].sort((a, b) => compare(a.tenantId, b.tenantId)),
    releases: [...releases]
      .map(([tenantId, amount]) => ({ tenantId, amount }))
      .sort((a, b) => compare(a.tenantId, b.tenantId)),
    heldReleases: [...heldReleases.values()].sort(
      (a, b) => compare(a.tenantId, b.tenantId) || compare(a.owner, b.owner),
    ),
    usageRollups,
    billingRollups: [...billing.values()].sort(compareBillingRows),
    checkpointIds: [...checkpointIds].sort(compare),
  };
}

/** The usage group (tenant, key, model) of `log`, created on first use. */
function groupOf(groups: Map<string, UsageGroup>, log: RatedRequestLog): UsageGroup {
  const keyId = log.keyId ?? NULL_LABEL;
  const groupKey = `${log.tenantId}\u0000${keyId}\u0000${log.model}`;
  let group = groups.get(groupKey);
  if (group === undefined) {
    group = {
      tenantId: log.tenantId,
      keyId,
      model: log.model,
      minutes: new Map(),
      lastMinute: Number.NaN,
      lastSums: undefined,
      lastLine: undefined,
    };
    groups.set(groupKey, group);
  }
  return group;
}

function addUsage(group: UsageGroup, minute: number, log: RatedRequestLog, amount: Nano, cost: Nano): void {
  // A usage event's input tokens are the prompt's uncached part.
  const inputTokens = log.promptTokens - log.cachedTokens;
  let sums = group.lastMinute === minute ? group.lastSums : group.minutes.get(minute);
  if (sums === undefined) {
    sums = {
      requests: 1,
      inputTokens,
      cachedTokens: log.cachedTokens,
      outputTokens: log.completionTokens,
      amount,
      cost,
    };
    group.minutes.set(minute, sums);
  } else {
    sums.requests += 1;
    sums.inputTokens += inputTokens;
    sums.cachedTokens += log.cachedTokens;
    sums.outputTokens += log.completionTokens;
    sums.amount += amount;
    if (cost !== 0n) sums.cost += cost;
  }
  group.lastMinute = minute;
  group.lastSums = sums;
}

function addBilling(
  group: UsageGroup,
  billing: Map<string, BillingRollupsTable>,
  log: RatedRequestLog,
  rating: UsageRating,
  cost: Nano,
): void {
  const day = bucketStart('1d', log.createdAt);
  const outputCondition = rating.outputCondition ?? NULL_LABEL;
  const batchFlag = rating.batch ? 1 : 0;
  let line = group.lastLine;
  if (
    line === undefined ||
    line.day !== day ||
    line.currency !== rating.currency ||
    line.price_version !== rating.priceVersion ||
    line.tier !== rating.tier ||
    line.output_condition !== outputCondition ||
    line.batch !== batchFlag
  ) {
    // Tenant and model are the group's own: the key only needs the labels that vary inside a group.
    const key = `${log.tenantId}\u0000${log.model}\u0000${day}\u0000${rating.currency}\u0000${rating.priceVersion}\u0000${rating.tier}\u0000${outputCondition}\u0000${batchFlag}`;
    line = billing.get(key);
    if (line === undefined) {
      billing.set(key, {
        tenant_id: log.tenantId,
        day,
        model: log.model,
        currency: rating.currency,
        price_version: rating.priceVersion,
        tier: rating.tier,
        output_condition: outputCondition,
        batch: batchFlag,
        requests: 1,
        input_tokens: log.promptTokens - log.cachedTokens,
        cached_tokens: log.cachedTokens,
        output_tokens: log.completionTokens,
        input_list_amount: rating.inputListAmount,
        cached_list_amount: rating.cachedListAmount,
        output_list_amount: rating.outputListAmount,
        batch_discount: rating.batchDiscount,
        off_peak_discount: rating.offPeakDiscount,
        contract_discount: rating.contractDiscount,
        volume_discount: rating.volumeDiscount,
        amount: rating.amount,
        cost,
      });
      group.lastLine = billing.get(key);
      return;
    }
    group.lastLine = line;
  }
  line.requests += 1;
  line.input_tokens += log.promptTokens - log.cachedTokens;
  line.cached_tokens += log.cachedTokens;
  line.output_tokens += log.completionTokens;
  line.input_list_amount += rating.inputListAmount;
  // Each bigint addition allocates; most ratings carry no cached input, no discount or no cost.
  if (rating.cachedListAmount !== 0n) line.cached_list_amount += rating.cachedListAmount;
  line.output_list_amount += rating.outputListAmount;
  if (rating.batchDiscount !== 0n) line.batch_discount += rating.batchDiscount;
  if (rating.offPeakDiscount !== 0n) line.off_peak_discount += rating.offPeakDiscount;
  if (rating.contractDiscount !== 0n) line.contract_discount += rating.contractDiscount;
  if (rating.volumeDiscount !== 0n) line.volume_discount += rating.volumeDiscount;
  line.amount += rating.amount;
  if (cost !== 0n) line.cost += cost;
}

function foldInto(target: Map<number, UsageSums>, start: number, sums: UsageSums): void {
  const existing = target.get(start);
  if (existing === undefined) {
    target.set(start, { ...sums });
    return;
  }
  existing.requests += sums.requests;
  existing.inputTokens += sums.inputTokens;
  existing.cachedTokens += sums.cachedTokens;
  existing.outputTokens += sums.outputTokens;
  existing.amount += sums.amount;
  existing.cost += sums.cost;
}

function usageRow(group: UsageGroup, bucket: '1m' | '1h', start: number, sums: UsageSums): UsageRollupsTable {
  return {
    tenant_id: group.tenantId,
    bucket,
    bucket_start: start,
    key_id: group.keyId,
    model: group.model,
    requests: sums.requests,
    input_tokens: sums.inputTokens,
    cached_tokens: sums.cachedTokens,
    output_tokens: sums.outputTokens,
    amount: sums.amount,
    cost: sums.cost,
  };
}

function compareUsageRows(a: UsageRollupsTable, b: UsageRollupsTable): number {
  return (
    compare(a.tenant_id, b.tenant_id) ||
    compare(a.bucket, b.bucket) ||
    a.bucket_start - b.bucket_start ||
    compare(a.key_id, b.key_id) ||
    compare(a.model, b.model)
  );
}

function compareBillingRows(a: BillingRollupsTable, b: BillingRollupsTable): number {
  return (
    compare(a.tenant_id, b.tenant_id) ||
    a.day - b.day ||
    compare(a.model, b.model) ||
    compare(a.currency, b.currency) ||
    compare(a.price_version, b.price_version) ||
    compare(a.tier, b.tier) ||
    compare(a.output_condition, b.output_condition) ||
    a.batch - b.batch
  );
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
