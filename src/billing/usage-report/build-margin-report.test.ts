import { describe, expect, it } from 'vitest';
import { billingRollupFixture } from '../../store/ledger-fixtures.js';
import type { BillingRollupRow } from '../../store/ledger-store.js';
import { buildMarginReport, marginPercent } from './build-margin-report.js';

/** A rollup row with the amount given (not derived from list amounts: margin reads only amount and cost). */
function row(fields: Partial<BillingRollupRow>): BillingRollupRow {
  return billingRollupFixture({
    day: Date.UTC(2026, 10, 1),
    tenantId: 'ten_a',
    model: 'sim-pro-32k',
    priceVersion: '2026-01',
    amount: 0n,
    ...fields,
  });
}

describe('buildMarginReport', () => {
  it('adds revenue and cost exactly per currency and model', () => {
    const report = buildMarginReport([
      row({ requests: 3, inputTokens: 1000, outputTokens: 10, amount: 1_000_000_001n, cost: 333_333_334n }),
      row({ tenantId: 'ten_b', requests: 1, cachedTokens: 5, amount: 2_000_000_000n, cost: 666_666_666n }),
      row({ model: 'sim-pro-128k', amount: 500_000_000n, cost: 600_000_000n }),
      row({ model: 'free', amount: 0n, cost: 1n }),
      row({ currency: 'USD', amount: 3n, cost: 0n }),
    ]);
    expect(report.object).toBe('margin_report');
    expect(report.data).toEqual([
      {
        model: 'free',
        currency: 'CNY',
        requests: 1,
        tokens: 0,
        revenue: '0',
        cost: '0.000000001',
        margin: '-0.000000001',
        margin_percent: null,
      },
      {
        model: 'sim-pro-128k',
        currency: 'CNY',
        requests: 1,
        tokens: 0,
        revenue: '0.5',
        cost: '0.6',
        margin: '-0.1',
        margin_percent: '-20',
      },
      {
        model: 'sim-pro-32k',
        currency: 'CNY',
        requests: 4,
        tokens: 1015,
        revenue: '3.000000001',
        cost: '1',
        margin: '2.000000001',
        // 2.000000001 / 3.000000001 × 100 = 66.66666668888… → 66.6667
        margin_percent: '66.6667',
      },
      {
        model: 'sim-pro-32k',
        currency: 'USD',
        requests: 1,
        tokens: 0,
        revenue: '0.000000003',
        cost: '0',
        margin: '0.000000003',
        margin_percent: '100',
      },
    ]);
    expect(report.totals).toEqual([
      {
        currency: 'CNY',
        requests: 6,
        tokens: 1015,
        revenue: '3.500000001',
        cost: '1.600000001',
        margin: '1.9',
        // 1.9 / 3.500000001 × 100 = 54.2857142702… → 54.2857
        margin_percent: '54.2857',
      },
      expect.objectContaining({ currency: 'USD', revenue: '0.000000003' }),
    ]);
  });

  it('rounds the percentage half to even', () => {
    // In units of 0.0001%: 1e6 / 400,000 = 2.5 → 2 (tie to even); 7e6 / 2e6 = 3.5 → 4; 3e6 / 160,000 = 18.75 → 19.
    expect(marginPercent(400_000n, 1n)).toBe('0.0002');
    expect(marginPercent(2_000_000n, 7n)).toBe('0.0004');
    expect(marginPercent(160_000n, 3n)).toBe('0.0019');
    expect(marginPercent(-8n, -1n)).toBe('12.5');
    expect(marginPercent(8n, 1n)).toBe('12.5');
    expect(marginPercent(3n, 1n)).toBe('33.3333');
    expect(marginPercent(3n, 2n)).toBe('66.6667');
    expect(marginPercent(0n, 5n)).toBeNull();
  });

  it('is empty for no rows', () => {
    expect(buildMarginReport([])).toEqual({ object: 'margin_report', data: [], totals: [] });
  });
});
