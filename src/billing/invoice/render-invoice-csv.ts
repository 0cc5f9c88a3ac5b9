/**
 * The CSV form of an invoice (RFC 4180): a header row, then one row per invoice line (`section` = `charge`), one per
 * total (`total`) and one per balance movement (`credit`), CRLF line ends. Fields holding a comma, quote, CR or LF
 * are quoted with inner quotes doubled. Text fields that a spreadsheet would read as a formula (starting with `=`,
 * `+`, `-`, `@`, tab or CR) get a leading `'` (OWASP's CSV-injection advice); numeric fields are left as they are.
 */
import type { Invoice } from './build-invoice.js';
import { invoiceToJson } from './render-invoice-json.js';

/** Columns, in order. */
export const INVOICE_CSV_COLUMNS = [
  'section',
  'kind',
  'description',
  'model',
  'batch',
  'price_version',
  'tier',
  'output_condition',
  'token_class',
  'modifier',
  'quantity',
  'unit_price_per_million',
  'unit_price_exact',
  'amount_exact',
  'amount',
  'currency',
] as const;

type Column = (typeof INVOICE_CSV_COLUMNS)[number];
type CsvRow = Partial<Record<Column, string | number | boolean | null>>;

const TEXT_COLUMNS: ReadonlySet<Column> = new Set([
  'kind',
  'description',
  'model',
  'price_version',
  'tier',
  'output_condition',
  'token_class',
  'modifier',
]);

/** One RFC 4180 field. */
export function csvField(value: string | number | boolean | null | undefined, text = true): string {
  if (value === null || value === undefined) return '';
  let field = String(value);
  if (text && /^[=+\-@\t\r]/.test(field)) field = `'${field}`;
  return /[",\r\n]/.test(field) ? `"${field.replaceAll('"', '""')}"` : field;
}

/** The invoice as CSV text. */
export function renderInvoiceCsv(invoice: Invoice): string {
  const json = invoiceToJson(invoice);
  const rows: CsvRow[] = [];
  for (const line of json.lines) {
    rows.push({ section: 'charge', ...line, currency: json.currency });
  }
  const totals = json.totals;
  rows.push({
    section: 'total',
    kind: 'subtotal_list',
    description: 'Subtotal at list prices',
    ...totals.subtotal_list,
  });
  rows.push({ section: 'total', kind: 'discounts', description: 'Discounts', ...totals.discounts });
  rows.push({
    section: 'total',
    kind: 'rounding_adjustment',
    description: 'Rounding adjustment',
    amount_exact: '0',
    amount: totals.rounding_adjustment,
  });
  rows.push({ section: 'total', kind: 'total', description: 'Total (tax-free)', ...totals.total });
  for (const item of json.balance_movements.items) {
    rows.push({
      section: 'credit',
      kind: item.kind,
      description: `${item.created_at} ${item.id}${item.note === null ? '' : `: ${item.note}`}`,
      amount_exact: item.amount_exact,
      amount: item.amount,
    });
  }
  const lines = [INVOICE_CSV_COLUMNS.join(',')];
  for (const row of rows) {
    lines.push(
      INVOICE_CSV_COLUMNS.map((column) =>
        csvField(column === 'currency' ? json.currency : row[column], TEXT_COLUMNS.has(column)),
      ).join(','),
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}
