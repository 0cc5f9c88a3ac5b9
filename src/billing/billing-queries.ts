/**
 * Read side of billing for the tenant and admin APIs: balances, usage pages from rollups, invoices built from
 * billing rollups and wallet transactions (never from raw events), margins. Tenant isolation lives here: every
 * tenant-facing query takes the caller's tenant id, and an invoice id of another tenant is "not found".
 */
import { NotFoundError } from '../errors/gateway-error.js';
import { type Currency, formatMinor } from '../pricing/money.js';
import type { BillingRollupRow, LedgerStore, WalletTransactionRecord } from '../store/ledger-store.js';
import type { Store } from '../store/store.js';
import type { BillingService } from './billing-service.js';
import { nextMonthStart } from './billing-service.js';
import { buildInvoice, type Invoice } from './invoice/build-invoice.js';
import { checkInvoiceMonth, isInvoiceMonth } from './invoice/invoice-month.js';
import { formatNano } from './nano.js';
import { buildMarginReport } from './usage-report/build-margin-report.js';
import { buildUsagePage } from './usage-report/build-usage-page.js';
import { parseUsageQuery, usageRollupQueryFor } from './usage-report/parse-usage-query.js';

const invoiceIdPattern = /^inv_(.+)_(\d{4})(\d{2})$/;

/** A tenant's balance as the API shows it. */
export interface BalanceView {
  object: 'billing.balance';
  tenant_id: string;
  currency: string;
  mode: string;
  /** Σ credits − Σ charges, currency units. */
  balance: string;
  /** Held for requests in flight. */
  reserved: string;
  credit_limit: string;
  /** What new requests may still reserve: balance + credit limit − reserved. */
  available: string;
}

/** Options of `BillingQueries`. */
export interface BillingQueriesOptions {
  /** The time, ms since the epoch (the default end of usage periods and invoice lists). Default `Date.now`. */
  clock?: () => number;
  /**
   * Awaited before every read: resolves once every request that ended before the call is in the store. A gateway
   * whose responses do not wait for their commit (a settlement journal) passes its writer's `flushed`, so a tenant
   * sees its own last request. Default: none.
   */
  settled?: () => Promise<void>;
}

/** Billing reads. */
export class BillingQueries {
  private readonly clock: () => number;
  private readonly settled: (() => Promise<void>) | undefined;

  constructor(
    private readonly store: Store & LedgerStore,
    private readonly billing: BillingService,
    options: BillingQueriesOptions = {},
  ) {
    this.clock = options.clock ?? Date.now;
    this.settled = options.settled;
  }

  async balance(tenantId: string): Promise<BalanceView> {
    await this.settled?.();
    const wallet = await this.store.getWallet(tenantId);
    const balance = wallet?.balance ?? 0n;
    const reserved = wallet?.reserved ?? 0n;
    const creditLimit = wallet?.creditLimit ?? 0n;
    return {
      object: 'billing.balance',
      tenant_id: tenantId,
      currency: wallet?.currency ?? this.billing.currency,
      mode: wallet?.mode ?? 'prepaid',
      balance: formatNano(balance),
      reserved: formatNano(reserved),
      credit_limit: formatNano(creditLimit),
      available: formatNano(balance + creditLimit - reserved),
    };
  }

  /** `GET /v1/usage` for one tenant. */
  async usage(tenantId: string, rawQuery: Record<string, unknown>) {
    const query = parseUsageQuery(rawQuery, this.clock());
    await this.settled?.();
    return buildUsagePage(await this.store.queryUsageRollups(usageRollupQueryFor(query, tenantId)), query);
  }

  /** The invoice of a calendar month (`YYYY-MM`) or of an invoice id; another tenant's id is not found. */
  async invoice(tenantId: string, idOrMonth: string): Promise<Invoice> {
    checkInvoiceMonth(idOrMonth);
    const month = monthOfInvoice(tenantId, idOrMonth);
    const tenant = await this.store.getTenant(tenantId);
    if (tenant === undefined || month === undefined) throw invoiceNotFound(idOrMonth);
    const { start, end } = monthPeriod(month);
    await this.settled?.();
    const [rows, transactions] = await Promise.all([
      this.store.queryBillingRollups({ tenantId, start, end }),
      this.store.listWalletTransactions(tenantId, { start, end }),
    ]);
    return this.monthInvoice(tenant, month, rows, transactions);
  }

  /**
   * The invoices of every month with ledger activity (usage or wallet transactions) over the current and the two
   * previous calendar years, newest first, as summaries. Each is built as `invoice` builds it, so `amount_due` is
   * that invoice's total (rounded to the minor unit) and a month with only top-ups is listed with `0.00` due.
   */
  async listInvoices(tenantId: string) {
    const now = this.clock();
    const start = Date.UTC(new Date(now).getUTCFullYear() - 2, 0, 1);
    const tenant = await this.store.getTenant(tenantId);
    if (tenant === undefined) return [];
    await this.settled?.();
    const [rows, transactions] = await Promise.all([
      this.store.queryBillingRollups({ tenantId, start, end: now + 1 }),
      this.store.listWalletTransactions(tenantId, { start, end: now + 1 }),
    ]);
    const months = new Map<string, { rows: BillingRollupRow[]; transactions: WalletTransactionRecord[] }>();
    const activityOf = (at: number) => {
      const month = new Date(at).toISOString().slice(0, 7);
      let activity = months.get(month);
      if (activity === undefined) {
        activity = { rows: [], transactions: [] };
        months.set(month, activity);
      }
      return activity;
    };
    for (const row of rows) activityOf(row.day).rows.push(row);
    for (const transaction of transactions) activityOf(transaction.createdAt).transactions.push(transaction);
    const currentMonth = new Date(now).toISOString().slice(0, 7);
    return [...months.entries()]
      .sort(([a], [b]) => (a < b ? 1 : -1))
      .map(([month, activity]) => {
        const invoice = this.monthInvoice(tenant, month, activity.rows, activity.transactions);
        return {
          id: invoice.id,
          object: 'invoice',
          period: month,
          currency: invoice.currency,
          status: month === currentMonth ? 'open' : 'closed',
          amount_due: formatMinor(invoice.totals.total.rounded, invoice.currency),
        };
      });
  }

  /** The invoice of one calendar month from its rollups and wallet transactions (the one place both build it). */
  private monthInvoice(
    tenant: { id: string; name: string },
    month: string,
    rows: readonly BillingRollupRow[],
    transactions: readonly WalletTransactionRecord[],
  ): Invoice {
    return buildInvoice({
      tenant: { id: tenant.id, name: tenant.name },
      currency: this.billing.currency as Currency,
      period: monthPeriod(month),
      rows,
      transactions,
    });
  }

  /** Revenue, cost and margin per model over a period (admin). */
  async margin(start: number, end: number) {
    await this.settled?.();
    return buildMarginReport(await this.store.queryBillingRollups({ start, end }));
  }
}

function monthPeriod(month: string): { start: number; end: number } {
  const start = Date.parse(`${month}-01T00:00:00Z`);
  return { start, end: nextMonthStart(start) };
}

function monthOfInvoice(tenantId: string, idOrMonth: string): string | undefined {
  if (isInvoiceMonth(idOrMonth)) return idOrMonth;
  const match = invoiceIdPattern.exec(idOrMonth);
  if (match === null || match[1] !== tenantId) return undefined;
  const month = `${match[2]}-${match[3]}`;
  return isInvoiceMonth(month) ? month : undefined;
}

function invoiceNotFound(id: string): NotFoundError {
  return new NotFoundError(`No invoice with id '${id}'.`, 'invoice_not_found');
}
