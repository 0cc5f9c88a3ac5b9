/** The port through which settled spend reaches budget alerting, and the gateway's implementation of it. */
import type { Logger } from '../observability/logger.js';
import type { Nano } from '../store/ledger-store.js';
import type { BudgetAlertService } from './alerts/alert-service.js';
import type { BillingService } from './billing-service.js';

/** A change of month-to-date spend caused by one settled request. */
export interface SpendChange {
  tenantId: string;
  keyId: string | null;
  /** Epoch ms of the request (its calendar month is the budget period). */
  at: number;
  monthSpendBefore: { tenant: Nano; key: Nano };
  monthSpendAfter: { tenant: Nano; key: Nano };
}

/** Receives spend changes; must not throw or block. */
export interface BudgetAlertSink {
  onSettled(change: SpendChange): void;
}

/**
 * The gateway's sink: the settlements of tenants and keys that have a budget go to budget alerting, with the spend
 * across every gateway process in cluster mode (`BillingService.sharedMonthSpend`). Each process alone counts only
 * its own requests: two processes sharing a tenant's traffic would each see half of its month and announce 80% of
 * the budget at 160%. If the shared counters fail, this process's own figures are evaluated, and the failure logged.
 */
export function budgetAlertSink(options: {
  alerts: Pick<BudgetAlertService, 'mayAlert' | 'budgetsFor' | 'onSettled'>;
  billing: Pick<BillingService, 'sharedMonthSpend' | 'currency'>;
  logger: Logger;
}): BudgetAlertSink {
  const { alerts, billing, logger } = options;
  return {
    onSettled(change) {
      if (!alerts.mayAlert(change.tenantId, change.keyId)) return;
      const currency = billing.currency;
      const shared = billing.sharedMonthSpend(change, alerts.budgetsFor(change.tenantId, change.keyId));
      if (shared === undefined) {
        void alerts.onSettled({ ...change, currency });
        return;
      }
      void shared.then(
        (across) => alerts.onSettled({ ...across, currency }),
        (error: unknown) => {
          logger.warn(
            { err: error, tenantId: change.tenantId },
            "shared budget spend unavailable: alerts compare this process's spend",
          );
          return alerts.onSettled({ ...change, currency });
        },
      );
    },
  };
}
