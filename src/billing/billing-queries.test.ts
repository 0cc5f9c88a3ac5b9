import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { settlementOf, topUpFixture, usageEventFixture } from '../store/ledger-fixtures.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import { BillingQueries } from './billing-queries.js';
import { BillingService } from './billing-service.js';
import { invoiceToJson } from './invoice/render-invoice-json.js';

describe('BillingQueries.listInvoices', () => {
  const store = openSqliteStore(':memory:');
  afterAll(() => store.close());

  it('lists every month with ledger activity, each with the total of the invoice it names', async () => {
    await store.migrate();
    const tenant = await store.createTenant('invoiced');
    const usage = (requestId: string, receivedAt: number, inputListAmount: bigint) =>
      settlementOf(
        usageEventFixture({ requestId, tenantId: tenant.id, receivedAt, inputTokens: 1000, inputListAmount }),
      );
    // October: usage of 12.345678901 CNY, which the invoice rounds to 12.35 once.
    await store.settle([
      usage('req_1', Date.UTC(2026, 9, 3, 12), 12_000_000_000n),
      usage('req_2', Date.UTC(2026, 9, 30, 12), 345_678_901n),
    ]);
    // November: a top-up and no usage. September: a top-up and usage that rounds to 0.00.
    await store.addWalletTransaction({ ...topUpFixture(tenant.id, 5_000_000_000n), createdAt: Date.UTC(2026, 10, 20) });
    await store.addWalletTransaction({ ...topUpFixture(tenant.id, 20_000_000_000n), createdAt: Date.UTC(2026, 8, 1) });
    await store.settle([usage('req_0', Date.UTC(2026, 8, 2), 4_000_000n)]);

    const billing = new BillingService(store, { priceBook: undefined, logger: pino({ level: 'silent' }) });
    const queries = new BillingQueries(store, billing, { clock: () => Date.UTC(2026, 11, 15) });
    const listed = await queries.listInvoices(tenant.id);
    expect(listed.map((entry) => [entry.period, entry.status, entry.amount_due])).toEqual([
      ['2026-11', 'closed', '0.00'],
      ['2026-10', 'closed', '12.35'],
      ['2026-09', 'closed', '0.00'],
    ]);
    for (const entry of listed) {
      const invoice = invoiceToJson(await queries.invoice(tenant.id, entry.id));
      expect(invoice.id).toBe(entry.id);
      expect(invoice.currency).toBe(entry.currency);
      expect(entry.amount_due).toBe(invoice.totals.total.amount);
    }
    expect(await queries.listInvoices((await store.createTenant('idle')).id)).toEqual([]);
  });
});
