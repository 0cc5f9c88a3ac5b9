/**
 * Billing on the request path: quote the worst case before a request runs, reserve it against the tenant's
 * wallet (atomically in the store: N concurrent requests against a balance that covers k let through at most k),
 * rate the real usage after it ends and hand the settlement to the batched writer, which commits the usage event,
 * the rollups, the balance and the reservation release in one transaction.
 *
 * Volume tiers and budgets need the tenant's month-to-date tokens and spend: kept in memory per process, loaded
 * from the billing rollups the first time a tenant is seen in a month, and advanced as requests are rated. In cluster
 * mode the tokens for volume tiers come from one shared counter (`VolumePositionStore`), hard budgets are held in
 * one shared store (`BudgetHolds`), and the spend that budget alerts compare comes from shared counters too
 * (`sharedMonthSpend`), so every process sees what the others admitted and spent.
 */
import { type Clock, RealClock } from '../clock/clock.js';
import {
  GatewayError,
  InsufficientQuotaError,
  InvalidRequestError,
  UnavailableError,
} from '../errors/gateway-error.js';
import type { Logger } from '../observability/logger.js';
import { CURRENCIES, type Currency } from '../pricing/money.js';
import {
  normalizePriceBook,
  normalizePriceVersion,
  type PriceBook,
  type PriceBookConfig,
  PriceBookError,
  type PriceVersion,
  type PriceVersionConfig,
  priceVersionAt,
} from '../pricing/price-book.js';
import { costOfUsage, PricingError } from '../pricing/rate-usage.js';
import type {
  BillingMode,
  BudgetRecord,
  LedgerStore,
  Nano,
  UsageEventRecord,
  UsageRating,
  WalletRecord,
} from '../store/ledger-store.js';
import { ConfigSubject, type InvalidationBus } from '../tenancy/invalidation-bus.js';
import type { Usage } from '../upstreams/usage.js';
import { type ApplicableBudgets, type BudgetsByScope, indexBudgets } from './alerts/alert-service.js';
import type { SpendChange } from './budget-alert-sink.js';
import type { BudgetHoldScope, BudgetHolds } from './budget-holds.js';
import { quoteNano, type RatedAmounts, rateAmounts, ratingDetail } from './event-rating.js';
import { nanoHalfEven } from './nano.js';
import type { ReservationLeases } from './reservation-leases.js';
import type { VolumePositionStore } from './volume-position.js';

/** Options of `BillingService`. */
export interface BillingServiceOptions {
  /** The configured price book; without one (and without stored versions) billing is off. */
  priceBook: PriceBookConfig | undefined;
  logger: Logger;
  clock?: Clock;
  /** Wallet settings of new tenants. Default prepaid, no credit. */
  newTenants?: { mode: BillingMode; creditLimit: Nano };
  /**
   * Shared month counters (cluster mode: Redis): each tenant's tokens for volume tiers, so every process rates them
   * at their one place in the month, and each budget's spend for budget alerts (`sharedMonthSpend`, counters named
   * `spend:…`). Default: each process counts its own, loaded from the rollups, which is the whole month only when
   * there is one process.
   */
  volumePositions?: VolumePositionStore;
  /**
   * Shared holds and spend of hard budgets (cluster mode: Redis), so a budget holds across processes. Default: each
   * process checks budgets against its own counts. If the shared store fails, admission falls back to them.
   */
  budgetHolds?: BudgetHolds;
  /** Counts admissions that fell back to this process's budget counts because `budgetHolds` failed. */
  onBudgetHoldFallback?: () => void;
  /** Counts requests refused with 503 `billing_store_unavailable` (the store failed their wallet reservation). */
  onStoreUnavailable?: () => void;
  /**
   * Where price-book and budget changes are announced to the other gateway processes (cluster mode), and heard from
   * them. Default: this process only.
   */
  bus?: InvalidationBus;
}

/** What admission reserved for one request. */
export interface Reservation {
  tenantId: string;
  keyId: string;
  amount: Nano;
  /** `YYYY-MM` whose budgets hold `amount` until the request is settled. */
  month: string;
  /** The owner whose hold `amount` is in on the wallet (see `BillingService.reservationOwner`). */
  owner?: string;
  /** With leases, once settled: what its settlement releases from the wallet (`settledReservation`). */
  settledRelease?: Nano;
  /** Counted among its owner's requests in flight (`BillingService.reservationsInFlight`) until settled or released. */
  inFlight?: boolean;
  /** The hard budgets `amount` is held on in the shared store (cluster mode), to settle there. */
  sharedBudgets?: readonly Pick<BudgetHoldScope, 'scope' | 'scopeId' | 'version'>[];
}

