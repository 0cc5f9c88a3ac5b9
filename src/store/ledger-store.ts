/**
 * The ledger port (issue 3): usage events, wallet transactions, wallets with atomic reservations, rollups for
 * usage and invoices, stream checkpoints, price-book versions, budget alert state. Implemented by the same Kysely
 * store as `Store` (SQLite and PostgreSQL) and checked by one conformance suite.
 *
 * Money here is `bigint` **nano-units** (1e-9 of the currency unit), stored as 64-bit integers. The pricing core
 * rates exactly in 1e-27 units; a usage event's amount is that exact value rounded half-even to the nano-unit once,
 * when the event is written (documented in `src/billing/README.md`). Everything downstream — balances, rollups,
 * invoices — adds these integers exactly. Rounding to the currency's minor unit happens only on invoice lines.
 */
import type { RequestLogRecord } from './store.js';

/** Money in nano-units (1e-9 of the currency unit). */
export type Nano = bigint;

/**
 * The largest amount the ledger holds, nano-units: its columns are 64-bit integers, so 9223372036.854775807 currency
 * units. Every stored amount and every balance stays within ±`MAX_NANO`, and so does a balance plus its credit limit
 * (what a postpaid tenant may spend is computed as that sum).
 */
export const MAX_NANO: Nano = 2n ** 63n - 1n;

/** Whether a wallet with `balance` and `creditLimit` stays within what the ledger holds (see `MAX_NANO`). */
export function walletInRange(balance: Nano, creditLimit: Nano): boolean {
  return balance >= -MAX_NANO && balance + creditLimit <= MAX_NANO;
}

/**
 * A wallet write (`addWalletTransaction`, `configureWallet`) refused because it would leave the wallet outside what
 * the ledger holds (`walletInRange`). Thrown inside the write's transaction, which is rolled back: nothing changed.
 */
export class BalanceOutOfRangeError extends RangeError {
  constructor(
    readonly tenantId: string,
    /** The balance the write would have left, nano-units. */
    readonly balance: Nano,
    /** The credit limit the write would have left, nano-units. */
    readonly creditLimit: Nano,
  ) {
    super(
      `The wallet of tenant ${tenantId} would have a balance of ${balance} and a credit limit of ${creditLimit} ` +
        `nano-units, beyond ±${MAX_NANO}`,
    );
    this.name = 'BalanceOutOfRangeError';
  }
}

/** One rated request: the append-only record billing is computed from. Idempotent by `requestId`. */
export interface UsageEventRecord {
  requestId: string;
  tenantId: string;
  keyId: string | null;
  model: string;
  deployment: string | null;
  /** Batch line (rated with the batch modifier). */
  batch: boolean;
  /** Epoch ms the request was received: it chose the price version and off-peak window. */
  receivedAt: number;
  currency: string;
  priceVersion: string;
  /** Tier label, e.g. `0-32768`. */
  tier: string;
  /** Output condition label when one applied, else null. */
  outputCondition: string | null;
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  reasoningTokens: number;
  /** Usage counted by the gateway (stream cut, no upstream usage, crash checkpoint). */
  estimated: boolean;
  /** Amount before modifiers, per token class. */
  inputListAmount: Nano;
  cachedListAmount: Nano;
  outputListAmount: Nano;
  /** Modifier effects (≤ 0). */
  batchDiscount: Nano;
  offPeakDiscount: Nano;
  contractDiscount: Nano;
  volumeDiscount: Nano;
  /** Final charged amount = list amounts + discounts, ≥ 0. */
  amount: Nano;
  /** The operator's cost of serving it, when the deployment has a per-token cost. */
  cost: Nano | null;
  /** The modifiers applied, as JSON (audit detail). */
  detail: string;
}

/**
 * What rating a request adds to its request-log record: the batch flag, the price labels and the amounts. A usage
 * event is a request-log record and its rating together: the event's identity, time and tokens are the log's
 * (`input_tokens` = prompt − cached, `received_at` = `created_at`), and the store keeps both in one row.
 */
