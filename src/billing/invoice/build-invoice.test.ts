import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePriceBook } from '../../pricing/price-book.js';
import { billingRollupFixture } from '../../store/ledger-fixtures.js';
import type { BillingRollupRow, WalletTransactionRecord } from '../../store/ledger-store.js';
import {
  buildInvoice,
  calendarMonthOf,
  type Invoice,
  InvoiceInputError,
  type InvoiceLine,
  invoiceIdFor,
  roundNanoToMinor,
} from './build-invoice.js';

const NOV = Date.UTC(2026, 10, 1);
const DEC = Date.UTC(2026, 11, 1);
const DAY = 86_400_000;
const tenant = { id: 'ten_abc', name: 'ABC Corp' };

/** A November rollup row of the tenant (its amount is its list amounts plus discounts unless `amount` is given). */
function row(fields: Partial<BillingRollupRow>): BillingRollupRow {
  return billingRollupFixture({
    day: NOV + 2 * DAY,
    tenantId: tenant.id,
    model: 'sim-pro-32k',
    priceVersion: '2026-01',
    ...fields,
  });
}

const november = { start: NOV, end: DEC };

/** Five rows of November, with amounts computed by hand (prices per million: 0.8 input, 0.16 cached, 2 output). */
const handRows: BillingRollupRow[] = [
  row({
    requests: 10,
    inputTokens: 1_000_000,
    cachedTokens: 500_000,
    outputTokens: 250_000,
    inputListAmount: 800_000_000n, // 1M × 0.8
    cachedListAmount: 80_000_000n, // 0.5M × 0.16
    outputListAmount: 500_000_000n, // 0.25M × 2
    contractDiscount: -138_000_000n, // 10% of 1.38
  }),
  row({
    day: NOV + 3 * DAY,
    requests: 5,
    inputTokens: 1_234_567,
    outputTokens: 1_000,
    inputListAmount: 987_653_600n, // 1.234567M × 0.8 = 0.9876536
    outputListAmount: 2_000_000n,
    contractDiscount: -98_965_360n, // 10% of 0.9896536
  }),
  row({
    day: NOV + 3 * DAY,
    batch: true,
    requests: 2,
    inputTokens: 100_000,
    outputTokens: 10_000,
    inputListAmount: 80_000_000n,
    outputListAmount: 20_000_000n,
    batchDiscount: -50_000_000n,
    contractDiscount: -5_000_000n,
  }),
  row({
    model: 'sim-pro-128k',
    tier: '0-32768',
    outputCondition: 'output<=200',
    requests: 3,
    inputTokens: 3_000,
    outputTokens: 150,
    inputListAmount: 2_400_000n,
    outputListAmount: 300_000n,
    offPeakDiscount: -1_350_000n,
  }),
  row({
    model: 'sim-pro-128k',
    tier: '32769-131072',
    requests: 1,
    inputTokens: 40_000,
    outputTokens: 1_000,
    inputListAmount: 48_000_000n, // 40k × 1.2
    outputListAmount: 16_000_000n, // 1k × 16
    volumeDiscount: -6_400_000n,
  }),
];

function summary(line: InvoiceLine): unknown[] {
  switch (line.kind) {
    case 'usage':
      return [
        line.model,
        line.batch,
        line.tier,
        line.outputCondition,
        line.tokenClass,
        line.quantity,
        line.unitPrice.perMillion,
        line.unitPrice.exact,
        line.amount.exact,
        line.amount.rounded,
      ];
    case 'modifier':
      return [line.model, line.modifier, line.amount.exact, line.amount.rounded];
    case 'rounding_adjustment':
      return ['adjustment', line.amount.exact, line.amount.rounded];
  }
}