/** A rated request as its usage event (a stream checkpoint stores it so). */
export function usageEventOf(request: RateRequest, rating: UsageRating): UsageEventRecord {
  const usage = request.usage;
  // Off the request path (checkpoints, once a second): a spread is fine here.
  return {
    ...rating,
    requestId: request.requestId,
    tenantId: request.tenantId,
    keyId: request.keyId,
    model: request.model,
    deployment: request.deployment,
    receivedAt: request.receivedAt,
    inputTokens: usage.input.total - usage.input.cached,
    cachedTokens: usage.input.cached,
    outputTokens: usage.output.total,
    reasoningTokens: usage.output.reasoning,
    estimated: usage.estimated,
  };
}

/** What `rate` needs about one finished request. */
export interface RateRequest {
  requestId: string;
  tenantId: string;
  keyId: string | null;
  model: string;
  deployment: string | null;
  receivedAt: number;
  batch: boolean;
  usage: Usage;
}

interface MonthCounter {
  month: string;
  tokens: bigint;
  spend: Nano;
  keySpend: Map<string, Nano>;
  /** Reserved by requests admitted and not yet settled: counted against budgets like spend. */
  held: Nano;
  keyHeld: Map<string, Nano>;
}

/** After the shared budget holds fail, how long admission uses this process's counts before asking them again, ms. */
const BUDGET_HOLDS_RETRY_MS = 1000;

/** Pricing, wallets and budgets for the request path. */
export class BillingService {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly configured: PriceBookConfig | undefined;
  private book: PriceBook | undefined;
  private readonly months = new Map<string, MonthCounter>();
  private readonly loading = new Map<string, Promise<MonthCounter>>();
  private budgets: BudgetsByScope = indexBudgets([]);
  private readonly warnedUnpriced = new Set<string>();

  constructor(
    private readonly ledger: LedgerStore,
    options: BillingServiceOptions,
  ) {
    this.clock = options.clock ?? new RealClock();
    this.logger = options.logger;
    this.configured = options.priceBook;
    this.newTenants = options.newTenants ?? { mode: 'prepaid', creditLimit: 0n };
    this.bus = options.bus;
    this.volumePositions = options.volumePositions;
    this.budgetHolds = options.budgetHolds;
    this.onBudgetHoldFallback = options.onBudgetHoldFallback;
    this.onStoreUnavailable = options.onStoreUnavailable;
    this.unsubscribe = options.bus?.subscribe((subject) => {
      if (subject === ConfigSubject.prices) this.reloadInBackground('prices', () => this.reloadPrices());
      else if (subject === ConfigSubject.budgets) this.reloadInBackground('budgets', () => this.reloadBudgets());
      else if (subject === ConfigSubject.all) {
        this.reloadInBackground('prices', () => this.reloadPrices());
        this.reloadInBackground('budgets', () => this.reloadBudgets());
      }
    });
  }

  private readonly bus: InvalidationBus | undefined;
  private readonly volumePositions: VolumePositionStore | undefined;
  private readonly budgetHolds: BudgetHolds | undefined;
  private readonly onBudgetHoldFallback: (() => void) | undefined;
  private readonly onStoreUnavailable: (() => void) | undefined;
  /** `performance.now()` until which the shared budget holds are not asked (they just failed). */
  private budgetHoldsDownUntil = Number.NEGATIVE_INFINITY;
  private readonly unsubscribe: (() => void) | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;

  /**
   * Reloads the price book and budgets from the store every `intervalMs`: the safety net under the bus (a lost
   * pub/sub message, a change written to the store by another tool). Stop it with `stop()`.
   */
  startRefresh(intervalMs: number): void {
    this.refreshTimer ??= setInterval(() => {
      this.reloadInBackground('prices', () => this.reloadPrices());
      this.reloadInBackground('budgets', () => this.reloadBudgets());
    }, intervalMs);
    this.refreshTimer.unref();
  }

  /** Stops the refresh timer and stops listening to the bus. */
  stop(): void {
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
    this.unsubscribe?.();
  }

  /** Reloads budgets after an admin change here, and tells the other processes to do the same. */
  async budgetsChanged(): Promise<void> {
    await this.reloadBudgets();
    await this.announce(ConfigSubject.budgets);
  }

  private async announce(subject: string): Promise<void> {
    try {
      await this.bus?.publish(subject);
    } catch (error: unknown) {
      // The change is stored; other processes pick it up at their next refresh.
      this.logger.warn({ err: error, subject }, 'could not announce a configuration change');
    }
  }

  private reloadInBackground(what: string, reload: () => Promise<void>): void {
    reload().catch((error: unknown) =>
      this.logger.error({ err: error, what }, 'reloading billing configuration failed'),
    );
  }

  private readonly newTenants: { mode: BillingMode; creditLimit: Nano };

