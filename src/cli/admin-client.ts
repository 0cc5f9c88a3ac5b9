/**
 * What the admin commands talk to: a running gateway's admin API (`--url`), or the store named by the configuration
 * directly. Revocations through the store reach a running gateway within its key-cache TTL (5 s); through `--url`
 * they take effect at once. Billing settings, budgets, prices and margin go through the admin API's own routes in
 * both modes (in process over the store: `openStoreAdminRoutes`), so both accept and refuse the same input.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { SharedBus } from '../app/shared-bus.js';
import { withDeadline } from '../app/with-deadline.js';
import { type BalanceView, BillingQueries } from '../billing/billing-queries.js';
import { BillingService } from '../billing/billing-service.js';
import type { BudgetView } from '../billing/budget-settings.js';
import { renderInvoiceCsv } from '../billing/invoice/render-invoice-csv.js';
import { renderInvoiceHtml } from '../billing/invoice/render-invoice-html.js';
import { renderInvoiceJson } from '../billing/invoice/render-invoice-json.js';
import { parseNano } from '../billing/nano.js';
import type { Config } from '../config/config-schema.js';
import { loadConfig } from '../config/load-config.js';
import { NotFoundError } from '../errors/gateway-error.js';
import { createLogger } from '../observability/logger.js';
import { createStore } from '../store/create-store.js';
import type { WalletTransactionKind } from '../store/ledger-store.js';
import { type OpenAIListPage, openAIListPage } from '../store/list-page.js';
import type { Store } from '../store/store.js';
import { InProcessInvalidationBus } from '../tenancy/invalidation-bus.js';
import { type KeyLimitsInput, keyLimitsFromInput, type PlanInput, planFromInput } from '../tenancy/plan-input.js';
import { PlanService } from '../tenancy/plan-service.js';
import {
  MAX_LIST_PAGE,
  type PublicKeyView,
  type PublicTenantView,
  publicKeyView,
  publicTenantView,
  TenantService,
} from '../tenancy/tenant-service.js';
import type { AdminTransport, openStoreAdminRoutes, StoreAdminRoutes } from './store-admin-routes.js';
import { undici } from './undici.js';

/** A tenant as the admin API shows it. */
export type TenantView = PublicTenantView;
/** A key as the admin API shows it (`key` only on creation). */
export type KeyView = PublicKeyView & { key?: string };

/** The kinds of wallet transaction an operator writes (`POST /tenants/{id}/credits` `kind`). */
export type CreditKind = WalletTransactionKind;

/** Which page of a list (oldest first) to fetch. */
export interface PageRequest {
  /** Most records, 1 to `MAX_LIST_PAGE`. */
  limit: number;
  /** Id of the last record of the previous page. Default: from the first record. */
  after?: string;
}