export type UsageRating = Pick<
  UsageEventRecord,
  | 'batch'
  | 'currency'
  | 'priceVersion'
  | 'tier'
  | 'outputCondition'
  | 'inputListAmount'
  | 'cachedListAmount'
  | 'outputListAmount'
  | 'batchDiscount'
  | 'offPeakDiscount'
  | 'contractDiscount'
  | 'volumeDiscount'
  | 'amount'
  | 'cost'
  | 'detail'
>;

/** Kinds of wallet transaction (usage charges are the usage events themselves). */
export type WalletTransactionKind = 'topup' | 'adjustment' | 'refund';

/** A credit or debit on a tenant's wallet other than usage. */
export interface WalletTransactionRecord {
  id: string;
  tenantId: string;
  kind: WalletTransactionKind;
  /** Signed: top-ups and refunds positive; adjustments either sign. */
  amount: Nano;
  currency: string;
  /** Client-supplied `Idempotency-Key`, unique per tenant. */
  idempotencyKey: string | null;
  note: string | null;
  createdAt: number;
}

/** New transaction (id and time are assigned by the store). */
export type NewWalletTransaction = Omit<WalletTransactionRecord, 'id' | 'createdAt'> & { createdAt?: number };

/** How a tenant pays. */
export type BillingMode = 'prepaid' | 'postpaid';

/** A tenant's wallet. `balance` = Σ wallet transactions − Σ usage events, maintained in the same transactions. */
export interface WalletRecord {
  tenantId: string;
  mode: BillingMode;
  currency: string;
  balance: Nano;
  /** Postpaid: how far below zero the balance may go. Prepaid: 0. */
  creditLimit: Nano;
  /** Sum of outstanding reservations. */
  reserved: Nano;
  updatedAt: number;
}

/** A request-log record that names its tenant and model: the only kind a rating can belong to. */
export type RatedRequestLog = RequestLogRecord & { tenantId: string; model: string };

/** Whether `log` names its tenant and model, as a rated request's log does. */
export function isRatedLog(log: RequestLogRecord): log is RatedRequestLog {
  return log.tenantId !== null && log.model !== null;
}

/** A usage event's rating (`UsageRating`): the fields it adds to its request-log record. */
export function ratingOf(event: UsageEventRecord): UsageRating {
  return {
    batch: event.batch,
    currency: event.currency,
    priceVersion: event.priceVersion,
    tier: event.tier,
    outputCondition: event.outputCondition,
    inputListAmount: event.inputListAmount,
    cachedListAmount: event.cachedListAmount,
    outputListAmount: event.outputListAmount,
    batchDiscount: event.batchDiscount,
    offPeakDiscount: event.offPeakDiscount,
    contractDiscount: event.contractDiscount,
    volumeDiscount: event.volumeDiscount,
    amount: event.amount,
    cost: event.cost,
    detail: event.detail,
  };
}

/** What one finished request writes, in one transaction with the others of its batch. */
export type Settlement = UnratedSettlement | RatedSettlement;

/** A request that consumed nothing billable (an error before the upstream, a listing) or that no price applies to. */
export interface UnratedSettlement extends SettlementRelease {
  log: RequestLogRecord;
  rating?: undefined;
}

/** A priced request: its log record and its rating together are its usage event. */
export interface RatedSettlement extends SettlementRelease {
  log: RatedRequestLog;
  rating: UsageRating;
}

/** What a settlement ends besides its request. */
interface SettlementRelease {
  /** The reservation taken at admission, released here (from `owner`'s hold when it has one: see `reserve`). */
  reservation?: { tenantId: string; amount: Nano; owner?: string };
  /** Checkpoint to delete (the stream finished). */
  checkpointRequestId?: string;
}

/** An in-flight stream's delivered usage, so a crash bills at least this much. */
export interface StreamCheckpoint {
  requestId: string;
  /** The usage event that would be written if the process died now (rated at the delivered tokens). */
  event: UsageEventRecord;
  /** The reservation to release when the checkpoint is recovered. */
  reservation: Nano;
  /** The owner whose hold `reservation` is in (see `LedgerStore.reserve`); undefined: taken without one. */
  reservationOwner?: string;
  updatedAt: number;
}

