/**
 * Tenant billing routes under `/v1` (own data only: the tenant comes from the API key, never from the request):
 * usage, balance, invoices.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { BillingQueries } from '../billing/billing-queries.js';
import type { Invoice } from '../billing/invoice/build-invoice.js';
import { renderInvoiceCsv } from '../billing/invoice/render-invoice-csv.js';
import { renderInvoiceHtml } from '../billing/invoice/render-invoice-html.js';
import { renderInvoiceJson } from '../billing/invoice/render-invoice-json.js';
import { InvalidRequestError } from '../errors/gateway-error.js';

/** Sends an invoice as JSON (default), CSV or printable HTML (`?format=` or the `Accept` header). */
export function sendInvoice(reply: FastifyReply, invoice: Invoice, format: unknown, accept: string | undefined) {
  if (format !== undefined && format !== 'json' && format !== 'csv' && format !== 'html') {
    throw new InvalidRequestError("Invalid value for 'format': expected json, csv or html.", {
      param: 'format',
      code: 'invalid_value',
    });
  }
  const wanted =
    typeof format === 'string'
      ? format
      : accept?.includes('text/html')
        ? 'html'
        : accept?.includes('text/csv')
          ? 'csv'
          : 'json';
  if (wanted === 'csv') {
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="${invoice.id}.csv"`)
      .send(renderInvoiceCsv(invoice));
  }
  if (wanted === 'html') return reply.type('text/html; charset=utf-8').send(renderInvoiceHtml(invoice));
  return reply.type('application/json; charset=utf-8').send(renderInvoiceJson(invoice));
}

/** Registers the tenant billing routes on the root instance (paths start with `/v1/`). */
export function registerBillingRoutes(app: FastifyInstance, queries: BillingQueries): void {
  app.get<{ Querystring: Record<string, unknown> }>('/v1/usage', async (request) =>
    queries.usage(request.principal!.tenantId, request.query),
  );
  app.get('/v1/billing/balance', async (request) => queries.balance(request.principal!.tenantId));
  app.get('/v1/billing/invoices', async (request) => ({
    object: 'list',
    data: await queries.listInvoices(request.principal!.tenantId),
  }));
  app.get<{ Params: { id: string }; Querystring: { format?: string } }>(
    '/v1/billing/invoices/:id',
    async (request, reply) =>
      sendInvoice(
        reply,
        await queries.invoice(request.principal!.tenantId, request.params.id),
        request.query.format,
        request.headers.accept,
      ),
  );
}