/** The admin operations the CLI needs. */
export interface AdminClient {
  createTenant(name: string): Promise<TenantView>;
  listTenants(page: PageRequest): Promise<OpenAIListPage<TenantView>>;
  /** One tenant (`GET /tenants/{id}`; 404 tenant_not_found). */
  getTenant(tenantId: string): Promise<TenantView>;
  /** A tenant's invoices, one per month with ledger activity, newest first (`GET /tenants/{id}/invoices`). */
  listInvoices(tenantId: string): Promise<unknown>;
  createKey(tenantId: string, input: { name?: string; models?: string[]; expiresAt?: string }): Promise<KeyView>;
  listKeys(tenantId: string, page: PageRequest): Promise<OpenAIListPage<KeyView>>;
  revokeKey(keyId: string): Promise<KeyView>;
  /** Deletes every stored Responses API response and conversation of the tenant (`DELETE /tenants/{id}/responses`). */
  deleteTenantResponses(tenantId: string): Promise<unknown>;
  addCredits(
    tenantId: string,
    input: { amount: string; kind?: CreditKind; currency: string; note?: string; idempotencyKey?: string },
  ): Promise<unknown>;
  /** One page of usage buckets (`query.page`: the `next_page` cursor of the page before). */
  usage(tenantId: string, query: Record<string, string>): Promise<UsagePage>;
  setPlan(tenantId: string, plan: PlanInput): Promise<unknown>;
  /** The invoice rendered as `json`, `csv` or `html` text. */
  invoice(tenantId: string, month: string, format: 'json' | 'csv' | 'html'): Promise<string>;
  /** The tenant's balance, billing mode, credit limit and budget (`GET /tenants/{id}/billing`). */
  billing(tenantId: string): Promise<BillingView>;
  /** Replaces the tenant's billing mode and credit limit, and its budget unless absent (`PUT /tenants/{id}/billing`). */
  setBilling(tenantId: string, settings: BillingSettings): Promise<BillingView>;
  /** The tenant's balance (`GET /tenants/{id}/balance`). */
  balance(tenantId: string): Promise<BalanceView>;
  /** Replaces a key's monthly budget (`PUT /keys/{id}/budget`). */
  setKeyBudget(keyId: string, budget: BudgetSettings): Promise<unknown>;
  /** A key's monthly budget (`GET /keys/{id}/budget`; 404 when it has none). */
  keyBudget(keyId: string): Promise<unknown>;
  /** Removes a key's monthly budget (`DELETE /keys/{id}/budget`). */
  removeKeyBudget(keyId: string): Promise<unknown>;
  /** Replaces a key's limit overrides (`PUT /keys/{id}/limits`). */
  setKeyLimits(keyId: string, limits: KeyLimitsInput): Promise<unknown>;
  /** The price book: versions added through the admin API, in force and scheduled (`GET /prices`). */
  prices(): Promise<unknown>;
  /** Adds a price version, checked as the admin API checks it (`POST /prices`). */
  addPriceVersion(version: unknown): Promise<unknown>;
  /** Revenue, cost and margin per model (`GET /margin`; times as Unix seconds or ISO 8601). */
  margin(query: { start?: string; end?: string }): Promise<unknown>;
  /** The fleet's live state (`GET /fleet`): only a running gateway has one. */
  fleet(): Promise<unknown>;
  /** Batches of every tenant (or one) with progress and ETA (`GET /batches`): a running gateway's view. */
  adminBatches(query: { tenantId?: string; limit?: number; after?: string }): Promise<unknown>;
  /** One batch with progress and ETA (`GET /batches/{id}`): a running gateway's view. */
  adminBatch(batchId: string): Promise<unknown>;
  close(): Promise<void>;
}

/** A monthly budget as the admin API takes it; absent fields take the API's defaults. */
export interface BudgetSettings {
  /** Monthly limit, currency units (a decimal string). */
  monthly_limit: string;
  /** Default `hard`. */
  enforcement?: 'hard' | 'soft';
  /** Alert thresholds, percent of the limit. Default 50, 80, 100. */
  thresholds?: number[];
  /** Where alerts are posted; null or absent: logged only. */
  webhook_url?: string | null;
}

/** The body of `PUT /tenants/{id}/billing`. */
export interface BillingSettings {
  mode: 'prepaid' | 'postpaid';
  /** Postpaid only, currency units. Absent: 0. */
  credit_limit?: string;
  /** null removes the budget; absent leaves it as it is. */
  budget?: BudgetSettings | null;
}

/** A tenant's balance with its budget, as `GET /tenants/{id}/billing` shows it. */
export type BillingView = BalanceView & { budget: BudgetView | null };

/** A page of usage buckets, as the usage API returns it. */
export interface UsagePage {
  object: 'page';
  data: unknown[];
  has_more: boolean;
  next_page: string | null;
}

export type { KeyLimitsInput, PlanInput };

/** Where the CLI should go. */
export interface AdminTarget {
  /** A running gateway, e.g. `http://127.0.0.1:8080`. */
  url?: string;
  /** Admin token for `url`. Default: `TOLLGATE_ADMIN_TOKEN`, else the data dir's `admin-token` file if there is one. */
  adminToken?: string;
  /** Configuration file naming the store. */
  configPath?: string;
}

