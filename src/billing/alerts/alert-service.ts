/**
 * Turns settlements into budget alerts. After each settlement the caller reports the month-to-date spend of the
 * tenant (and of the key) before and after it; every threshold crossed is claimed in the ledger for its period
 * (`claimAlert`, first caller wins), so however many gateway processes see the crossing, one alert goes out: a
 * `budget_alert` warn log line and, when the budget has a webhook URL, a signed webhook.
 *
 * The claim is taken before sending, so delivery is at most once per process lifetime: a process that dies between
 * the claim and the webhook loses that alert (the log line is written first). Budgets are cached in memory;
 * `reloadBudgets` refreshes them (call it after a budget changes).
 */
import { type Clock, RealClock } from '../../clock/clock.js';
import type { Logger } from '../../observability/logger.js';
import type { BudgetRecord, LedgerStore, Nano } from '../../store/ledger-store.js';
import { type BudgetAlert, toBudgetThresholdCrossedEvent } from './budget-alert-event.js';
import { budgetPeriod, crossedThresholds } from './budget-evaluator.js';
import type { WebhookNotifier } from './webhook-notifier.js';

/** Month-to-date spend of the tenant and, when the request used a key, of the key, nano-units. */
export interface MonthSpend {
  tenant: Nano;
  /** Absent: the key's budget (if any) is not evaluated. */
  key?: Nano;
}

/** What a settlement reports to the alert service. */
export interface SettledSpendEvent {
  tenantId: string;
  keyId: string | null;
  /** Spend in the settlement's month before it. */
  monthSpendBefore: MonthSpend;
  /** Spend in the settlement's month including it. */
  monthSpendAfter: MonthSpend;
  /** Settlement time, epoch ms: its UTC month is the budget period. */
  at: number;
  /** Currency of the amounts (the usage event's). Default: the service's `defaultCurrency`. */
  currency?: string;
}

/** Options of `BudgetAlertService`. */
export interface BudgetAlertServiceOptions {
  ledger: Pick<LedgerStore, 'claimAlert' | 'listBudgets'>;
  notifier: Pick<WebhookNotifier, 'enqueue'>;
  logger: Logger;
  /** Source of the webhook events' `created_at`. Default: the wall clock. */
  clock?: Clock;
  /** Currency of settlements that do not name one. Default `CNY`. */
  defaultCurrency?: string;
}

/** The budgets that apply to one request. */
export interface ApplicableBudgets {
  tenant?: BudgetRecord;
  key?: BudgetRecord;
}

/** Budget alerts after settlement, once per budget, period and threshold across all processes. */
export class BudgetAlertService {
  private readonly ledger: Pick<LedgerStore, 'claimAlert' | 'listBudgets'>;
  private readonly notifier: Pick<WebhookNotifier, 'enqueue'>;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly defaultCurrency: string;
  private budgets: BudgetsByScope = indexBudgets([]);
  private loaded: Promise<void> | undefined;
  /** True once budgets were read at least once. */
  private ready = false;

  constructor(options: BudgetAlertServiceOptions) {
    this.ledger = options.ledger;
    this.notifier = options.notifier;
    this.logger = options.logger;
    this.clock = options.clock ?? new RealClock();
    this.defaultCurrency = options.defaultCurrency ?? 'CNY';
  }

  /** Reads every budget from the ledger into the cache (replacing it). Rejects when the ledger does. */
  async reloadBudgets(): Promise<void> {
    const load = this.load();
    this.loaded = load;
    await load;
  }

  /** The cached budgets of a tenant and key (empty until the first load). For admission's hard-budget check. */
  budgetsFor(tenantId: string, keyId: string | null): ApplicableBudgets {
    const tenant = this.budgets.tenant.get(tenantId);
    const key = keyId === null ? undefined : this.budgets.key.get(keyId);
    return { ...(tenant === undefined ? {} : { tenant }), ...(key === undefined ? {} : { key }) };
  }

