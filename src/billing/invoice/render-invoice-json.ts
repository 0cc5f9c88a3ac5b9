/**
 * The JSON form of an invoice (the body of `GET /v1/billing/invoices/{id}`): snake_case, and every amount as a
 * decimal string so no bigint or binary float touches money — `amount_exact` in currency units to the nano-unit
 * (`"0.000123456"`, shortest exact form), `amount` with all the currency's minor digits (`"12.30"`).
 */

import { assertNever } from '../../errors/assert-never.js';
import { formatDecimal, formatMinor, formatPrice } from '../../pricing/money.js';
import type { Invoice, InvoiceLine, InvoiceMoney } from './build-invoice.js';
import { NANO_DECIMALS } from './build-invoice.js';

/** An amount as JSON: exact (nano precision) and rounded to the minor unit, both decimal strings of the currency unit. */
export interface InvoiceMoneyJson {
  amount_exact: string;
  amount: string;
}

/** One invoice line as JSON; fields that do not apply to the line's kind are null. */
export interface InvoiceLineJson extends InvoiceMoneyJson {
  kind: InvoiceLine['kind'];
  description: string;
  model: string | null;
  batch: boolean | null;
  price_version: string | null;
  tier: string | null;
  output_condition: string | null;
  token_class: string | null;
  modifier: string | null;
  /** Tokens. */
  quantity: number | null;
  requests: number | null;
  /** Currency units per million tokens. */
  unit_price_per_million: string | null;
  unit_price_source: 'price_book' | 'derived' | null;
  unit_price_exact: boolean | null;
}

/** The JSON document of an invoice. */
export interface InvoiceJson {
  object: 'invoice';
  id: string;
  tenant: { id: string; name: string };
  currency: string;
  /** ISO 8601, UTC; `[start, end)`. */
  period: { start: string; end: string; calendar_month: string | null };
  issued_at: string;
  lines: InvoiceLineJson[];
  totals: {
    subtotal_list: InvoiceMoneyJson;
    discounts: InvoiceMoneyJson;
    rounding_adjustment: string;
    /** Tax-free. */
    total: InvoiceMoneyJson;
  };
  balance_movements: {
    items: (InvoiceMoneyJson & { id: string; kind: string; created_at: string; note: string | null })[];
    total: InvoiceMoneyJson;
  };
  rounding_rule: string;
}

/** The rule printed on every invoice. */
export const ROUNDING_RULE =
  'Each line is rounded once, half to even, to the minor unit of the currency. The tax-free total is the exact sum of ' +
  'all lines rounded the same way; the rounding adjustment line makes the rounded lines add up to it. Credits are ' +
  'payments and are not part of the total.';

function moneyJson(amount: InvoiceMoney, currency: Invoice['currency']): InvoiceMoneyJson {
  return { amount_exact: formatDecimal(amount.exact, NANO_DECIMALS), amount: formatMinor(amount.rounded, currency) };
}

function lineJson(line: InvoiceLine, currency: Invoice['currency']): InvoiceLineJson {
  const empty = {
    model: null,
    batch: null,
    price_version: null,
    tier: null,
    output_condition: null,
    token_class: null,
    modifier: null,
    quantity: null,
    requests: null,
    unit_price_per_million: null,
    unit_price_source: null,
    unit_price_exact: null,
  };
  switch (line.kind) {
    case 'usage':
      return {
        kind: line.kind,
        description: line.description,
        ...empty,
        model: line.model,
        batch: line.batch,
        price_version: line.priceVersion,
        tier: line.tier,
        output_condition: line.outputCondition,
        token_class: line.tokenClass,
        quantity: line.quantity,
        requests: line.requests,
        unit_price_per_million: formatPrice(line.unitPrice.perMillion),
        unit_price_source: line.unitPrice.source,
        unit_price_exact: line.unitPrice.exact,
        ...moneyJson(line.amount, currency),
      };
    case 'modifier':
      return {
        kind: line.kind,
        description: line.description,
        ...empty,
        model: line.model,
        modifier: line.modifier,
        ...moneyJson(line.amount, currency),
      };
    case 'rounding_adjustment':
      return { kind: line.kind, description: line.description, ...empty, ...moneyJson(line.amount, currency) };
    default:
      return assertNever(line);
  }
}

/** The invoice as a JSON-safe object (no bigint). */
export function invoiceToJson(invoice: Invoice): InvoiceJson {
  const { currency } = invoice;
  return {
    object: 'invoice',
    id: invoice.id,
    tenant: { id: invoice.tenant.id, name: invoice.tenant.name },
    currency,
    period: {
      start: new Date(invoice.period.start).toISOString(),
      end: new Date(invoice.period.end).toISOString(),
      calendar_month: invoice.calendarMonth,
    },
    issued_at: new Date(invoice.issuedAt).toISOString(),
    lines: invoice.lines.map((line) => lineJson(line, currency)),
    totals: {
      subtotal_list: moneyJson(invoice.totals.subtotalList, currency),
      discounts: moneyJson(invoice.totals.discounts, currency),
      rounding_adjustment: formatMinor(invoice.totals.roundingAdjustment, currency),
      total: moneyJson(invoice.totals.total, currency),
    },
    balance_movements: {
      items: invoice.balanceMovements.items.map((item) => ({
        id: item.id,
        kind: item.kind,
        created_at: new Date(item.createdAt).toISOString(),
        note: item.note,
        ...moneyJson(item.amount, currency),
      })),
      total: moneyJson(invoice.balanceMovements.total, currency),
    },
    rounding_rule: ROUNDING_RULE,
  };
}

/** The invoice as JSON text (2-space indented, stable key order). */
export function renderInvoiceJson(invoice: Invoice): string {
  return `${JSON.stringify(invoiceToJson(invoice), null, 2)}\n`;
}