/** Opens the client for a target. */
export async function openAdminClient(target: AdminTarget): Promise<AdminClient> {
  const loaded = loadConfig(target.configPath === undefined ? {} : { configPath: target.configPath });
  if (target.url !== undefined) {
    const token = target.adminToken ?? loaded.adminToken ?? readAdminTokenFile(loaded.dataDir);
    if (token === undefined) {
      throw new Error(
        `--url needs the gateway's admin token: pass --admin-token <token> or set TOLLGATE_ADMIN_TOKEN ` +
          `(no ${path.join(loaded.dataDir, ADMIN_TOKEN_FILE)} here to read it from)`,
      );
    }
    return new HttpAdminClient(target.url.replace(/\/+$/, ''), token);
  }
  const store = await createStore(loaded.storeUrl);
  await store.migrate();
  const logger = createLogger({ level: 'warn', sync: true });
  // Running gateways on a shared store hear what this command changes at once (a revoked key, a plan); on an embedded
  // store there is no bus, and they see it when their cached copy expires (5 s).
  const bus = await openBusOf(loaded.config, store, logger);
  const billing = new BillingService(store, {
    priceBook: loaded.config.pricing,
    logger,
    newTenants: {
      mode: loaded.config.billing.new_tenant_mode,
      creditLimit: parseNano(loaded.config.billing.new_tenant_credit_limit),
    },
    ...(bus === undefined ? {} : { bus }),
  });
  await billing.init();
  const queries = new BillingQueries(store, billing);
  const routes = routesOnDemand({
    store,
    billing,
    queries,
    servedModels: loaded.config.models.map((model) => model.name),
  });
  const defaults = loaded.config.default_plan;
  const plans = new PlanService(
    store,
    {
      limits: { rpm: defaults.rpm, tpm: defaults.tpm, tpd: defaults.tpd, concurrency: defaults.concurrency },
      tiers: [...defaults.tiers],
      weight: defaults.weight,
    },
    bus === undefined ? {} : { bus },
  );
  return new StoreAdminClient(store, billing, queries, plans, routes, bus);
}

/**
 * The bus to the running gateways on a shared store, listening; undefined on an embedded one. Its module (and with
 * it the PostgreSQL and Redis clients) is loaded only when there is one: an embedded store's command starts faster.
 */
async function openBusOf(config: Config, store: Store, logger: Logger): Promise<SharedBus | undefined> {
  if (config.admission.store !== 'redis' && store.kind !== 'postgres') return undefined;
  const { BUS_READY_WAIT_MS, openSharedBus } = await import('../app/shared-bus.js');
  const bus = openSharedBus(config, store, 'invalidations', { logger });
  await withDeadline(bus?.ready(), BUS_READY_WAIT_MS, 'listening to the running gateways', logger);
  return bus;
}

/**
 * The admin billing routes over the store, started by the first request sent to them. Tenant and key commands send
 * none, and so never load Fastify or compile the routes' schemas (0.2 s of their start on a slow machine).
 */
function routesOnDemand(deps: Parameters<typeof openStoreAdminRoutes>[0]): StoreAdminRoutes {
  let opened: Promise<StoreAdminRoutes> | undefined;
  const open = () => {
    opened ??= import('./store-admin-routes.js').then((routes) => routes.openStoreAdminRoutes(deps));
    return opened;
  };
  return {
    send: async (request) => (await open()).send(request),
    close: async () => {
      if (opened !== undefined) await (await opened).close();
    },
  };
}

/** The file `serve` keeps its generated admin token in, under the data dir (see `resolveAdminToken`). */
const ADMIN_TOKEN_FILE = 'admin-token';

/**
 * The admin token a `serve` on this data dir generated, if there is one. Only read: a client must not mint a
 * secret that no server uses and that a later `serve` would adopt.
 */