/** Rollup granularity. */
export type RollupBucket = '1m' | '1h' | '1d';

/** One usage rollup row. */
export interface UsageRollupRow {
  bucket: RollupBucket;
  /** Epoch ms of the bucket start (UTC). */
  bucketStart: number;
  tenantId: string;
  keyId: string | null;
  model: string;
  requests: number;
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  amount: Nano;
  cost: Nano;
}

/** Query over usage rollups. */
export interface UsageRollupQuery {
  bucket: RollupBucket;
  /** Inclusive, epoch ms. */
  start: number;
  /** Exclusive, epoch ms. */
  end: number;
  /** Omit for all tenants (admin). */
  tenantId?: string;
}

/**
 * One billing rollup row: per UTC day × tenant × model × price version × tier × output condition × batch, the token
 * quantities and amounts by class and by modifier — everything an invoice line needs, without scanning events.
 */
export interface BillingRollupRow {
  day: number;
  tenantId: string;
  model: string;
  currency: string;
  priceVersion: string;
  tier: string;
  outputCondition: string | null;
  batch: boolean;
  requests: number;
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  inputListAmount: Nano;
  cachedListAmount: Nano;
  outputListAmount: Nano;
  batchDiscount: Nano;
  offPeakDiscount: Nano;
  contractDiscount: Nano;
  volumeDiscount: Nano;
  amount: Nano;
  cost: Nano;
}

/** A stored price-book version (the admin API's `POST /admin/v1/prices`). */
export interface PriceVersionRecord {
  id: string;
  effectiveFrom: number;
  /** The version as posted (JSON of the price-book version schema). */
  document: string;
  createdAt: number;
}

/** Budget settings of a tenant or a key. */
export interface BudgetRecord {
  /** `tenant` or `key`. */
  scope: 'tenant' | 'key';
  /** Tenant id or key id. */
  scopeId: string;
  tenantId: string;
  /** Monthly budget, nano-units. */
  monthlyLimit: Nano;
  /** `hard`: block requests once reached; `soft`: alert only. */
  enforcement: 'hard' | 'soft';
  /** Alert thresholds as fractions in percent, e.g. [50, 80, 100]. */
  thresholds: number[];
  /** Webhook URL for alerts, if any. */
  webhookUrl: string | null;
  updatedAt: number;
}

