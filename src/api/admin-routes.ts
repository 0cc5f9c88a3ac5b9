/**
 * The admin API under `/admin/v1`, guarded by the admin bearer token: tenants and their API keys.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { AuthenticationError, InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import { purgeTenantResponses } from '../responses/tenant-purge.js';
import { openAIListPage } from '../store/list-page.js';
import { parseBearer } from '../tenancy/key-service.js';
import {
  DEFAULT_LIST_PAGE,
  type ListPageOptions,
  MAX_LIST_PAGE,
  publicKeyView,
  publicTenantView,
} from '../tenancy/tenant-service.js';
import type { ServerServices } from './create-server.js';
import { pageLimit } from './page-limit.js';

const CreateTenantBody = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 200 }) },
  { additionalProperties: false },
);

const CreateKeyBody = Type.Object(
  {
    name: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
    models: Type.Optional(Type.Union([Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }), Type.Null()])),
    /** Unix seconds or an ISO 8601 date-time. */
    expires_at: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ minLength: 1 }), Type.Null()])),
  },
  { additionalProperties: false },
);

/** `GET /tenants` and `GET /tenants/{id}/keys`: `?limit=` (see `pageLimit`) and `?after=` an id of the list. */
const ListQuery = Type.Object({ limit: Type.Optional(Type.String()), after: Type.Optional(Type.String()) });

interface ListQueryInput {
  limit?: string;
  after?: string;
}

interface CreateKeyInput {
  name?: string | null;
  models?: string[] | null;
  expires_at?: number | string | null;
}

/** Registers the admin routes on a Fastify scope prefixed with `/admin/v1`. */
export async function registerAdminRoutes(admin: FastifyInstance, services: ServerServices): Promise<void> {
  const expected = digest(services.adminToken);
  admin.addHook('onRequest', async (request) => {
    const token = parseBearer(request.headers.authorization);
    // Compare digests so the comparison takes the same time whatever the token's length or content.
    if (token === undefined || token === '' || !timingSafeEqual(digest(token), expected)) {
      throw new AuthenticationError('A valid admin token is required.', 'invalid_admin_token');
    }
  });

  admin.post<{ Body: { name: string } }>('/tenants', { schema: { body: CreateTenantBody } }, async (request, reply) => {
    const tenant = await services.tenants.createTenant(request.body.name);
    if (services.billing.enabled) await services.billing.openWallet(tenant.id);
    return reply.code(201).send(publicTenantView(tenant));
  });

  admin.get<{ Querystring: ListQueryInput }>('/tenants', { schema: { querystring: ListQuery } }, async (request) =>
    openAIListPage(await services.tenants.listTenants(pageOptions(request.query)), publicTenantView),
  );

  admin.get<{ Params: { id: string } }>('/tenants/:id', async (request) => {
    const tenant = await services.tenants.getTenant(request.params.id);
    if (tenant === undefined) throw new NotFoundError(`No tenant with id "${request.params.id}".`, 'tenant_not_found');
    return publicTenantView(tenant);
  });

  admin.post<{ Params: { id: string }; Body: CreateKeyInput | undefined }>(
    '/tenants/:id/keys',
    { schema: { body: Type.Union([CreateKeyBody, Type.Null()]) } },
    async (request, reply) => {
      const body = request.body ?? {};
      const created = await services.tenants.createKey(request.params.id, {
        name: body.name ?? null,
        models: body.models ?? null,
        expiresAt: parseExpiry(body.expires_at),
      });
      return reply.code(201).send({ ...publicKeyView(created.record), key: created.key });
    },
  );

  admin.get<{ Params: { id: string }; Querystring: ListQueryInput }>(
    '/tenants/:id/keys',
    { schema: { querystring: ListQuery } },
    async (request) =>
      openAIListPage(await services.tenants.listKeys(request.params.id, pageOptions(request.query)), publicKeyView),
  );

  // Deletes every stored Responses API response and conversation of the tenant (`purgeTenantResponses`).
  admin.delete<{ Params: { id: string } }>('/tenants/:id/responses', async (request) => {
    const tenant = await services.tenants.getTenant(request.params.id);
    if (tenant === undefined) throw new NotFoundError(`No tenant with id "${request.params.id}".`, 'tenant_not_found');
    return purgeTenantResponses(services.store, tenant.id);
  });

  admin.delete<{ Params: { id: string } }>('/keys/:id', async (request) =>
    publicKeyView(await services.tenants.revokeKey(request.params.id)),
  );
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function pageOptions(query: ListQueryInput): ListPageOptions {
  return {
    limit: pageLimit(query.limit, DEFAULT_LIST_PAGE, MAX_LIST_PAGE),
    ...(query.after === undefined ? {} : { after: query.after }),
  };
}

/** `expires_at` as epoch ms: Unix seconds or an ISO 8601 date-time. */
function parseExpiry(value: number | string | null | undefined): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'number') return value * 1000;
  const parsed = Date.parse(value);
  if (Number.isNaN(parsed)) {
    throw new InvalidRequestError(`Invalid value for 'expires_at': expected Unix seconds or an ISO 8601 date-time.`, {
      param: 'expires_at',
      code: 'invalid_value',
    });
  }
  return parsed;
}