function readAdminTokenFile(dataDir: string): string | undefined {
  try {
    const token = readFileSync(path.join(dataDir, ADMIN_TOKEN_FILE), 'utf8').trim();
    return token === '' ? undefined : token;
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * The operations both clients send as admin API requests: to a running gateway, or to the admin billing routes run
 * in process over the store. Both clients extend it.
 */
abstract class AdminApiCalls {
  constructor(private readonly send: AdminTransport) {}

  addCredits(
    tenantId: string,
    input: { amount: string; kind?: CreditKind; currency: string; note?: string; idempotencyKey?: string },
  ) {
    const { idempotencyKey, ...body } = input;
    return this.call<unknown>(
      'POST',
      `/tenants/${encodeURIComponent(tenantId)}/credits`,
      body,
      idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey },
    );
  }
  billing(tenantId: string) {
    return this.call<BillingView>('GET', `/tenants/${encodeURIComponent(tenantId)}/billing`);
  }
  setBilling(tenantId: string, settings: BillingSettings) {
    return this.call<BillingView>('PUT', `/tenants/${encodeURIComponent(tenantId)}/billing`, settings);
  }
  balance(tenantId: string) {
    return this.call<BalanceView>('GET', `/tenants/${encodeURIComponent(tenantId)}/balance`);
  }
  setKeyBudget(keyId: string, budget: BudgetSettings) {
    return this.call<unknown>('PUT', `/keys/${encodeURIComponent(keyId)}/budget`, budget);
  }
  keyBudget(keyId: string) {
    return this.call<unknown>('GET', `/keys/${encodeURIComponent(keyId)}/budget`);
  }
  listInvoices(tenantId: string) {
    return this.call<unknown>('GET', `/tenants/${encodeURIComponent(tenantId)}/invoices`);
  }
  removeKeyBudget(keyId: string) {
    return this.call<unknown>('DELETE', `/keys/${encodeURIComponent(keyId)}/budget`);
  }
  prices() {
    return this.call<unknown>('GET', '/prices');
  }
  addPriceVersion(version: unknown) {
    return this.call<unknown>('POST', '/prices', version);
  }
  margin(query: { start?: string; end?: string }) {
    return this.call<unknown>('GET', `/margin${queryOf(query)}`);
  }

  /** Sends a request; throws its error as `<status> <code>: <message>`, as the CLI prints it. */
  async call<T>(
    method: 'GET' | 'POST' | 'DELETE' | 'PUT',
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<T> {
    const response = await this.send({ method, path, headers, ...(body === undefined ? {} : { body }) });
    if (response.status >= 400) throw responseError(response.status, response.text);
    return JSON.parse(response.text) as T;
  }
}

/** An admin API refusal as the CLI prints it, `<status> <code>: <message>` (the status and body when not JSON). */
function responseError(status: number, text: string): Error {
  let error: { message?: string; code?: string } | undefined;
  try {
    error = (JSON.parse(text) as { error?: { message?: string; code?: string } }).error;
  } catch {
    // Not the gateway's error body (a proxy's page, say): shown as it came.
  }
  if (error === undefined) return new Error(`${status}: ${text.slice(0, 500)}`);
  return new Error(`${status} ${error.code ?? ''}: ${error.message ?? 'request failed'}`);
}

/** A running gateway's admin API over HTTP. */
function httpTransport(baseUrl: string, token: string): AdminTransport {
  return async ({ method, path, body, headers }) => {
    const { request } = await undici();
    const response = await request(`${baseUrl}/admin/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.statusCode, text: await response.body.text() };
  };
}

class HttpAdminClient extends AdminApiCalls implements AdminClient {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
  ) {
    super(httpTransport(baseUrl, token));
  }

  createTenant(name: string) {
    return this.call<TenantView>('POST', '/tenants', { name });
  }
  listTenants(page: PageRequest) {
    return this.call<OpenAIListPage<TenantView>>('GET', `/tenants${queryOf({ limit: page.limit, after: page.after })}`);
  }
  getTenant(tenantId: string) {
    return this.call<TenantView>('GET', `/tenants/${encodeURIComponent(tenantId)}`);
  }
  createKey(tenantId: string, input: { name?: string; models?: string[]; expiresAt?: string }) {
    return this.call<KeyView>('POST', `/tenants/${encodeURIComponent(tenantId)}/keys`, {
      ...(input.name === undefined ? {} : { name: input.name }),
      ...(input.models === undefined ? {} : { models: input.models }),
      ...(input.expiresAt === undefined ? {} : { expires_at: input.expiresAt }),
    });
  }
  listKeys(tenantId: string, page: PageRequest) {
    return this.call<OpenAIListPage<KeyView>>(
      'GET',
      `/tenants/${encodeURIComponent(tenantId)}/keys${queryOf({ limit: page.limit, after: page.after })}`,
    );
  }
  revokeKey(keyId: string) {
    return this.call<KeyView>('DELETE', `/keys/${encodeURIComponent(keyId)}`);
  }
  deleteTenantResponses(tenantId: string) {
    return this.call<unknown>('DELETE', `/tenants/${encodeURIComponent(tenantId)}/responses`);
  }
  usage(tenantId: string, query: Record<string, string>) {
    return this.call<UsagePage>('GET', `/tenants/${encodeURIComponent(tenantId)}/usage?${new URLSearchParams(query)}`);
  }
  setPlan(tenantId: string, plan: PlanInput) {
    return this.call<unknown>('PUT', `/tenants/${encodeURIComponent(tenantId)}/plan`, plan);
  }
  async invoice(tenantId: string, month: string, format: 'json' | 'csv' | 'html') {
    const { request } = await undici();
    const response = await request(
      `${this.baseUrl}/admin/v1/tenants/${encodeURIComponent(tenantId)}/invoices/${encodeURIComponent(month)}?format=${format}`,
      { headers: { authorization: `Bearer ${this.token}` } },
    );
    const text = await response.body.text();
    if (response.statusCode >= 400) throw responseError(response.statusCode, text);
    return text;
  }
  setKeyLimits(keyId: string, limits: KeyLimitsInput) {
    return this.call<unknown>('PUT', `/keys/${encodeURIComponent(keyId)}/limits`, limits);
  }
  fleet() {
    return this.call<unknown>('GET', '/fleet');
  }
  adminBatches(query: { tenantId?: string; limit?: number; after?: string }) {
    return this.call<unknown>(
      'GET',
      `/batches${queryOf({ tenant_id: query.tenantId, limit: query.limit, after: query.after })}`,
    );
  }
  adminBatch(batchId: string) {
    return this.call<unknown>('GET', `/batches/${encodeURIComponent(batchId)}`);
  }
  async close() {}
}

class StoreAdminClient extends AdminApiCalls implements AdminClient {
  private readonly tenants: TenantService;

  constructor(
    private readonly store: Store,
    private readonly billingService: BillingService,
    private readonly queries: BillingQueries,
    private readonly plans: PlanService,
    /** The admin billing routes, run in process over the store. */
    private readonly routes: StoreAdminRoutes,
    private readonly bus: SharedBus | undefined,
  ) {
    super(routes.send);
    this.tenants = new TenantService(store, { bus: bus ?? new InProcessInvalidationBus() });
  }

  async createTenant(name: string) {
    const tenant = await this.tenants.createTenant(name);
    if (this.billingService.enabled) await this.billingService.openWallet(tenant.id);
    return publicTenantView(tenant);
  }
  usage(tenantId: string, query: Record<string, string>): Promise<UsagePage> {
    return this.queries.usage(tenantId, query);
  }
  async setPlan(tenantId: string, input: PlanInput) {
    // The admin route's check: a plan it would refuse is not stored through the store either.
    const plan = planFromInput(input, this.plans.defaultPlan());
    if ((await this.store.getTenant(tenantId)) === undefined) {
      throw new NotFoundError(`No tenant with id "${tenantId}".`, 'tenant_not_found');
    }
    await this.plans.setTenantPlan(tenantId, plan);
    return {
      object: 'plan',
      tenant_id: tenantId,
      ...plan.limits,
      tiers: plan.tiers,
      weight: plan.weight,
      models: plan.models ?? {},
    };
  }
  async invoice(tenantId: string, month: string, format: 'json' | 'csv' | 'html') {
    const invoice = await this.queries.invoice(tenantId, month);
    if (format === 'csv') return renderInvoiceCsv(invoice);
    if (format === 'html') return renderInvoiceHtml(invoice);
    return renderInvoiceJson(invoice);
  }
  async setKeyLimits(keyId: string, input: KeyLimitsInput) {
    // The admin route's check and write (`PUT /keys/{id}/limits`), as `setPlan`.
    const limits = keyLimitsFromInput(input);
    if ((await this.store.getKey(keyId)) === undefined) {
      throw new NotFoundError(`No key with id "${keyId}".`, 'key_not_found');
    }
    await this.plans.setKeyLimits(keyId, limits);
    return { object: 'key_limits', key_id: keyId, ...limits };
  }
  async fleet(): Promise<unknown> {
    throw new Error("the fleet is a running gateway's live state, not in the store: pass --url <gateway>");
  }
  async adminBatches(): Promise<unknown> {
    throw new Error("a batch's progress and ETA are a running gateway's live state: pass --url <gateway>");
  }
  async adminBatch(): Promise<unknown> {
    return this.adminBatches();
  }
  async listTenants(page: PageRequest) {
    return openAIListPage(await this.tenants.listTenants(page), publicTenantView);
  }
  async getTenant(tenantId: string) {
    const tenant = await this.tenants.getTenant(tenantId);
    if (tenant === undefined) throw new NotFoundError(`No tenant with id "${tenantId}".`, 'tenant_not_found');
    return publicTenantView(tenant);
  }
  async createKey(tenantId: string, input: { name?: string; models?: string[]; expiresAt?: string }) {
    const expiresAt = input.expiresAt === undefined ? null : Date.parse(input.expiresAt);
    if (expiresAt !== null && Number.isNaN(expiresAt)) throw new Error('--expires-at: expected an ISO 8601 date-time');
    const created = await this.tenants.createKey(tenantId, {
      name: input.name ?? null,
      models: input.models ?? null,
      expiresAt,
    });
    return { ...publicKeyView(created.record), key: created.key };
  }
  async listKeys(tenantId: string, page: PageRequest) {
    return openAIListPage(await this.tenants.listKeys(tenantId, page), publicKeyView);
  }
  async revokeKey(keyId: string) {
    return publicKeyView(await this.tenants.revokeKey(keyId));
  }
  async deleteTenantResponses(tenantId: string) {
    // The admin route's check and purge (`DELETE /tenants/{id}/responses`), loaded by the one command that needs it.
    await this.getTenant(tenantId);
    const { purgeTenantResponses } = await import('../responses/tenant-purge.js');
    return purgeTenantResponses(this.store, tenantId);
  }
  async close() {
    await this.routes.close();
    this.billingService.stop();
    this.plans.close();
    await this.bus?.close();
    await this.store.close();
  }
}

/**
 * Every record of a list, fetched `MAX_LIST_PAGE` at a time, each page after the last record of the one before: a
 * long list never becomes one huge response.
 */
export async function listAll<V>(list: (page: PageRequest) => Promise<OpenAIListPage<V>>): Promise<V[]> {
  const records: V[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await list(after === undefined ? { limit: MAX_LIST_PAGE } : { after, limit: MAX_LIST_PAGE });
    records.push(...page.data);
    if (!page.has_more || page.last_id === undefined) return records;
    after = page.last_id;
  }
}

/** `?name=value&…` of the parameters given (an undefined one is left out), or '' when none is. */
function queryOf(parameters: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) if (value !== undefined) search.set(name, String(value));
  return search.size === 0 ? '' : `?${search}`;
}
