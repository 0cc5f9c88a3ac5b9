import { describe, expect, it } from 'vitest';
import type { BillingRollupRow, WalletTransactionRecord } from '../../store/ledger-store.js';
import { buildInvoice, type Invoice } from './build-invoice.js';
import { csvField, INVOICE_CSV_COLUMNS, renderInvoiceCsv } from './render-invoice-csv.js';
import { escapeHtml, renderInvoiceHtml } from './render-invoice-html.js';
import { invoiceToJson, renderInvoiceJson } from './render-invoice-json.js';

const NOV = Date.UTC(2026, 10, 1);
const DEC = Date.UTC(2026, 11, 1);

function row(model: string, overrides: Partial<BillingRollupRow> = {}): BillingRollupRow {
  return {
    day: NOV,
    tenantId: 'ten_x',
    model,
    currency: 'CNY',
    priceVersion: '2026-01',
    tier: 'all',
    outputCondition: null,
    batch: false,
    requests: 2,
    inputTokens: 154_321,
    cachedTokens: 0,
    outputTokens: 0,
    inputListAmount: 123_456_800n, // 154,321 × 0.8 per million = 0.1234568
    cachedListAmount: 0n,
    outputListAmount: 0n,
    batchDiscount: 0n,
    offPeakDiscount: 0n,
    contractDiscount: -12_345_680n,
    volumeDiscount: 0n,
    amount: 111_111_120n,
    cost: 0n,
    ...overrides,
  };
}

const transaction: WalletTransactionRecord = {
  id: 'wtx_1',
  tenantId: 'ten_x',
  kind: 'adjustment',
  amount: -2_500_000n,
  currency: 'CNY',
  idempotencyKey: null,
  note: '=HYPERLINK("http://evil") <b>',
  createdAt: NOV + 1000,
};

function invoice(name = 'X Ltd', model = 'sim-pro-32k'): Invoice {
  return buildInvoice({
    tenant: { id: 'ten_x', name },
    currency: 'CNY',
    period: { start: NOV, end: DEC },
    rows: [row(model)],
    transactions: [transaction],
  });
}

/** A minimal RFC 4180 reader, to check the writer independently. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let field = '';
  let current: string[] = [];
  let quoted = false;
  for (let index = 0; index < text.length; index += 1) {
    const character = text[index]!;
    if (quoted) {
      if (character === '"' && text[index + 1] === '"') {
        field += '"';
        index += 1;
      } else if (character === '"') quoted = false;
      else field += character;
    } else if (character === '"') quoted = true;
    else if (character === ',') {
      current.push(field);
      field = '';
    } else if (character === '\r' && text[index + 1] === '\n') {
      current.push(field);
      rows.push(current);
      current = [];
      field = '';
      index += 1;
    } else field += character;
  }
  return rows;
}

describe('renderInvoiceJson', () => {
  it('writes amounts as decimal strings and nothing as a bigint', () => {
    const json = invoiceToJson(invoice());
    expect(json.id).toBe('inv_ten_x_202611');
    expect(json.period).toEqual({
      start: '2026-11-01T00:00:00.000Z',
      end: '2026-12-01T00:00:00.000Z',
      calendar_month: '2026-11',
    });
    expect(json.lines[0]).toMatchObject({
      kind: 'usage',
      token_class: 'input',
      quantity: 154_321,
      unit_price_per_million: '0.8',
      unit_price_exact: true,
      amount_exact: '0.1234568',
      amount: '0.12',
    });
    expect(json.lines[1]).toMatchObject({
      kind: 'modifier',
      modifier: 'contract_discount',
      amount_exact: '-0.01234568',
      amount: '-0.01',
    });
    // 0.1111112 rounds to 0.11; the lines round to 0.12 − 0.01 = 0.11: no adjustment.
    expect(json.totals.total).toEqual({ amount_exact: '0.11111112', amount: '0.11' });
    expect(json.totals.rounding_adjustment).toBe('0.00');
    expect(json.balance_movements.items[0]).toMatchObject({ amount_exact: '-0.0025', amount: '0.00' });
    const text = renderInvoiceJson(invoice());
    expect(JSON.parse(text)).toEqual(json);
    expect(text).toBe(renderInvoiceJson(invoice()));
  });
});

describe('renderInvoiceCsv', () => {
  it('quotes odd model names and reads back to the same fields', () => {
    const model = 'acme/"fast",v2\nbeta';
    const csv = renderInvoiceCsv(invoice('X Ltd', model));
    expect(csv.startsWith(`${INVOICE_CSV_COLUMNS.join(',')}\r\n`)).toBe(true);
    expect(csv).toContain('"acme/""fast"",v2\nbeta"');
    const rows = parseCsv(csv);
    expect(rows[0]).toEqual([...INVOICE_CSV_COLUMNS]);
    for (const parsed of rows) expect(parsed).toHaveLength(INVOICE_CSV_COLUMNS.length);
    const column = (name: (typeof INVOICE_CSV_COLUMNS)[number]) => INVOICE_CSV_COLUMNS.indexOf(name);
    const usage = rows[1]!;
    expect(usage[column('section')]).toBe('charge');
    expect(usage[column('model')]).toBe(model);
    expect(usage[column('quantity')]).toBe('154321');
    expect(usage[column('amount')]).toBe('0.12');
    expect(usage[column('amount_exact')]).toBe('0.1234568');
    // Lines (usage, contract, adjustment), four totals, one credit.
    expect(rows.slice(1).map((parsed) => parsed[column('section')])).toEqual([
      'charge',
      'charge',
      'charge',
      'total',
      'total',
      'total',
      'total',
      'credit',
    ]);
    const total = rows.find((parsed) => parsed[column('kind')] === 'total')!;
    expect(total[column('amount')]).toBe('0.11');
    // Negative amounts stay numbers; a note that looks like a formula is neutralized.
    expect(rows[2]![column('amount_exact')]).toBe('-0.01234568');
    expect(rows.at(-1)![column('description')]).toMatch(/^'?2026-11-01T00:00:01.000Z wtx_1: =HYPERLINK/);
    expect(csv).toBe(renderInvoiceCsv(invoice('X Ltd', model)));
  });

  it('escapes fields by RFC 4180 and neutralizes formulas in text', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('=1+1')).toBe("'=1+1");
    expect(csvField('-0.5', false)).toBe('-0.5');
    expect(csvField(null)).toBe('');
  });
});

describe('renderInvoiceHtml', () => {
  it('escapes every interpolated value', () => {
    const html = renderInvoiceHtml(invoice('<script>alert("x")</script> & Co', 'm<i>'));
    expect(html).not.toContain('<script>');
    expect(html).not.toContain('<i>');
    expect(html).not.toContain('<b>');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co');
    expect(html).toContain('m&lt;i&gt;');
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain('@media print');
    // Self-contained: no external resource or script.
    expect(html).not.toMatch(/<(script|link|img)\b/i);
    expect(html).not.toMatch(/https?:\/\/(?!evil)/);
    expect(html).toContain('0.11');
    expect(html).toBe(renderInvoiceHtml(invoice('<script>alert("x")</script> & Co', 'm<i>')));
  });

  it('escapes the five HTML specials', () => {
    expect(escapeHtml(`<a href="x" title='y'>&</a>`)).toBe(
      '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;',
    );
  });
});
