import { describe, expect, it } from 'vitest';
import { monthOf, nextMonthStart } from './billing-service.js';

describe('monthOf', () => {
  it('names the UTC month of an instant, at every boundary and in any order of calls', () => {
    const lastOfNovember = Date.UTC(2026, 10, 30, 23, 59, 59, 999);
    const firstOfDecember = lastOfNovember + 1;
    const newYear = Date.UTC(2027, 0, 1);
    // Repeated and out-of-order calls: the answer must not depend on the month asked before.
    const asked = [lastOfNovember, firstOfDecember, lastOfNovember, newYear - 1, newYear, firstOfDecember];
    expect(asked.map(monthOf)).toEqual(['2026-11', '2026-12', '2026-11', '2026-12', '2027-01', '2026-12']);
    expect(monthOf(Date.UTC(2024, 1, 29, 12))).toBe('2024-02');
  });

  it('ends a month where the next one starts', () => {
    expect(nextMonthStart(Date.UTC(2026, 11, 1))).toBe(Date.UTC(2027, 0, 1));
  });
});