describe('buildInvoice', () => {
  it('builds the lines, totals and id of a month from known rows', () => {
    const invoice = buildInvoice({ tenant, currency: 'CNY', period: november, rows: handRows, transactions: [] });
    expect(invoice.id).toBe('inv_ten_abc_202611');
    expect(invoice.calendarMonth).toBe('2026-11');
    expect(invoice.issuedAt).toBe(DEC);
    expect(invoice.lines.map(summary)).toEqual([
      // model order is numeric-aware: 32k before 128k; non-batch before batch; input, cached, output.
      ['sim-pro-32k', false, 'all', null, 'input', 2_234_567, 800_000_000n, true, 1_787_653_600n, 179n],
      ['sim-pro-32k', false, 'all', null, 'cached_input', 500_000, 160_000_000n, true, 80_000_000n, 8n],
      ['sim-pro-32k', false, 'all', null, 'output', 251_000, 2_000_000_000n, true, 502_000_000n, 50n],
      ['sim-pro-32k', true, 'all', null, 'input', 100_000, 800_000_000n, true, 80_000_000n, 8n],
      ['sim-pro-32k', true, 'all', null, 'output', 10_000, 2_000_000_000n, true, 20_000_000n, 2n],
      ['sim-pro-128k', false, '0-32768', null, 'input', 3_000, 800_000_000n, true, 2_400_000n, 0n],
      ['sim-pro-128k', false, '0-32768', 'output<=200', 'output', 150, 2_000_000_000n, true, 300_000n, 0n],
      ['sim-pro-128k', false, '32769-131072', null, 'input', 40_000, 1_200_000_000n, true, 48_000_000n, 5n],
      ['sim-pro-128k', false, '32769-131072', null, 'output', 1_000, 16_000_000_000n, true, 16_000_000n, 2n],
      ['sim-pro-32k', 'batch_discount', -50_000_000n, -5n],
      ['sim-pro-32k', 'contract_discount', -241_965_360n, -24n],
      ['sim-pro-128k', 'off_peak_discount', -1_350_000n, 0n],
      ['sim-pro-128k', 'volume_discount', -6_400_000n, -1n], // −0.64 fen rounds to −1
      ['adjustment', 0n, 0n],
    ]);
    expect(invoice.totals.subtotalList).toEqual({ exact: 2_536_353_600n, rounded: 254n });
    expect(invoice.totals.discounts).toEqual({ exact: -299_715_360n, rounded: -30n });
    expect(invoice.totals.total).toEqual({ exact: 2_236_638_240n, rounded: 224n });
    expect(invoice.totals.roundingAdjustment).toBe(0n);
    expect(invoice.source).toEqual({ rollupRows: 5, requests: 21, ledgerAmount: 2_236_638_240n });
    const first = invoice.lines[0];
    expect(first?.kind === 'usage' && first.requests).toBe(15);
    expect(first?.description).toBe('sim-pro-32k, input tokens, tier all, price version 2026-01');
  });

  it('adds a rounding adjustment when the rounded lines miss the rounded total', () => {
    // Three lines of 0.004 each round to 0.00; their sum 0.012 rounds to 0.01.
    const rows = ['m-a', 'm-b', 'm-c'].map((model) => row({ model, inputTokens: 5_000, inputListAmount: 4_000_000n }));
    const invoice = buildInvoice({ tenant, currency: 'CNY', period: november, rows, transactions: [] });
    expect(invoice.lines.map((line) => line.amount.rounded)).toEqual([0n, 0n, 0n, 1n]);
    expect(invoice.lines.at(-1)?.kind).toBe('rounding_adjustment');
    expect(invoice.totals.total).toEqual({ exact: 12_000_000n, rounded: 1n });
    expect(invoice.totals.roundingAdjustment).toBe(1n);
  });

  it('rounds each line half to even', () => {
    const rows = [
      row({ model: 'a', inputTokens: 156_250, inputListAmount: 125_000_000n }), // 0.125 → 0.12
      row({ model: 'b', inputTokens: 168_750, inputListAmount: 135_000_000n }), // 0.135 → 0.14
      row({ model: 'c', inputTokens: 1, inputListAmount: 5_000_001n }), // 0.005000001 → 0.01
    ];
    const invoice = buildInvoice({
      tenant,
      currency: 'USD',
      period: november,
      rows: rows.map((r) => ({ ...r, currency: 'USD' })),
      transactions: [],
    });
    expect(invoice.lines.slice(0, 3).map((line) => line.amount.rounded)).toEqual([12n, 14n, 1n]);
    expect(roundNanoToMinor(-125_000_000n, 'CNY')).toBe(-12n);
    expect(roundNanoToMinor(-135_000_000n, 'CNY')).toBe(-14n);
    expect(roundNanoToMinor(4_999_999n, 'CNY')).toBe(0n);
  });

  it('flags a unit price that the per-request rounding makes inexact, and takes it from the price book', () => {
    const book = parsePriceBook({
      currency: 'CNY',
      versions: [
        {
          id: '2026-01',
          effective_from: '2026-01-01T00:00:00Z',
          models: {
            odd: {
              input: '0.8005',
              output: '8',
              output_conditions: [
                { max_output_tokens: 100, output: '1' },
                { max_output_tokens: 200, output: '2' },
              ],
            },
          },
        },
      ],
    });
    // One request of 3 tokens at 0.8005 per million: 2401.5 nano, written as 2402 (half-even).
    // One request of 150 output tokens under the ≤200 condition at 2 per million: 300,000 nano.
    const rows = [
      row({
        model: 'odd',
        outputCondition: 'output<=200',
        inputTokens: 3,
        inputListAmount: 2_402n,
        outputTokens: 150,
        outputListAmount: 300_000n,
      }),
    ];
    const derived = buildInvoice({ tenant, currency: 'CNY', period: november, rows, transactions: [] });
    const [input, output] = derived.lines;
    // 2402 × 1e6 / 3 = 800_666_666.67 → 800_666_667, not exact.
    expect(input?.kind === 'usage' && input.unitPrice).toEqual({
      perMillion: 800_666_667n,
      source: 'derived',
      exact: false,
    });
    expect(output?.kind === 'usage' && output.unitPrice).toEqual({
      perMillion: 2_000_000_000n,
      source: 'derived',
      exact: true,
    });
    const fromBook = buildInvoice({
      tenant,
      currency: 'CNY',
      period: november,
      rows,
      transactions: [],
      priceBook: book,
    });
    const [bookInput, bookOutput] = fromBook.lines;
    expect(bookInput?.kind === 'usage' && bookInput.unitPrice).toEqual({
      perMillion: 800_500_000n,
      source: 'price_book',
      exact: false,
    });
    // The label names the ≤200 condition, so the ≤100 one (1 per million) is not considered.
    expect(bookOutput?.kind === 'usage' && bookOutput.unitPrice).toEqual({
      perMillion: 2_000_000_000n,
      source: 'price_book',
      exact: true,
    });
    // The amounts stay the ledger's.
    expect(fromBook.totals.total.exact).toBe(302_402n);
  });

  it('lists credits apart from the charges and leaves the total alone', () => {
    const transactions: WalletTransactionRecord[] = [
      {
        id: 'wtx_2',
        tenantId: tenant.id,
        kind: 'refund',
        amount: 1_005_000_000n, // 1.005 → 1.00 (half-even)
        currency: 'CNY',
        idempotencyKey: null,
        note: 'goodwill',
        createdAt: NOV + 5 * DAY,
      },
      {
        id: 'wtx_1',
        tenantId: tenant.id,
        kind: 'topup',
        amount: 100_000_000_000n,
        currency: 'CNY',
        idempotencyKey: 'k1',
        note: null,
        createdAt: NOV + DAY,
      },
    ];
    const withCredits = buildInvoice({ tenant, currency: 'CNY', period: november, rows: handRows, transactions });
    const without = buildInvoice({ tenant, currency: 'CNY', period: november, rows: handRows, transactions: [] });
    expect(withCredits.totals).toEqual(without.totals);
    expect(withCredits.lines).toEqual(without.lines);
    expect(withCredits.balanceMovements.items.map((item) => [item.id, item.amount.rounded])).toEqual([
      ['wtx_1', 10_000n],
      ['wtx_2', 100n],
    ]);
    expect(withCredits.balanceMovements.total).toEqual({ exact: 101_005_000_000n, rounded: 10_100n });
  });

  it('gives the same invoice when regenerated, whatever the row order', () => {
    const first = buildInvoice({ tenant, currency: 'CNY', period: november, rows: handRows, transactions: [] });
    const second = buildInvoice({
      tenant,
      currency: 'CNY',
      period: november,
      rows: [...handRows].reverse(),
      transactions: [],
    });
    expect(second).toEqual(first);
  });

  it('refuses rows that would not add up to the ledger or do not belong', () => {
    const build = (rows: BillingRollupRow[]) =>
      buildInvoice({ tenant, currency: 'CNY', period: november, rows, transactions: [] });
    expect(() => build([row({ inputTokens: 1, inputListAmount: 800n, amount: 801n })])).toThrow(InvoiceInputError);
    expect(() => build([row({ tenantId: 'ten_other' })])).toThrow(/tenant/);
    expect(() => build([row({ currency: 'USD' })])).toThrow(/currency/);
    expect(() => build([row({ day: DEC })])).toThrow(/outside the period/);
    expect(() => build([row({ inputTokens: 0, inputListAmount: 5n })])).toThrow(/zero tokens/);
    expect(() => build([row({ inputTokens: 1, inputListAmount: 10n, batchDiscount: 5n })])).toThrow(/positive/);
    expect(() => buildInvoice({ tenant, currency: 'EUR', period: november, rows: [], transactions: [] })).toThrow(
      /currency/,
    );
  });
});