  /** Opens the wallet of a new tenant with the configured defaults. */
  async openWallet(tenantId: string): Promise<WalletRecord> {
    return this.ledger.configureWallet(tenantId, {
      mode: this.newTenants.mode,
      currency: this.currency,
      creditLimit: this.newTenants.mode === 'postpaid' ? this.newTenants.creditLimit : 0n,
    });
  }

  /** Loads stored price versions and budgets. Call once before serving. */
  async init(): Promise<void> {
    await this.reloadPrices();
    await this.reloadBudgets();
  }

  /** Whether requests are priced and charged. */
  get enabled(): boolean {
    return this.book !== undefined;
  }

  /** The price book's currency (wallets and invoices use it). Default CNY when billing is off. */
  get currency(): Currency {
    return this.book?.currency ?? this.configured?.currency ?? 'CNY';
  }

  /** Digits of the currency's minor unit. */
  get minorUnits(): number {
    return CURRENCIES[this.currency].minorUnits;
  }

  /** The normalized price book, if any. */
  get priceBook(): PriceBook | undefined {
    return this.book;
  }

  /**
   * The price book's versions, oldest first, split at this service's clock: those that have taken effect (the last of
   * them prices requests now; the earlier ones priced requests received before it) and those scheduled for later.
   */
  priceVersionsByStatus(): { inForce: PriceVersion[]; scheduled: PriceVersion[] } {
    const now = this.clock.now();
    const versions = this.book?.versions ?? [];
    return {
      inForce: versions.filter((version) => version.effectiveFromMs <= now),
      scheduled: versions.filter((version) => version.effectiveFromMs > now),
    };
  }

  /** Rebuilds the book from the configuration plus the versions posted through the admin API. */
  async reloadPrices(): Promise<void> {
    const stored = await this.ledger.listPriceVersions();
    if (this.configured === undefined && stored.length === 0) {
      this.book = undefined;
      return;
    }
    const storedDocuments = stored.map((record) => JSON.parse(record.document) as PriceVersionConfig);
    const versions = [...(this.configured?.versions ?? []), ...storedDocuments];
    this.book = normalizePriceBook({ currency: this.currency, versions }, { path: 'pricing' });
  }

  /**
   * Adds a price version (admin API). It must take effect in the future, so no request already received is ever
   * rated differently: repricing never rewrites history.
   */
  async addPriceVersion(version: PriceVersionConfig): Promise<void> {
    const effectiveFrom = Date.parse(version.effective_from);
    if (!Number.isNaN(effectiveFrom) && effectiveFrom <= this.clock.now()) {
      throw new InvalidRequestError('effective_from must be in the future: repricing never rewrites history.', {
        param: 'effective_from',
        code: 'invalid_value',
      });
    }
    const id = version.id ?? version.effective_from;
    try {
      normalizePriceVersion(version, this.book);
    } catch (error: unknown) {
      if (error instanceof PriceBookError) {
        const problems = error.issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ');
        throw new InvalidRequestError(`Invalid price version: ${problems}`, {
          param: error.issues[0]?.path ?? null,
          code: 'invalid_price_version',
        });
      }
      throw error;
    }
    await this.ledger.insertPriceVersion({ id, effectiveFrom, document: JSON.stringify({ ...version, id }) });
    await this.reloadPrices();
    await this.announce(ConfigSubject.prices);
  }

  /**
   * Called when a request's reservation was taken from the wallet by the store itself, not from a lease (a metric).
   */
  onRequestReserved: (() => void) | undefined;

  /** Called with the budgets after every reload (budget alerting keeps its own cache of them). */
  onBudgetsReloaded: ((budgets: readonly BudgetRecord[]) => void) | undefined;

  /**
   * Resolves once every request that ended before the call is settled in the store. When responses do not wait for
   * their commit (a settlement journal), a request's reservation is released only at its commit, after its
   * response: a wallet refusal is then tried once more after this, so a client that sends its next request as soon
   * as the last one answered is not refused for a reservation already spent. With several workers it also has
   * every worker give back the wallet funds it leased and does not use (`ReservationLeases.returnUnused`). Default:
   * refusals are final.
   */
  settled: (() => Promise<void>) | undefined;

  /**
   * The owner id this process reserves under when it shares the store with other processes (cluster mode, workers
   * on one SQLite file): each reservation is also added to the owner's hold, so the holds of a process that dies can
   * be released (`ReservationOwnerKeeper`). Undefined: reservations have no owner (a gateway alone on its store).
   * Read at each reservation: the keeper replaces it should this process be swept as dead.
   */
  reservationOwner: string | undefined;
  /**
   * Called when the store fails a call on this process's reservation holds (a reservation or a release without
   * leases): its owner's hold may then differ from what was counted. See `ReservationOwnerKeeper.retire`.
   */
  onReservationStoreFailure: (() => void) | undefined;
  /** Requests in flight whose reservations are in each owner's hold. */
  private readonly inFlightByOwner = new Map<string, number>();
  /** When `storeUnavailable` last logged, ms. */
  private storeFailureLoggedAt = 0;