/** The ledger operations. */
export interface LedgerStore {
  getWallet(tenantId: string): Promise<WalletRecord | undefined>;
  /**
   * Creates or updates mode, currency and credit limit (balance and reservations are kept). Throws
   * `BalanceOutOfRangeError`, changing nothing, when the balance plus the new credit limit would pass `MAX_NANO`:
   * checked in the write's transaction against the balance it keeps, whatever writes race it.
   */
  configureWallet(
    tenantId: string,
    settings: { mode: BillingMode; currency: string; creditLimit: Nano },
  ): Promise<WalletRecord>;
  /**
   * Appends a transaction and moves the balance, in one transaction. With an idempotency key already used by this
   * tenant, nothing changes and the first transaction is returned with `created: false` (even when the transaction
   * would no longer fit). Throws `BalanceOutOfRangeError`, changing nothing, when the new balance would leave the
   * ledger's range (`walletInRange`): checked in the same transaction as the write, so concurrent transactions cannot
   * pass it together.
   */
  addWalletTransaction(
    transaction: NewWalletTransaction,
  ): Promise<{ record: WalletTransactionRecord; created: boolean }>;
  listWalletTransactions(
    tenantId: string,
    range?: { start?: number; end?: number },
  ): Promise<WalletTransactionRecord[]>;
  /**
   * Atomically reserves `amount` if `balance + creditLimit − reserved ≥ amount`; returns false and changes nothing
   * otherwise. A tenant without a wallet has nothing to spend (prepaid, zero).
   *
   * With `owner` (a process sharing the store with others: see `heartbeatReservationOwner`) the amount is also
   * added to that owner's hold on the tenant, in the same step, so it can be released should the owner die.
   */
  reserve(tenantId: string, amount: Nano, owner?: string): Promise<boolean>;
  /**
   * Returns an unused reservation (a request that failed before any usage). With `owner`, from that owner's hold:
   * when the hold no longer has it (the owner was swept as dead), nothing is released, since the sweep did.
   */
  release(tenantId: string, amount: Nano, owner?: string): Promise<void>;
  /** Records that `owner` is alive at `now` (epoch ms); registers it on the first call. */
  heartbeatReservationOwner(owner: string, now: number): Promise<void>;
  /**
   * Records that a registered `owner` is alive at `now`; false, changing nothing, when it has no row any more (it was
   * swept as dead, and its holds released). Atomic with sweeps: an owner renewed before a sweep keeps its holds.
   */
  renewReservationOwner(owner: string, now: number): Promise<boolean>;
  /**
   * Releases every hold of the owners whose last heartbeat is before `staleBefore` (epoch ms), and of those in
   * `exited` whatever their heartbeat (processes known to be gone), and forgets them, in one transaction. Returns how
   * many owners were swept and the total released.
   */
  sweepReservationOwners(staleBefore: number, exited?: readonly string[]): Promise<{ owners: number; released: Nano }>;
  /** The registered reservation owners; with `heartbeatSince` (epoch ms), those that beat since then. */
  listReservationOwners(heartbeatSince?: number): Promise<string[]>;
  /**
   * Commits a batch in one transaction: request-log rows with their ratings (a request id already present is
   * skipped, so a retry is billed once), usage and billing rollups, wallet balances, reservation releases,
   * checkpoint deletions.
   *
   * `encoded`, when the caller has it, is each settlement of `batch` as its `settlementToJson` line, in order (the
   * settlement journal wrote them, the spool read them): a store that commits on another thread sends these lines
   * instead of a structured clone of the objects, which cost the serving thread ~4 µs a settlement against ~0.4.
   */
  settle(batch: readonly Settlement[], encoded?: readonly string[]): Promise<void>;
  /** Creates or replaces a stream's checkpoint. */
  saveCheckpoints(checkpoints: readonly StreamCheckpoint[]): Promise<void>;
  listCheckpoints(): Promise<StreamCheckpoint[]>;
  /**
   * Sets every wallet's `reserved` to zero and forgets every owner and hold (embedded mode at start: no request of
   * a previous process is live).
   */
  resetReservations(): Promise<void>;

  listUsageEvents(query: {
    tenantId?: string;
    start: number;
    end: number;
    limit?: number;
  }): Promise<UsageEventRecord[]>;
  /** Σ amount of usage events in [start, end) (exact; scans events: for tests and reconciliation, not the API). */
  sumUsageEvents(query: { tenantId?: string; start: number; end: number }): Promise<{ amount: Nano; count: number }>;
  queryUsageRollups(query: UsageRollupQuery): Promise<UsageRollupRow[]>;
  queryBillingRollups(query: { tenantId?: string; start: number; end: number }): Promise<BillingRollupRow[]>;

  insertPriceVersion(version: Omit<PriceVersionRecord, 'createdAt'>): Promise<PriceVersionRecord>;
  listPriceVersions(): Promise<PriceVersionRecord[]>;

  putBudget(budget: BudgetRecord): Promise<void>;
  /** Removes the budget of `scope`/`scopeId`; true when there was one. */
  deleteBudget(scope: BudgetRecord['scope'], scopeId: string): Promise<boolean>;
  listBudgets(tenantId?: string): Promise<BudgetRecord[]>;
  /** Marks an alert as sent; true only for the first caller (alerts are delivered once per period and threshold). */
  claimAlert(alert: { scope: 'tenant' | 'key'; scopeId: string; period: string; threshold: number }): Promise<boolean>;
}
