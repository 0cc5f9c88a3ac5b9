/** The port through which settled spend reaches budget alerting (implemented by `src/billing/alerts`). */
import type { Nano } from '../store/ledger-store.js';

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
