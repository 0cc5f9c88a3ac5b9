/**
 * The printable HTML form of an invoice: one self-contained page (inline CSS with print styles, no script, no
 * external resource). Every interpolated value goes through `escapeHtml`, including numbers, so a tenant name or a
 * note cannot inject markup.
 */
import type { Invoice } from './build-invoice.js';
import { type InvoiceLineJson, invoiceToJson } from './render-invoice-json.js';

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text safe in HTML element content and in quoted attribute values. */
export function escapeHtml(value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined) return '';
  return String(value).replace(/[&<>"']/g, (character) => ESCAPES[character] ?? character);
}

const STYLE = `
  :root { color-scheme: light; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; margin: 2rem auto; max-width: 64rem; padding: 0 1rem; }
  h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
  h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
  .meta { color: #444; margin: 0 0 1.5rem; }
  .meta dt { font-weight: 600; float: left; clear: left; width: 9rem; }
  .meta dd { margin: 0 0 .2rem 9rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { padding: .35rem .5rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
  th { background: #f4f4f4; font-weight: 600; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  tr.total td { font-weight: 700; border-top: 2px solid #111; }
  .exact { color: #666; font-size: .85em; }
  .note { color: #444; font-size: .85rem; margin-top: 1.5rem; }
  @media print {
    body { margin: 0; max-width: none; font-size: 11px; }
    th { background: none; }
    tr { page-break-inside: avoid; }
    thead { display: table-header-group; }
  }
`;

function usageCells(line: InvoiceLineJson): string {
  if (line.kind !== 'usage') return '<td class="num"></td><td class="num"></td>';
  const approximate = line.unit_price_exact === true ? '' : ' <span class="exact">(avg.)</span>';
  return (
    `<td class="num">${escapeHtml(line.quantity)}</td>` +
    `<td class="num">${escapeHtml(line.unit_price_per_million)}${approximate}</td>`
  );
}

/** The invoice as a printable, self-contained HTML page. */
export function renderInvoiceHtml(invoice: Invoice): string {
  const json = invoiceToJson(invoice);
  const currency = escapeHtml(json.currency);
  const lineRows = json.lines
    .map(
      (line) =>
        `<tr><td>${escapeHtml(line.description)}</td>${usageCells(line)}` +
        `<td class="num">${escapeHtml(line.amount)}<br><span class="exact">${escapeHtml(line.amount_exact)}</span></td></tr>`,
    )
    .join('\n');
  const totals = json.totals;
  const totalRow = (label: string, amount: string, exact: string, className = '') =>
    `<tr${className === '' ? '' : ` class="${escapeHtml(className)}"`}><td colspan="3">${escapeHtml(label)}</td>` +
    `<td class="num">${escapeHtml(amount)}<br><span class="exact">${escapeHtml(exact)}</span></td></tr>`;
  const movements =
    json.balance_movements.items.length === 0
      ? '<p>No credits or adjustments in this period.</p>'
      : `<table>
<thead><tr><th>Date (UTC)</th><th>Kind</th><th>Reference</th><th>Note</th><th class="num">Amount (${currency})</th></tr></thead>
<tbody>
${json.balance_movements.items
  .map(
    (item) =>
      `<tr><td>${escapeHtml(item.created_at)}</td><td>${escapeHtml(item.kind)}</td><td>${escapeHtml(item.id)}</td>` +
      `<td>${escapeHtml(item.note)}</td><td class="num">${escapeHtml(item.amount)}</td></tr>`,
  )
  .join('\n')}
<tr class="total"><td colspan="4">Total balance movements</td><td class="num">${escapeHtml(json.balance_movements.total.amount)}</td></tr>
</tbody>
</table>`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Invoice ${escapeHtml(json.id)} — ${escapeHtml(json.tenant.name)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Invoice ${escapeHtml(json.id)}</h1>
<dl class="meta">
<dt>Customer</dt><dd>${escapeHtml(json.tenant.name)} (${escapeHtml(json.tenant.id)})</dd>
<dt>Period (UTC)</dt><dd>${escapeHtml(json.period.start)} – ${escapeHtml(json.period.end)}</dd>
<dt>Issued</dt><dd>${escapeHtml(json.issued_at)}</dd>
<dt>Currency</dt><dd>${currency}</dd>
</dl>
<h2>Charges</h2>
<table>
<thead><tr><th>Description</th><th class="num">Tokens</th><th class="num">Unit price per 1M</th><th class="num">Amount (${currency})</th></tr></thead>
<tbody>
${lineRows}
${totalRow('Subtotal at list prices', totals.subtotal_list.amount, totals.subtotal_list.amount_exact)}
${totalRow('Discounts', totals.discounts.amount, totals.discounts.amount_exact)}
${totalRow('Rounding adjustment', totals.rounding_adjustment, '0')}
${totalRow('Total (tax-free)', totals.total.amount, totals.total.amount_exact, 'total')}
</tbody>
</table>
<h2>Balance movements</h2>
${movements}
<p class="note">${escapeHtml(json.rounding_rule)} Exact amounts (grey) are in ${currency} to 1e-9.</p>
</body>
</html>
`;
}
