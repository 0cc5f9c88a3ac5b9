/**
 * Budget arithmetic, pure and exact: which alert thresholds a settlement crosses, and whether a reservation would
 * break a hard budget. Money is `bigint` nano-units; thresholds are percentages of the monthly limit.
 *
 * A threshold `t` sits at the exact amount `limit × t / 100` (a rational, never rounded). A settlement that moves
 * month-to-date spend from `before` to `after` crosses `t` when `before < limit × t / 100 ≤ after`: reaching the
 * threshold exactly counts, being already at it does not, so splitting one settlement into two never adds or loses
 * an alert.
 */

import { assertNever } from '../../errors/assert-never.js';
import type { BudgetRecord, Nano } from '../../store/ledger-store.js';

/** Thresholds are read to 1e-6 of a percent (`12.5` and `33.333333` are exact). */
const THRESHOLD_SCALE = 1_000_000;
const PERCENT_SCALED = 100n * BigInt(THRESHOLD_SCALE);

/** The budget period of a settlement: its UTC calendar month, `YYYY-MM`. `at` is epoch ms. */
export function budgetPeriod(at: number): string {
  const date = new Date(at);
  const year = date.getUTCFullYear();
  const month = date.getUTCMonth() + 1;
  return `${String(year).padStart(4, '0')}-${String(month).padStart(2, '0')}`;
}

/**
 * The budget's thresholds (percent) that spend moving from `spendBefore` to `spendAfter` (nano, month to date)
 * crosses, ascending and without duplicates. Spend that stays put or goes down (a refund) crosses nothing.
 * Thresholds that are not finite or not positive are ignored; thresholds above 100 are allowed (soft budgets).
 */
export function crossedThresholds(
  budget: Pick<BudgetRecord, 'monthlyLimit' | 'thresholds'>,
  spendBefore: Nano,
  spendAfter: Nano,
): number[] {
  if (spendAfter <= spendBefore) return [];
  const crossed = new Set<number>();
  for (const threshold of budget.thresholds) {
    if (!Number.isFinite(threshold) || threshold <= 0) continue;
    // before < limit × t / 100  ⇔  before × 100 × S < limit × (t × S), all integers.
    const scaledThreshold = BigInt(Math.round(threshold * THRESHOLD_SCALE));
    const mark = budget.monthlyLimit * scaledThreshold;
    if (spendBefore * PERCENT_SCALED < mark && mark <= spendAfter * PERCENT_SCALED) crossed.add(threshold);
  }
  return [...crossed].sort((a, b) => a - b);
}

/**
 * Admission check: whether reserving `reservation` (nano) on top of month-to-date `spendSoFar` (nano) would take a
 * **hard** budget past its limit. Reaching the limit exactly is allowed. Soft budgets never block.
 */
export function wouldExceedHardBudget(
  budget: Pick<BudgetRecord, 'monthlyLimit' | 'enforcement'>,
  spendSoFar: Nano,
  reservation: Nano,
): boolean {
  switch (budget.enforcement) {
    case 'soft':
      return false;
    case 'hard':
      return spendSoFar + reservation > budget.monthlyLimit;
    default:
      return assertNever(budget.enforcement);
  }
}
