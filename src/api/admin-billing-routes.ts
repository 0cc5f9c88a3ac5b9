/**
 * Admin money and pricing routes under `/admin/v1`: credits (idempotent by `Idempotency-Key`), billing mode and
 * budgets, the price book, any tenant's usage, balance and invoices, margin per model.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { BillingQueries } from '../billing/billing-queries.js';
import type { BillingService } from '../billing/billing-service.js';
import { type BudgetView, budgetView } from '../billing/budget-settings.js';
import { formatNano, parseNano } from '../billing/nano.js';
import { addWalletCredit, configureWalletCredit } from '../billing/wallet-credit.js';
import { InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import { DecimalFormatError } from '../pricing/money.js';
import { type PriceVersionConfig, PriceVersionSchema } from '../pricing/price-book.js';
import type { BudgetRecord, LedgerStore } from '../store/ledger-store.js';
import type { Store } from '../store/store.js';
import { sendInvoice } from './billing-routes.js';

const Decimal = Type.String({ pattern: '^-?[0-9]+(\\.[0-9]+)?$' });

const CreditBody = Type.Object(
  {
    amount: Decimal,
    currency: Type.String({ minLength: 3, maxLength: 3 }),
    note: Type.Optional(Type.String({ maxLength: 500 })),
    kind: Type.Optional(Type.Union([Type.Literal('topup'), Type.Literal('adjustment'), Type.Literal('refund')])),
  },
  { additionalProperties: false },
);

const BudgetBody = Type.Object(
  {
    monthly_limit: Decimal,
    enforcement: Type.Optional(Type.Union([Type.Literal('hard'), Type.Literal('soft')])),
    thresholds: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 1000 }), { maxItems: 20 })),
    webhook_url: Type.Optional(Type.Union([Type.String({ pattern: '^https?://' }), Type.Null()])),
  },
  { additionalProperties: false },
);

const BillingBody = Type.Object(
  {
    mode: Type.Union([Type.Literal('prepaid'), Type.Literal('postpaid')]),
    credit_limit: Type.Optional(Decimal),
    budget: Type.Optional(Type.Union([BudgetBody, Type.Null()])),
  },
  { additionalProperties: false },
);

interface BudgetInput {
  monthly_limit: string;
  enforcement?: 'hard' | 'soft';
  thresholds?: number[];
  webhook_url?: string | null;
}

/** Registers the admin billing routes on the `/admin/v1` scope (already guarded by the admin token). */
export function registerAdminBillingRoutes(
  admin: FastifyInstance,
  deps: {
    store: Store & LedgerStore;
    billing: BillingService;
    queries: BillingQueries;
    /** The models the gateway serves: a new price version must price each. */
    servedModels: () => readonly string[];
  },
): void {
  const { store, billing, queries } = deps;
  /** The budget of a tenant (`scopeId` = `tenantId`) or of one of its keys, if it has one. */
  const budgetOf = async (scope: 'tenant' | 'key', scopeId: string, tenantId: string) =>
    (await store.listBudgets(tenantId)).find((candidate) => candidate.scope === scope && candidate.scopeId === scopeId);
  /** The balance, with the tenant's budget as `PUT /tenants/{id}/billing` takes it (null: none). */
  const billingView = async (tenantId: string) => ({
    ...(await queries.balance(tenantId)),
    budget: budgetView(await budgetOf('tenant', tenantId, tenantId)),
  });
  const requireTenant = async (tenantId: string) => {
    const tenant = await store.getTenant(tenantId);
    if (tenant === undefined) throw new NotFoundError(`No tenant with id "${tenantId}".`, 'tenant_not_found');
    return tenant;
  };

  admin.post<{
    Params: { id: string };
    Body: { amount: string; currency: string; note?: string; kind?: 'topup' | 'adjustment' | 'refund' };
  }>('/tenants/:id/credits', { schema: { body: CreditBody } }, async (request, reply) => {
    await requireTenant(request.params.id);
    const body = request.body;
    if (body.currency !== billing.currency) {
      throw new InvalidRequestError(`Wallets are kept in ${billing.currency}.`, {
        param: 'currency',
        code: 'invalid_currency',
      });
    }
    const kind = body.kind ?? 'topup';
    const amount = money(body.amount, 'amount', kind === 'adjustment');
    if (kind !== 'adjustment' && amount <= 0n) {
      throw new InvalidRequestError('amount must be positive.', { param: 'amount', code: 'invalid_value' });
    }
    const key = request.headers['idempotency-key'];
    const { record, created } = await addWalletCredit(store, {
      tenantId: request.params.id,
      kind,
      amount,
      currency: body.currency,
      idempotencyKey: typeof key === 'string' && key !== '' ? key : null,
      note: body.note ?? null,
    });
    return reply.code(created ? 201 : 200).send({
      id: record.id,
      object: 'wallet_transaction',
      tenant_id: record.tenantId,
      kind: record.kind,
      amount: formatNano(record.amount),
      currency: record.currency,
      note: record.note,
      created_at: Math.floor(record.createdAt / 1000),
      balance: (await queries.balance(request.params.id)).balance,
    });
  });

  admin.put<{
    Params: { id: string };
    Body: { mode: 'prepaid' | 'postpaid'; credit_limit?: string; budget?: BudgetInput | null };
  }>('/tenants/:id/billing', { schema: { body: BillingBody } }, async (request) => {
    const tenantId = request.params.id;
    await requireTenant(tenantId);
    const { mode, budget } = request.body;
    const creditLimit = mode === 'postpaid' ? money(request.body.credit_limit ?? '0', 'credit_limit') : 0n;
    // Every value is checked before the first write, and the wallet (which checks the credit limit against its
    // balance) is written first: a refused request changes nothing.
    const budgetRecord =
      budget === null || budget === undefined ? budget : budgetRecordOf('tenant', tenantId, tenantId, budget);
    await configureWalletCredit(store, tenantId, { mode, currency: billing.currency, creditLimit });
    // null removes the budget; absent leaves it as it is.
    if (budgetRecord === null) await store.deleteBudget('tenant', tenantId);
    else if (budgetRecord !== undefined) await store.putBudget(budgetRecord);
    await billing.budgetsChanged();
    return billingView(tenantId);
  });

  admin.get<{ Params: { id: string } }>('/tenants/:id/billing', async (request) => {
    await requireTenant(request.params.id);
    return billingView(request.params.id);
  });

  const requireKey = async (keyId: string) => {
    const key = await store.getKey(keyId);
    if (key === undefined) throw new NotFoundError(`No key with id "${keyId}".`, 'key_not_found');
    return key;
  };
  /** A key's budget as the key budget routes answer it. */
  const keyBudgetView = (keyId: string, budget: BudgetView) => ({
    object: 'budget',
    scope: 'key',
    scope_id: keyId,
    ...budget,
  });

  admin.put<{ Params: { id: string }; Body: BudgetInput }>(
    '/keys/:id/budget',
    { schema: { body: BudgetBody } },
    async (request) => {
      const key = await requireKey(request.params.id);
      const record = budgetRecordOf('key', key.id, key.tenantId, request.body);
      await store.putBudget(record);
      await billing.budgetsChanged();
      return keyBudgetView(key.id, budgetView(record)!);
    },
  );

  admin.get<{ Params: { id: string } }>('/keys/:id/budget', async (request) => {
    const key = await requireKey(request.params.id);
    const budget = budgetView(await budgetOf('key', key.id, key.tenantId));
    if (budget === null) throw new NotFoundError(`Key "${key.id}" has no budget.`, 'budget_not_found');
    return keyBudgetView(key.id, budget);
  });

  admin.delete<{ Params: { id: string } }>('/keys/:id/budget', async (request) => {
    const key = await requireKey(request.params.id);
    // As OpenAI's deletions answer: the object, and whether there was one to delete.
    const deleted = await store.deleteBudget('key', key.id);
    if (deleted) await billing.budgetsChanged();
    return { object: 'budget', scope: 'key', scope_id: key.id, deleted };
  });

  admin.get<{ Params: { id: string } }>('/tenants/:id/balance', async (request) => {
    await requireTenant(request.params.id);
    return queries.balance(request.params.id);
  });

  admin.get<{ Params: { id: string }; Querystring: Record<string, unknown> }>('/tenants/:id/usage', async (request) => {
    await requireTenant(request.params.id);
    return queries.usage(request.params.id, request.query);
  });

  admin.get<{ Params: { id: string } }>('/tenants/:id/invoices', async (request) => {
    await requireTenant(request.params.id);
    return { object: 'list', data: await queries.listInvoices(request.params.id) };
  });

  admin.get<{ Params: { id: string; invoice: string }; Querystring: { format?: string } }>(
    '/tenants/:id/invoices/:invoice',
    async (request, reply) => {
      await requireTenant(request.params.id);
      const invoice = await queries.invoice(request.params.id, request.params.invoice);
      return sendInvoice(reply, invoice, request.query.format, request.headers.accept);
    },
  );

  admin.get('/prices', async () => {
    const { inForce, scheduled } = billing.priceVersionsByStatus();
    const summary = (version: { id: string; effectiveFrom: string }) => ({
      id: version.id,
      effective_from: version.effectiveFrom,
    });
    return {
      object: 'price_book',
      currency: billing.currency,
      versions: (await store.listPriceVersions()).map((version) => ({
        id: version.id,
        effective_from: new Date(version.effectiveFrom).toISOString(),
        source: 'admin',
      })),
      // Versions that have taken effect, oldest first (the last prices requests now), and those still to come.
      in_force: inForce.map(summary),
      scheduled: scheduled.map(summary),
    };
  });

  admin.post<{ Body: PriceVersionConfig }>(
    '/prices',
    { schema: { body: PriceVersionSchema } },
    async (request, reply) => {
      // A version is a whole price list: a served model it leaves out would be served free from its start (with a
      // log line per request as the only trace). A model meant to be free is priced at "0".
      const unpriced = deps.servedModels().filter((model) => !Object.hasOwn(request.body.models, model));
      if (unpriced.length > 0) {
        throw new InvalidRequestError(
          `The price version leaves out models this gateway serves: ${unpriced.join(', ')}. Price each of them ` +
            '(at "0" to serve one free).',
          { param: 'models', code: 'invalid_price_version' },
        );
      }
      await billing.addPriceVersion(request.body);
      return reply.code(201).send({ object: 'price_version', id: request.body.id ?? request.body.effective_from });
    },
  );

  admin.get<{ Querystring: { start?: string; end?: string } }>('/margin', async (request) => {
    const end = request.query.end === undefined ? Date.now() : parseTime(request.query.end, 'end');
    const start = request.query.start === undefined ? end - 30 * 86_400_000 : parseTime(request.query.start, 'start');
    if (start > end) {
      throw new InvalidRequestError("'start' must not be after 'end'.", { param: 'start', code: 'invalid_value' });
    }
    return {
      object: 'margin_report',
      start: Math.floor(start / 1000),
      end: Math.floor(end / 1000),
      data: await queries.margin(start, end),
    };
  });
}

function budgetRecordOf(scope: 'tenant' | 'key', scopeId: string, tenantId: string, budget: BudgetInput): BudgetRecord {
  return {
    scope,
    scopeId,
    tenantId,
    monthlyLimit: money(budget.monthly_limit, 'monthly_limit'),
    enforcement: budget.enforcement ?? 'hard',
    thresholds: budget.thresholds ?? [50, 80, 100],
    webhookUrl: budget.webhook_url ?? null,
    updatedAt: Date.now(),
  };
}

function money(text: string, param: string, allowNegative = false) {
  try {
    return parseNano(text, { allowNegative });
  } catch (error: unknown) {
    if (error instanceof DecimalFormatError) {
      throw new InvalidRequestError(`Invalid value for '${param}': ${error.message}`, { param, code: 'invalid_value' });
    }
    throw error;
  }
}

function parseTime(value: string, param: string): number {
  const parsed = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value);
  if (Number.isNaN(parsed)) {
    throw new InvalidRequestError(`Invalid value for '${param}': Unix seconds or ISO 8601.`, {
      param,
      code: 'invalid_value',
    });
  }
  return parsed;
}
