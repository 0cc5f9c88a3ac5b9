/**
 * The wire format of alert webhooks. Every event has a stable `id` (the same on every delivery attempt, so a
 * receiver can de-duplicate), a `type`, `created_at` in Unix seconds and a `data` object whose amounts are decimal
 * strings of the currency unit (never JSON numbers: they are binary floats and lose sub-units).
 */
import { createHash } from 'node:crypto';
import { formatDecimal } from '../../pricing/money.js';
import type { BudgetRecord, Nano } from '../../store/ledger-store.js';

/** Decimal places of a nano-unit amount. */
const NANO_DECIMALS = 9;

/** A budget threshold reached in a period, as the alert service sees it (amounts in nano-units). */
export interface BudgetAlert {
  scope: BudgetRecord['scope'];
  /** Tenant id or key id. */
  scopeId: string;
  tenantId: string;
  /** UTC calendar month, `YYYY-MM`. */
  period: string;
  /** Percent of the monthly limit, e.g. 80. */
  threshold: number;
  /** Monthly limit, nano-units. */
  limit: Nano;
  /** Month-to-date spend after the settlement that crossed the threshold, nano-units. */
  spent: Nano;
  /** ISO 4217 code of `limit` and `spent`. */
  currency: string;
  enforcement: BudgetRecord['enforcement'];
}

/** `budget.threshold_crossed`: month-to-date spend reached a budget's alert threshold. */
export interface BudgetThresholdCrossedEvent {
  /** Stable per (scope, scope id, period, threshold): `evt_` + 24 hex digits. */
  id: string;
  type: 'budget.threshold_crossed';
  /** Unix seconds. */
  created_at: number;
  data: {
    scope: BudgetRecord['scope'];
    scope_id: string;
    tenant_id: string;
    period: string;
    threshold: number;
    /** Decimal string of the currency unit, e.g. `"100"`. */
    limit: string;
    /** Decimal string of the currency unit, e.g. `"82.000000001"`. */
    spent: string;
    currency: string;
    enforcement: BudgetRecord['enforcement'];
  };
}

/** Every event a webhook can carry (one today; a union so new types are compile-checked where they are handled). */
export type WebhookEvent = BudgetThresholdCrossedEvent;

/** The event id of an alert: derived from what makes it unique, so two senders of the same alert agree on it. */
export function budgetAlertEventId(alert: Pick<BudgetAlert, 'scope' | 'scopeId' | 'period' | 'threshold'>): string {
  const digest = createHash('sha256')
    .update(`budget.threshold_crossed\n${alert.scope}\n${alert.scopeId}\n${alert.period}\n${alert.threshold}`)
    .digest('hex');
  return `evt_${digest.slice(0, 24)}`;
}

/** The webhook event of an alert. `createdAt` is epoch ms (written as Unix seconds). */
export function toBudgetThresholdCrossedEvent(alert: BudgetAlert, createdAt: number): BudgetThresholdCrossedEvent {
  return {
    id: budgetAlertEventId(alert),
    type: 'budget.threshold_crossed',
    created_at: Math.floor(createdAt / 1000),
    data: {
      scope: alert.scope,
      scope_id: alert.scopeId,
      tenant_id: alert.tenantId,
      period: alert.period,
      threshold: alert.threshold,
      limit: formatDecimal(alert.limit, NANO_DECIMALS),
      spent: formatDecimal(alert.spent, NANO_DECIMALS),
      currency: alert.currency,
      enforcement: alert.enforcement,
    },
  };
}