  /**
   * Whether a settlement of this tenant and key may cross a threshold: false only when the budgets are loaded and
   * neither has one. A synchronous check, so the request path skips `onSettled` (a promise per request) for the
   * tenants without budgets — most of them.
   */
  mayAlert(tenantId: string, keyId: string | null): boolean {
    if (!this.ready) return true;
    return this.budgets.tenant.has(tenantId) || (keyId !== null && this.budgets.key.has(keyId));
  }

  /**
   * Evaluates the tenant's and key's budgets for one settlement and sends the alerts this process claimed. Never
   * rejects: a failing ledger is logged and the alert skipped (settlement must not fail because of an alert).
   * Returns the alerts sent, for callers that count them.
   */
  async onSettled(event: SettledSpendEvent): Promise<BudgetAlert[]> {
    try {
      this.loaded ??= this.load();
      await this.loaded;
    } catch (error: unknown) {
      this.loaded = undefined;
      this.logger.error({ err: error, tenantId: event.tenantId }, 'budget_alert_load_failed');
      return [];
    }
    const period = budgetPeriod(event.at);
    const currency = event.currency ?? this.defaultCurrency;
    const { tenant, key } = this.budgetsFor(event.tenantId, event.keyId);
    const sent: BudgetAlert[] = [];
    if (tenant !== undefined) {
      sent.push(
        ...(await this.evaluate(tenant, event.monthSpendBefore.tenant, event.monthSpendAfter.tenant, period, currency)),
      );
    }
    const keyBefore = event.monthSpendBefore.key;
    const keyAfter = event.monthSpendAfter.key;
    if (key !== undefined && keyBefore !== undefined && keyAfter !== undefined) {
      sent.push(...(await this.evaluate(key, keyBefore, keyAfter, period, currency)));
    }
    return sent;
  }

  /** Replaces the cached budgets with ones already read (the billing service's reload), without a query. */
  useBudgets(budgets: readonly BudgetRecord[]): void {
    this.budgets = indexBudgets(budgets);
    this.ready = true;
    this.loaded = Promise.resolve();
  }

  private async load(): Promise<void> {
    this.useBudgets(await this.ledger.listBudgets());
  }

  private async evaluate(
    budget: BudgetRecord,
    before: Nano,
    after: Nano,
    period: string,
    currency: string,
  ): Promise<BudgetAlert[]> {
    const sent: BudgetAlert[] = [];
    for (const threshold of crossedThresholds(budget, before, after)) {
      const claim = { scope: budget.scope, scopeId: budget.scopeId, period, threshold };
      let claimed: boolean;
      try {
        claimed = await this.ledger.claimAlert(claim);
      } catch (error: unknown) {
        this.logger.error({ err: error, ...claim, tenantId: budget.tenantId }, 'budget_alert_claim_failed');
        continue;
      }
      if (!claimed) continue;
      const alert: BudgetAlert = {
        ...claim,
        tenantId: budget.tenantId,
        limit: budget.monthlyLimit,
        spent: after,
        currency,
        enforcement: budget.enforcement,
      };
      const webhookEvent = toBudgetThresholdCrossedEvent(alert, this.clock.now());
      this.logger.warn(
        {
          ...claim,
          tenantId: budget.tenantId,
          limit: webhookEvent.data.limit,
          spent: webhookEvent.data.spent,
          currency,
          enforcement: budget.enforcement,
          eventId: webhookEvent.id,
          webhook: budget.webhookUrl !== null,
        },
        'budget_alert',
      );
      if (budget.webhookUrl !== null) this.notifier.enqueue(budget.webhookUrl, webhookEvent);
      sent.push(alert);
    }
    return sent;
  }
}

/** Budgets by scope, each by scope id: a lookup on the request path builds no `scope:scopeId` string. */
export type BudgetsByScope = Readonly<Record<BudgetRecord['scope'], ReadonlyMap<string, BudgetRecord>>>;

/** Indexes budgets by scope and scope id. */
export function indexBudgets(budgets: readonly BudgetRecord[]): BudgetsByScope {
  const byScope: Record<BudgetRecord['scope'], Map<string, BudgetRecord>> = { tenant: new Map(), key: new Map() };
  for (const budget of budgets) byScope[budget.scope].set(budget.scopeId, budget);
  return byScope;
}
