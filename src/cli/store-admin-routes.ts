/**
 * The admin billing routes (`/admin/v1` billing, balance, budgets, prices, margin) run in this process over the
 * store, for the CLI's store mode: a command sends them the request it would send a running gateway with `--url`,
 * so both modes validate the same body with the same schema and change the store through the same code.
 */
import Fastify from 'fastify';
import { registerAdminBillingRoutes } from '../api/admin-billing-routes.js';
import { REQUEST_AJV_OPTIONS } from '../api/ajv-options.js';
import { toClientError } from '../api/error-reply.js';
import type { BillingQueries } from '../billing/billing-queries.js';
import type { BillingService } from '../billing/billing-service.js';
import { toOpenAIErrorBody } from '../errors/gateway-error.js';
import type { Store } from '../store/store.js';

/** One admin API request; `path` is under `/admin/v1`. */
export interface AdminRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
}

/** Sends an admin API request; resolves with the response's status and body text. */
export type AdminTransport = (request: AdminRequest) => Promise<{ status: number; text: string }>;

/** The in-process routes: `send` answers requests until `close`. */
export interface StoreAdminRoutes {
  send: AdminTransport;
  close(): Promise<void>;
}

/** Largest request body, bytes: a price version is the largest the CLI sends. */
const BODY_LIMIT_BYTES = 4 * 1024 * 1024;

/** Starts the admin billing routes over `store` (no listening socket: requests are injected). */
export async function openStoreAdminRoutes(deps: {
  store: Store;
  billing: BillingService;
  queries: BillingQueries;
  /** The models the configuration serves: a new price version must price each, as on a running gateway. */
  servedModels: readonly string[];
}): Promise<StoreAdminRoutes> {
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT_BYTES,
    ajv: REQUEST_AJV_OPTIONS,
  });
  app.setErrorHandler((error: unknown, _request, reply) => {
    const clientError = toClientError(error, BODY_LIMIT_BYTES);
    // A gateway hides the cause of a 500 from its client; here the client is the operator, who needs it.
    const body = toOpenAIErrorBody(clientError);
    if (clientError.status >= 500 && error instanceof Error) body.error.message = error.message;
    return reply.code(clientError.status).send(body);
  });
  await app.register(
    async (admin) =>
      registerAdminBillingRoutes(admin, {
        store: deps.store,
        billing: deps.billing,
        queries: deps.queries,
        servedModels: () => deps.servedModels,
      }),
    { prefix: '/admin/v1' },
  );
  await app.ready();
  return {
    async send(request) {
      const response = await app.inject({
        method: request.method,
        url: `/admin/v1${request.path}`,
        headers: {
          ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...request.headers,
        },
        ...(request.body === undefined ? {} : { payload: JSON.stringify(request.body) }),
      });
      return { status: response.statusCode, text: response.body };
    },
    close: () => app.close(),
  };
}