  /**
   * Workers on one SQLite file: reservations are taken from this process's leases of the wallets instead of one
   * wallet write each (see `ReservationLeases`). Undefined: every reservation is written to the store.
   */
  leases: ReservationLeases | undefined;

  /** Reloads budgets after an admin change. */
  async reloadBudgets(): Promise<void> {
    const budgets = await this.ledger.listBudgets();
    this.budgets = indexBudgets(budgets);
    this.onBudgetsReloaded?.(budgets);
  }

  /**
   * The most the request can cost, in nano-units rounded up; 0 when billing is off or the model has no price
   * (served unmetered, with one warning per model).
   */
  quote(input: {
    tenantId: string;
    model: string;
    receivedAt: number;
    promptTokens: number;
    maxOutputTokens: number;
    batch: boolean;
  }): Nano {
    const book = this.book;
    if (book === undefined) return 0n;
    try {
      // Fields by name: spreading `input` into a new object cost a quarter of a µs a request.
      return quoteNano({
        priceBook: book,
        tenantId: input.tenantId,
        model: input.model,
        receivedAt: input.receivedAt,
        promptTokens: input.promptTokens,
        maxOutputTokens: input.maxOutputTokens,
        batch: input.batch,
      });
    } catch (error: unknown) {
      if (error instanceof PricingError) return this.unpriced(error, input.model);
      throw error;
    }
  }

  private unpriced(error: PricingError, model: string): Nano {
    if (error.code === 'prompt_too_long') {
      throw new InvalidRequestError(error.message, { code: 'context_length_exceeded', param: 'messages' });
    }
    if (!this.warnedUnpriced.has(model)) {
      this.warnedUnpriced.add(model);
      this.logger.warn({ model, code: error.code }, 'model has no price: served without charge');
    }
    return 0n;
  }

  /**
   * Admission: checks hard budgets and reserves `amount` on the wallet. Throws `InsufficientQuotaError` (429
   * `insufficient_quota`) and reserves nothing when either refuses.
   */
  async reserve(tenantId: string, keyId: string, amount: Nano, receivedAt: number): Promise<Reservation | undefined> {
    if (this.book === undefined) return undefined;
    // The counter is loaded once per tenant and month: do not wait a microtask for it on every request.
    const counter =
      this.loadedMonthCounter(tenantId, receivedAt) ??
      (await this.monthCounter(tenantId, receivedAt).catch((error: unknown) => this.storeUnavailable(error)));
    const reservation: Reservation = { tenantId, keyId, amount, month: counter.month };
    const hardScopes = amount === 0n ? undefined : this.sharedHardBudgets(reservation);
    const shared = hardScopes === undefined ? undefined : await this.holdShared(reservation, hardScopes);
    if (shared === undefined) {
      // Budgets count what admitted requests may still spend: without the hold, 200 concurrent requests against a
      // budget that covers 20 would all see the same settled spend and all pass. Check and hold in one synchronous
      // step (no await between), so the check is exact within this process.
      this.checkBudget(this.budgets.tenant.get(tenantId), counter.spend + counter.held, amount);
      const keyBudget = this.budgets.key.get(keyId);
      if (keyBudget !== undefined) {
        const keySpend = (counter.keySpend.get(keyId) ?? 0n) + (counter.keyHeld.get(keyId) ?? 0n);
        this.checkBudget(keyBudget, keySpend, amount);
      }
    } else reservation.sharedBudgets = shared;
    if (amount === 0n) return reservation;
    this.hold(counter, keyId, amount);
    let reserved: boolean;
    try {
      reserved = (await this.reserveOnWallet(reservation)) || (await this.reserveOnceSettled(reservation));
    } catch (error: unknown) {
      this.releaseBudgetHold(reservation, 0n);
      // With leases, they reported it themselves.
      if (this.leases === undefined && this.reservationOwner !== undefined) this.onReservationStoreFailure?.();
      this.storeUnavailable(error);
    }
    if (!reserved) {
      this.releaseBudgetHold(reservation, 0n);
      throw new InsufficientQuotaError(
        'You exceeded your current quota: the wallet cannot cover this request. Top up or lower max_tokens.',
      );
    }
    return reservation;
  }

  /**
   * A store that failed while a request was being admitted: the wallet could not be checked, so the request is
   * refused with a retryable 503 (never admitted unreserved, never answered as a wallet that cannot pay). Logged at
   * most once a second.
   */
  private storeUnavailable(error: unknown): never {
    if (error instanceof GatewayError) throw error;
    this.onStoreUnavailable?.();
    const now = Date.now();
    if (now - this.storeFailureLoggedAt >= 1000) {
      this.storeFailureLoggedAt = now;
      this.logger.warn(
        { err: error },
        'the store failed while reserving a wallet amount: requests are refused with 503',
      );
    }
    throw new UnavailableError(
      'The billing store is unavailable, so this request could not be reserved. Retry later.',
      'billing_store_unavailable',
      { cause: error },
    );
  }

