import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BudgetRecord } from '../../store/ledger-store.js';
import { budgetPeriod, crossedThresholds, wouldExceedHardBudget } from './budget-evaluator.js';

const NANO = 1_000_000_000n;

function budget(overrides: Partial<BudgetRecord> = {}): BudgetRecord {
  return {
    scope: 'tenant',
    scopeId: 'ten_a',
    tenantId: 'ten_a',
    monthlyLimit: 100n * NANO,
    enforcement: 'soft',
    thresholds: [50, 80, 100],
    webhookUrl: null,
    updatedAt: 0,
    ...overrides,
  };
}

describe('crossedThresholds', () => {
  it('reports every threshold between the spend before and after', () => {
    expect(crossedThresholds(budget(), 45n * NANO, 82n * NANO)).toEqual([50, 80]);
  });

  it('counts reaching a threshold exactly, but not starting on it', () => {
    expect(crossedThresholds(budget(), 50n * NANO - 1n, 50n * NANO)).toEqual([50]);
    expect(crossedThresholds(budget(), 50n * NANO, 60n * NANO)).toEqual([]);
    expect(crossedThresholds(budget(), 40n * NANO, 50n * NANO - 1n)).toEqual([]);
  });

  it('reports each threshold once when one settlement jumps over all of them', () => {
    expect(crossedThresholds(budget(), 0n, 250n * NANO)).toEqual([50, 80, 100]);
  });

  it('sorts and de-duplicates the configured thresholds and ignores unusable ones', () => {
    const messy = budget({ thresholds: [100, 50, 80, 50, 0, -10, Number.NaN, 120] });
    expect(crossedThresholds(messy, 0n, 130n * NANO)).toEqual([50, 80, 100, 120]);
  });

  it('places fractional thresholds exactly', () => {
    // 12.5% of 1 unit is 125,000,000 nano.
    const fractional = budget({ monthlyLimit: NANO, thresholds: [12.5] });
    expect(crossedThresholds(fractional, 0n, 124_999_999n)).toEqual([]);
    expect(crossedThresholds(fractional, 0n, 125_000_000n)).toEqual([12.5]);
    // A limit whose threshold is not a whole number of nano: 50% of 3 nano is 1.5 nano.
    const odd = budget({ monthlyLimit: 3n, thresholds: [50] });
    expect(crossedThresholds(odd, 0n, 1n)).toEqual([]);
    expect(crossedThresholds(odd, 1n, 2n)).toEqual([50]);
  });

  it('crosses nothing when spend stays or goes down (a refund)', () => {
    expect(crossedThresholds(budget(), 90n * NANO, 90n * NANO)).toEqual([]);
    expect(crossedThresholds(budget(), 90n * NANO, 10n * NANO)).toEqual([]);
  });

  it('splitting one settlement into two never adds or loses an alert', () => {
    const thresholds = fc.uniqueArray(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: 10n ** 15n }),
        thresholds,
        fc.array(fc.bigInt({ min: 0n, max: 3n * 10n ** 15n }), { minLength: 3, maxLength: 3 }),
        (limit, marks, points) => {
          const [a, b, c] = [...points].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)) as [bigint, bigint, bigint];
          const record = budget({ monthlyLimit: limit, thresholds: marks });
          const whole = crossedThresholds(record, a, c);
          const split = [...crossedThresholds(record, a, b), ...crossedThresholds(record, b, c)];
          expect(split).toEqual(whole);
          // Independent oracle: a threshold is crossed when ceil(limit × t / 100) lies in (a, c].
          const oracle = [...marks]
            .sort((x, y) => x - y)
            .filter((t) => {
              const mark = (limit * BigInt(t) + 99n) / 100n;
              return a < mark && mark <= c;
            });
          expect(whole).toEqual(oracle);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('wouldExceedHardBudget', () => {
  it('blocks a hard budget only when spend plus the reservation goes past the limit', () => {
    const hard = budget({ enforcement: 'hard' });
    expect(wouldExceedHardBudget(hard, 90n * NANO, 10n * NANO)).toBe(false);
    expect(wouldExceedHardBudget(hard, 90n * NANO, 10n * NANO + 1n)).toBe(true);
    expect(wouldExceedHardBudget(hard, 100n * NANO, 0n)).toBe(false);
    expect(wouldExceedHardBudget(hard, 100n * NANO + 1n, 0n)).toBe(true);
  });

  it('never blocks a soft budget', () => {
    expect(wouldExceedHardBudget(budget({ enforcement: 'soft' }), 500n * NANO, 500n * NANO)).toBe(false);
  });
});

describe('budgetPeriod', () => {
  it('is the UTC calendar month of the settlement', () => {
    expect(budgetPeriod(Date.UTC(2026, 10, 15, 12))).toBe('2026-11');
    expect(budgetPeriod(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe('2026-12');
    expect(budgetPeriod(Date.UTC(2027, 0, 1, 0, 0, 0, 0))).toBe('2027-01');
    // 23:30 on Jan 31 in UTC−5 is already February in UTC.
    expect(budgetPeriod(Date.parse('2026-01-31T23:30:00-05:00'))).toBe('2026-02');
  });
});