describe('invoice ids', () => {
  it('names calendar months and hashes other periods', () => {
    expect(calendarMonthOf({ start: Date.UTC(2026, 11, 1), end: Date.UTC(2027, 0, 1) })).toBe('2026-12');
    expect(calendarMonthOf({ start: NOV, end: DEC - 1 })).toBeNull();
    expect(invoiceIdFor('ten_abc', { start: Date.UTC(2026, 11, 1), end: Date.UTC(2027, 0, 1) })).toBe(
      'inv_ten_abc_202612',
    );
    const custom = invoiceIdFor('ten_abc', { start: NOV, end: NOV + 7 * DAY });
    expect(custom).toMatch(/^inv_ten_abc_[0-9a-f]{16}$/);
    expect(invoiceIdFor('ten_abc', { start: NOV, end: NOV + 7 * DAY })).toBe(custom);
    expect(invoiceIdFor('ten_abc', { start: NOV, end: NOV + 8 * DAY })).not.toBe(custom);
    expect(invoiceIdFor('ten/../x', november)).toMatch(/^inv_t[0-9a-f]{16}_202611$/);
  });
});

describe('invoice property', () => {
  const nano = (max: bigint) => fc.bigInt({ min: 0n, max });
  const rowArbitrary = fc
    .record({
      model: fc.constantFrom('m-a', 'm-b', 'sim-pro-32k', 'x,"y"'),
      tier: fc.constantFrom('all', '0-32768', '32769-131072'),
      outputCondition: fc.constantFrom(null, 'output<=200'),
      batch: fc.boolean(),
      priceVersion: fc.constantFrom('2026-01', '2026-07'),
      day: fc.integer({ min: 0, max: 29 }),
      requests: fc.integer({ min: 1, max: 1000 }),
      inputTokens: fc.integer({ min: 1, max: 10_000_000 }),
      cachedTokens: fc.integer({ min: 1, max: 10_000_000 }),
      outputTokens: fc.integer({ min: 1, max: 10_000_000 }),
      inputListAmount: nano(50_000_000_000n),
      cachedListAmount: nano(50_000_000_000n),
      outputListAmount: nano(50_000_000_000n),
      // Fractions of the list amount taken off, in 1e-4, kept ≤ 100% in total so the amount stays ≥ 0.
      cuts: fc.tuple(
        fc.integer({ min: 0, max: 2500 }),
        fc.integer({ min: 0, max: 2500 }),
        fc.integer({ min: 0, max: 2500 }),
        fc.integer({ min: 0, max: 2500 }),
      ),
    })
    .map(({ cuts, day, ...fields }) => {
      const list = fields.inputListAmount + fields.cachedListAmount + fields.outputListAmount;
      const [batchCut, offPeakCut, contractCut, volumeCut] = cuts.map((cut) => -((list * BigInt(cut)) / 10_000n));
      return row({
        ...fields,
        day: NOV + day * DAY,
        batchDiscount: batchCut,
        offPeakDiscount: offPeakCut,
        contractDiscount: contractCut,
        volumeDiscount: volumeCut,
      });
    });

  it('lines add up to the ledger exactly and the rounded lines to the rounded total', () => {
    fc.assert(
      fc.property(fc.array(rowArbitrary, { maxLength: 40 }), fc.constantFrom('CNY', 'USD'), (rows, currency) => {
        const inCurrency = rows.map((r) => ({ ...r, currency }));
        const invoice: Invoice = buildInvoice({
          tenant,
          currency,
          period: november,
          rows: inCurrency,
          transactions: [],
        });
        const ledger = inCurrency.reduce((sum, r) => sum + r.amount, 0n);
        expect(ledger >= 0n).toBe(true);
        const exact = invoice.lines.reduce((sum, line) => sum + line.amount.exact, 0n);
        expect(exact).toBe(ledger);
        expect(invoice.totals.total.exact).toBe(ledger);
        // Independent half-even rounding of the ledger to cents: 1 cent = 1e7 nano.
        const cents = ledger / 10_000_000n;
        const remainder = ledger % 10_000_000n;
        const expectedTotal =
          remainder > 5_000_000n || (remainder === 5_000_000n && cents % 2n === 1n) ? cents + 1n : cents;
        expect(invoice.totals.total.rounded).toBe(expectedTotal);
        const rounded = invoice.lines.reduce((sum, line) => sum + line.amount.rounded, 0n);
        expect(rounded).toBe(expectedTotal);
        // Without the adjustment, each of the n lines is off by at most half a cent: |Σ rounded − exact| ≤ n/2 cents.
        const charges = invoice.lines.filter((line) => line.kind !== 'rounding_adjustment');
        const roundedCharges = charges.reduce((sum, line) => sum + line.amount.rounded, 0n);
        const gap = roundedCharges * 10_000_000n - ledger;
        expect(2n * (gap < 0n ? -gap : gap) <= BigInt(charges.length) * 10_000_000n).toBe(true);
        const adjustment = invoice.totals.roundingAdjustment;
        expect(2n * (adjustment < 0n ? -adjustment : adjustment) <= BigInt(charges.length + 1)).toBe(true);
        expect(invoice.totals.subtotalList.rounded + invoice.totals.discounts.rounded + adjustment).toBe(
          invoice.totals.total.rounded,
        );
      }),
      { numRuns: 300 },
    );
  });
});
