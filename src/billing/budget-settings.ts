/** Budgets as the admin API shows them. */
import type { BudgetRecord } from '../store/ledger-store.js';
import { formatNano } from './nano.js';

/** A budget in the admin API (the body of `PUT /tenants/{id}/billing`'s `budget` and `PUT /keys/{id}/budget`). */
export interface BudgetView {
  /** Monthly limit, currency units. */
  monthly_limit: string;
  /** `hard` refuses requests once the limit is reached; `soft` only alerts. */
  enforcement: 'hard' | 'soft';
  /** Alert thresholds, percent of the limit. */
  thresholds: number[];
  /** Where alerts are posted; null: logged only. */
  webhook_url: string | null;
}

/** The budget as the admin API shows it; null when there is none. */
export function budgetView(budget: BudgetRecord | undefined): BudgetView | null {
  if (budget === undefined) return null;
  return {
    monthly_limit: formatNano(budget.monthlyLimit),
    enforcement: budget.enforcement,
    thresholds: [...budget.thresholds],
    webhook_url: budget.webhookUrl,
  };
}
