/**
 * Gross margin per model for the admin API, from billing rollups: revenue (Σ charged amount), cost (Σ the
 * operator's cost), margin = revenue − cost. Money is exact: decimal strings of the currency unit to the nano-unit.
 * The margin percentage (margin / revenue × 100) is a quotient, so it is rounded half-to-even to
 * `MARGIN_PERCENT_DECIMALS` places, and null when revenue is zero. Rows with a cost the ledger did not know (a
 * deployment priced per replica-hour) count as cost 0, so margin is an upper bound for those models.
 * Groups are per currency × model: amounts in different currencies are never added.
 */
import { divideHalfEven, formatDecimal } from '../../pricing/money.js';
import type { BillingRollupRow } from '../../store/ledger-store.js';
import { formatNano } from '../nano.js';

/** Decimal places of `margin_percent`. */
export const MARGIN_PERCENT_DECIMALS = 4;

/** Revenue, cost and margin of one currency (and model). */
export interface MarginFigures {
  currency: string;
  requests: number;
  /** Tokens of every class. */
  tokens: number;
  /** Currency units, exact decimal string. */
  revenue: string;
  cost: string;
  margin: string;
  /** Percent of revenue, rounded half-to-even to 4 places; null when revenue is 0. */
  margin_percent: string | null;
}

/** One model's line. */
export interface MarginReportLine extends MarginFigures {
  model: string;
}

/** The margin report: one line per currency × model (sorted), and totals per currency. */
export interface MarginReport {
  object: 'margin_report';
  data: MarginReportLine[];
  totals: MarginFigures[];
}

interface Accumulator {
  requests: number;
  tokens: number;
  revenue: bigint;
  cost: bigint;
}

/** `margin / revenue × 100`, half-to-even to `MARGIN_PERCENT_DECIMALS` places, as a decimal string. */
export function marginPercent(revenue: bigint, margin: bigint): string | null {
  if (revenue === 0n) return null;
  const scale = 100n * 10n ** BigInt(MARGIN_PERCENT_DECIMALS);
  // A negative revenue (refund-heavy corrections) keeps the sign of margin / revenue.
  const quotient = revenue < 0n ? divideHalfEven(-margin * scale, -revenue) : divideHalfEven(margin * scale, revenue);
  return formatDecimal(quotient, MARGIN_PERCENT_DECIMALS);
}

function figures(currency: string, value: Accumulator): MarginFigures {
  const margin = value.revenue - value.cost;
  return {
    currency,
    requests: value.requests,
    tokens: value.tokens,
    revenue: formatNano(value.revenue),
    cost: formatNano(value.cost),
    margin: formatNano(margin),
    margin_percent: marginPercent(value.revenue, margin),
  };
}

function add(map: Map<string, Accumulator>, key: string, row: BillingRollupRow): void {
  const value = map.get(key) ?? { requests: 0, tokens: 0, revenue: 0n, cost: 0n };
  value.requests += row.requests;
  value.tokens += row.inputTokens + row.cachedTokens + row.outputTokens;
  value.revenue += row.amount;
  value.cost += row.cost;
  map.set(key, value);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Builds the margin report of any set of billing rollups (one tenant, all tenants, any period). */
export function buildMarginReport(rows: readonly BillingRollupRow[]): MarginReport {
  const byModel = new Map<string, Accumulator>();
  const byCurrency = new Map<string, Accumulator>();
  for (const row of rows) {
    add(byModel, JSON.stringify([row.currency, row.model]), row);
    add(byCurrency, row.currency, row);
  }
  const data = [...byModel.entries()]
    .map(([key, value]) => {
      const [currency, model] = JSON.parse(key) as [string, string];
      return { model, ...figures(currency, value) };
    })
    .sort((a, b) => compare(a.currency, b.currency) || compare(a.model, b.model));
  const totals = [...byCurrency.entries()]
    .map(([currency, value]) => figures(currency, value))
    .sort((a, b) => compare(a.currency, b.currency));
  return { object: 'margin_report', data, totals };
}