  /**
   * A refused reservation's second try, after the requests that ended before it are settled and, with leases, the
   * other workers gave back what they leased and do not use (see `settled`).
   */
  private async reserveOnceSettled(reservation: Reservation): Promise<boolean> {
    if (this.settled === undefined) return false;
    await this.settled();
    return this.reserveOnWallet(reservation);
  }

  /** Takes the reservation's amount from the wallet (or this process's lease of it); sets its owner. */
  private async reserveOnWallet(reservation: Reservation): Promise<boolean> {
    const { tenantId, amount } = reservation;
    if (this.leases !== undefined) {
      const leasedUnder = await this.leases.reserve(tenantId, amount);
      if (leasedUnder === undefined) return false;
      reservation.owner = leasedUnder;
      this.startInFlight(reservation, leasedUnder);
      return true;
    }
    const owner = this.reservationOwner;
    if (!(await this.ledger.reserve(tenantId, amount, owner))) return false;
    this.onRequestReserved?.();
    if (owner !== undefined) {
      reservation.owner = owner;
      this.startInFlight(reservation, owner);
    }
    return true;
  }

  /**
   * Requests in flight whose reservations are in `owner`'s hold: a retired owner is kept alive while there are any,
   * so a sweep cannot release what they still hold (`ReservationOwnerKeeper`).
   */
  reservationsInFlight(owner: string): number {
    return this.inFlightByOwner.get(owner) ?? 0;
  }

  private startInFlight(reservation: Reservation, owner: string): void {
    reservation.inFlight = true;
    this.inFlightByOwner.set(owner, (this.inFlightByOwner.get(owner) ?? 0) + 1);
  }

  /** The reservation's request ended (settled or released); counted once, however often it is ended. */
  private endInFlight(reservation: Reservation): void {
    if (reservation.inFlight !== true || reservation.owner === undefined) return;
    reservation.inFlight = false;
    const left = (this.inFlightByOwner.get(reservation.owner) ?? 1) - 1;
    if (left > 0) this.inFlightByOwner.set(reservation.owner, left);
    else this.inFlightByOwner.delete(reservation.owner);
  }

  /**
   * Ends a reservation's wallet part when its request is settled, having spent `spent`; returns the amount its
   * settlement releases from the wallet's `reserved` (and its owner's hold): all of it, or with leases what it spent
   * (the rest stays leased to this process: see `ReservationLeases`).
   */
  settledReservation(reservation: Reservation, spent: Nano): Nano {
    this.endInFlight(reservation);
    return this.leases === undefined ? reservation.amount : this.leases.settled(reservation, spent);
  }

  /**
   * The request's hard budgets to hold in the shared store (cluster mode), checked synchronously: without a shared
   * store or a hard budget (nearly every request) admission does not wait on anything for them. Undefined when
   * there is none.
   */
  private sharedHardBudgets(reservation: Reservation): BudgetHoldScope[] | undefined {
    if (this.budgetHolds === undefined) return undefined;
    const { tenantId, keyId, month } = reservation;
    let seed: ReturnType<BillingService['budgetSpendSeed']> | undefined;
    const scopes: BudgetHoldScope[] = [];
    for (const [scope, scopeId] of [
      ['tenant', tenantId],
      ['key', keyId],
    ] as const) {
      const budget = this.budgets[scope].get(scopeId);
      if (budget !== undefined && budget.enforcement === 'hard') {
        seed ??= this.budgetSpendSeed(tenantId, month);
        const seedOf = seed;
        scopes.push({
          scope,
          scopeId,
          version: budget.updatedAt,
          limit: budget.monthlyLimit,
          seed: () => seedOf(budget),
        });
      }
    }
    return scopes.length === 0 ? undefined : scopes;
  }

  /**
   * Seeds of shared budget counts for one tenant and month: the budget's settled spend from the ledger's rollups,
   * read at most once however many of the tenant's budgets need it.
   */
  private budgetSpendSeed(
    tenantId: string,
    month: string,
  ): (budget: Pick<BudgetRecord, 'scope' | 'scopeId'>) => Promise<Nano> {
    let settled: ReturnType<BillingService['ledgerMonth']> | undefined;
    return async (budget) => {
      settled ??= this.ledgerMonth(tenantId, month);
      const ledger = await settled;
      return budget.scope === 'tenant' ? ledger.spend : (ledger.keySpend.get(budget.scopeId) ?? 0n);
    };
  }

  /**
   * Holds the reservation on `scopes` (its hard budgets) in the shared store. Returns them, or undefined when the
   * store failed: then this process's counts decide. Throws `InsufficientQuotaError` when a budget refuses.
   */
  private async holdShared(
    reservation: Reservation,
    scopes: readonly BudgetHoldScope[],
  ): Promise<readonly Pick<BudgetHoldScope, 'scope' | 'scopeId' | 'version'>[] | undefined> {
    const holds = this.budgetHolds;
    if (holds === undefined) return undefined;
    const { tenantId, month } = reservation;
    // Right after a failure, do not make every budgeted request wait for the next command timeout.
    if (performance.now() < this.budgetHoldsDownUntil) {
      this.onBudgetHoldFallback?.();
      return undefined;
    }
    let outcome: Awaited<ReturnType<BudgetHolds['hold']>>;
    try {
      outcome = await holds.hold(tenantId, month, scopes, reservation.amount);
    } catch (error: unknown) {
      this.budgetHoldsDownUntil = performance.now() + BUDGET_HOLDS_RETRY_MS;
      this.logger.warn(
        { err: error, tenantId },
        "shared budget holds unavailable: budgets checked by this process's counts",
      );
      this.onBudgetHoldFallback?.();
      return undefined;
    }
    if (!outcome.held)
      throw new InsufficientQuotaError(`The monthly budget of this ${outcome.refusedBy.scope} is used up.`);
    return scopes.map(({ scope, scopeId, version }) => ({ scope, scopeId, version }));
  }

  /**
   * Ends a reservation's budget hold (once, when its request is settled: its real spend, `spent`, then counts
   * through `recordSpend` here and in the shared store). The wallet part is released by the settlement or by
   * `release`.
   */
  releaseBudgetHold(reservation: Reservation, spent: Nano): void {
    const shared = reservation.sharedBudgets;
    if (shared !== undefined && this.budgetHolds !== undefined) {
      const { tenantId, month, amount } = reservation;
      this.budgetHolds.settle(tenantId, month, shared, amount, spent).catch((error: unknown) => {
        this.logger.error({ err: error, tenantId }, 'could not settle a shared budget hold');
      });
    }
    const counter = this.months.get(reservation.tenantId);
    if (counter === undefined || counter.month !== reservation.month || reservation.amount === 0n) return;
    counter.held -= reservation.amount;
    // A key with nothing held keeps its zero: deleting the last entry of a small Map makes V8 rebuild its table in the
    // runtime, which cost most of this function (~0.7 µs a request). Entries are bounded by the tenant's keys.
    const keyHeld = (counter.keyHeld.get(reservation.keyId) ?? 0n) - reservation.amount;
    counter.keyHeld.set(reservation.keyId, keyHeld > 0n ? keyHeld : 0n);
  }

  private hold(counter: MonthCounter, keyId: string, amount: Nano): void {
    counter.held += amount;
    counter.keyHeld.set(keyId, (counter.keyHeld.get(keyId) ?? 0n) + amount);
  }

  private checkBudget(budget: BudgetRecord | undefined, spent: Nano, amount: Nano): void {
    if (budget === undefined || budget.enforcement !== 'hard') return;
    if (spent + amount > budget.monthlyLimit) {
      throw new InsufficientQuotaError(`The monthly budget of this ${budget.scope} is used up.`);
    }
  }

  /** Returns a reservation whose request consumed nothing billable. */
  async release(reservation: Reservation | undefined): Promise<void> {
    if (reservation === undefined || reservation.amount === 0n) return;
    this.endInFlight(reservation);
    const { tenantId, amount, owner } = reservation;
    if (this.leases === undefined) await this.releaseHeld(tenantId, amount, owner);
    else if (reservation.settledRelease === undefined) this.leases.release(reservation);
    // Settled already, but its settlement was a duplicate the store skipped (a batch line run again): what the
    // lease counted as spent with it is still in the owner's hold.
    else if (reservation.settledRelease > 0n) await this.releaseHeld(tenantId, reservation.settledRelease, owner);
  }

  /** `LedgerStore.release`; a failure under an owner leaves its hold in doubt (`onReservationStoreFailure`). */
  private async releaseHeld(tenantId: string, amount: Nano, owner: string | undefined): Promise<void> {
    try {
      await this.ledger.release(tenantId, amount, owner);
    } catch (error: unknown) {
      if (owner !== undefined) this.onReservationStoreFailure?.();
      throw error;
    }
  }

  /**
   * Rates a finished request: its usage event is the request and this rating together (`usageEventOf`). Returns
   * undefined when billing is off or the model has no price. `recordSpend` then counts it in the month.
   */
  rate(request: RateRequest, tenantMonthTokensBefore?: bigint): UsageRating | undefined {
    const book = this.book;
    if (book === undefined) return undefined;
    let before = tenantMonthTokensBefore;
    if (before === undefined) {
      const counter = this.months.get(request.tenantId);
      before = counter !== undefined && counter.month === monthOf(request.receivedAt) ? counter.tokens : 0n;
    }
    let rated: RatedAmounts;
    try {
      rated = rateAmounts({
        priceBook: book,
        model: request.model,
        tenantId: request.tenantId,
        receivedAt: request.receivedAt,
        usage: request.usage,
        batch: request.batch,
        tenantMonthTokensBefore: before,
      });
    } catch (error: unknown) {
      if (error instanceof PricingError && error.code === 'model_not_priced') return undefined;
      throw error;
    }
    const deploymentCost =
      request.deployment === null ? undefined : priceVersionAt(book, request.receivedAt)?.costs.get(request.deployment);
    const cost = deploymentCost === undefined ? null : costOfUsage(deploymentCost, request.usage);
    // Every field is rounded half-even to the nano-unit independently; the amount is then derived from the
    // rounded parts, so an event's parts always add up to its amount exactly.
    const sum =
      rated.inputList +
      rated.cachedList +
      rated.outputList +
      rated.batch +
      rated.offPeak +
      rated.contract +
      rated.volume;
    const amount = sum < 0n ? 0n : sum;
    return {
      batch: request.batch,
      currency: rated.currency,
      priceVersion: rated.priceVersion,
      tier: rated.tier.label,
      outputCondition: rated.outputConditionMax === null ? null : `output<=${rated.outputConditionMax}`,
      inputListAmount: rated.inputList,
      cachedListAmount: rated.cachedList,
      outputListAmount: rated.outputList,
      batchDiscount: rated.batch,
      offPeakDiscount: rated.offPeak,
      contractDiscount: rated.contract + (sum < 0n ? -sum : 0n),
      volumeDiscount: rated.volume,
      amount,
      cost: cost === null ? null : nanoHalfEven(cost),
      detail: ratingDetail(rated),
    };
  }

  /**
   * The request's place in its tenant's month from the shared counter, advancing it — or undefined when there is no
   * shared counter or the price version in force has no volume tiers (then `rate` uses this process's count).
   */
  volumePositionFor(request: RateRequest): Promise<bigint> | undefined {
    const book = this.book;
    if (this.volumePositions === undefined || book === undefined) return undefined;
    const version = priceVersionAt(book, request.receivedAt);
    if (version === undefined || version.volumeTiers.length === 0) return undefined;
    const month = monthOf(request.receivedAt);
    const tokens = BigInt(request.usage.input.total + request.usage.output.total);
    return this.volumePositions.advance(
      request.tenantId,
      month,
      tokens,
      async () => (await this.ledgerMonth(request.tenantId, month)).tokens,
    );
  }

  /**
   * For budget alerts in cluster mode: `change` (this process's view of one settlement) with the month-to-date spend
   * of every budget in `budgets` taken from the shared counters instead, before and after the settlement, so every
   * process's spend counts. Each budget has its own counter per month, seeded from the ledger's rollups on first use
   * and named after the budget's `updatedAt`, so a budget removed and set again starts from the ledger rather than
   * from a count that missed the month's spend in between. Undefined without shared counters (one process: its own
   * counts are the whole month) or when neither budget applies.
   *
   * The seed is the committed spend: a settlement committed just before the seed whose own advance comes after it is
   * counted twice, which can only make an alert early, by that request. Counts are exact over Redis's 64-bit range,
   * as for the hard budgets' holds.
   */
  sharedMonthSpend(change: SpendChange, budgets: ApplicableBudgets): Promise<SpendChange> | undefined {
    const counters = this.volumePositions;
    const keyBudget = change.keyId === null ? undefined : budgets.key;
    if (counters === undefined || (budgets.tenant === undefined && keyBudget === undefined)) return undefined;
    const amount = change.monthSpendAfter.tenant - change.monthSpendBefore.tenant;
    const month = monthOf(change.at);
    const seed = this.budgetSpendSeed(change.tenantId, month);
    const advance = (budget: BudgetRecord | undefined) =>
      budget === undefined
        ? undefined
        : counters.advance(`spend:${budget.scope}:${budget.scopeId}:${budget.updatedAt}`, month, amount, () =>
            seed(budget),
          );
    const tenantBefore = advance(budgets.tenant);
    const keyBefore = advance(keyBudget);
    return Promise.all([tenantBefore, keyBefore]).then(([tenant, key]) => ({
      ...change,
      monthSpendBefore: {
        tenant: tenant ?? change.monthSpendBefore.tenant,
        key: key ?? change.monthSpendBefore.key,
      },
      monthSpendAfter: {
        tenant: tenant === undefined ? change.monthSpendAfter.tenant : tenant + amount,
        key: key === undefined ? change.monthSpendAfter.key : key + amount,
      },
    }));
  }

  /**
   * Advances the month counters by a rated request charged `amount` (call once per request actually committed or
   * about to be).
   */
  recordSpend(
    request: RateRequest,
    amount: Nano,
  ): { tenantBefore: Nano; tenantAfter: Nano; keyBefore: Nano; keyAfter: Nano } {
    const month = monthOf(request.receivedAt);
    let counter = this.months.get(request.tenantId);
    if (counter === undefined || counter.month !== month) {
      counter = { month, tokens: 0n, spend: 0n, keySpend: new Map(), held: 0n, keyHeld: new Map() };
      this.months.set(request.tenantId, counter);
    }
    const tenantBefore = counter.spend;
    counter.tokens += BigInt(request.usage.input.total + request.usage.output.total);
    counter.spend += amount;
    const keyId = request.keyId;
    const keyBefore = keyId === null ? 0n : (counter.keySpend.get(keyId) ?? 0n);
    if (keyId !== null) counter.keySpend.set(keyId, keyBefore + amount);
    return { tenantBefore, tenantAfter: counter.spend, keyBefore, keyAfter: keyBefore + amount };
  }

  /** The tenant's month-to-date counter when it is loaded already. */
  private loadedMonthCounter(tenantId: string, at: number): MonthCounter | undefined {
    const existing = this.months.get(tenantId);
    return existing !== undefined && existing.month === monthOf(at) ? existing : undefined;
  }

  /** The tenant's month-to-date counter, loaded from the billing rollups once per month and process. */
  private async monthCounter(tenantId: string, at: number): Promise<MonthCounter> {
    const existing = this.loadedMonthCounter(tenantId, at);
    if (existing !== undefined) return existing;
    const month = monthOf(at);
    const key = `${tenantId}:${month}`;
    let pending = this.loading.get(key);
    if (pending === undefined) {
      pending = this.loadMonth(tenantId, month).finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending;
  }

  /**
   * The tenant's month as the ledger has it settled, from the rollups: tokens (volume tiers), spend and spend per key
   * (budgets). Loads this process's month counter and seeds the shared ones (cluster mode).
   */
  private async ledgerMonth(
    tenantId: string,
    month: string,
  ): Promise<{ tokens: bigint; spend: Nano; keySpend: Map<string, Nano> }> {
    const start = Date.parse(`${month}-01T00:00:00Z`);
    const end = nextMonthStart(start);
    const rows = await this.ledger.queryBillingRollups({ tenantId, start, end });
    const keyRows = await this.ledger.queryUsageRollups({ bucket: '1d', start, end, tenantId });
    const keySpend = new Map<string, Nano>();
    for (const row of keyRows) {
      if (row.keyId !== null) keySpend.set(row.keyId, (keySpend.get(row.keyId) ?? 0n) + row.amount);
    }
    return {
      tokens: rows.reduce((sum, row) => sum + BigInt(row.inputTokens + row.cachedTokens + row.outputTokens), 0n),
      spend: rows.reduce((sum, row) => sum + row.amount, 0n),
      keySpend,
    };
  }

  private async loadMonth(tenantId: string, month: string): Promise<MonthCounter> {
    const settled = await this.ledgerMonth(tenantId, month);
    // Requests rated while the rollups loaded are already in the map: keep them on top.
    const current = this.months.get(tenantId);
    const counter: MonthCounter = { month, ...settled, held: 0n, keyHeld: new Map() };
    if (current !== undefined && current.month === month) {
      counter.tokens += current.tokens;
      counter.spend += current.spend;
      for (const [keyId, spend] of current.keySpend)
        counter.keySpend.set(keyId, (counter.keySpend.get(keyId) ?? 0n) + spend);
      counter.held = current.held;
      counter.keyHeld = current.keyHeld;
    }
    this.months.set(tenantId, counter);
    return counter;
  }
}

/** The month `monthOf` answered last: nearly every call on the request path falls in it. */
let lastMonth = { start: 0, end: 0, label: '' };

/** `YYYY-MM` of an instant, UTC. */
export function monthOf(at: number): string {
  // Formatting a date costs microseconds per call, and admission, rating and spend each ask for every request.
  if (at >= lastMonth.start && at < lastMonth.end) return lastMonth.label;
  const label = new Date(at).toISOString().slice(0, 7);
  const start = Date.parse(`${label}-01T00:00:00Z`);
  lastMonth = { start, end: nextMonthStart(start), label };
  return label;
}

/** Epoch ms of the first instant of the month after the one starting at `monthStart`. */
export function nextMonthStart(monthStart: number): number {
  const date = new Date(monthStart);
  // Not `Date.UTC(year, …)`: it reads the years 0 to 99 as 1900 to 1999.
  const next = new Date(0);
  next.setUTCFullYear(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
  return next.getTime();
}
