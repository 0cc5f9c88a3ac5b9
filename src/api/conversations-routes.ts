/**
 * OpenAI's Conversations API (`client.conversations.*`, `client.conversations.items.*`): create, read, update and
 * delete a conversation, and add, list, read and delete its items. Every route reads the caller's tenant only
 * (`Conversations`).
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Conversations } from '../conversations/conversations.js';
import { UnavailableError } from '../errors/gateway-error.js';
import { itemsPageQuery, type QueryParameters } from './page-limit.js';

/** OpenAI's `metadata`: up to 16 pairs, keys up to 64 characters, values up to 512. */
const Metadata = Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), { maxProperties: 16 });

/** An input item, checked field by field by `Conversations` (as Responses input is), so errors name the field. */
const Item = Type.Object({}, { additionalProperties: true });

const CreateConversationBody = Type.Object(
  {
    items: Type.Optional(Type.Union([Type.Array(Item, { maxItems: 20 }), Type.Null()])),
    metadata: Type.Optional(Type.Union([Metadata, Type.Null()])),
  },
  { additionalProperties: false },
);

const UpdateConversationBody = Type.Object({ metadata: Metadata }, { additionalProperties: false });

const CreateItemsBody = Type.Object(
  { items: Type.Array(Item, { minItems: 1, maxItems: 20 }) },
  { additionalProperties: false },
);

/** Registers `/v1/conversations`; without `conversations` (a store that keeps none) every route is a 503. */
export function registerConversationsRoutes(app: FastifyInstance, conversations: Conversations | undefined): void {
  const service = (): Conversations => {
    if (conversations === undefined) throw new UnavailableError('Conversations are not enabled on this gateway.');
    return conversations;
  };

  app.post<{ Body: { items?: Record<string, unknown>[] | null; metadata?: Record<string, string> | null } }>(
    '/v1/conversations',
    { schema: { body: CreateConversationBody } },
    async (request) => service().create(request.principal!.tenantId, request.body),
  );

  app.get<{ Params: { id: string } }>('/v1/conversations/:id', async (request) =>
    service().get(request.principal!.tenantId, request.params.id),
  );

  app.post<{ Params: { id: string }; Body: { metadata: Record<string, string> } }>(
    '/v1/conversations/:id',
    { schema: { body: UpdateConversationBody } },
    async (request) => service().update(request.principal!.tenantId, request.params.id, request.body.metadata),
  );

  app.delete<{ Params: { id: string } }>('/v1/conversations/:id', async (request) =>
    service().delete(request.principal!.tenantId, request.params.id),
  );

  app.post<{ Params: { id: string }; Body: { items: Record<string, unknown>[] } }>(
    '/v1/conversations/:id/items',
    { schema: { body: CreateItemsBody } },
    async (request) => service().addItems(request.principal!.tenantId, request.params.id, request.body.items),
  );

  app.get<{ Params: { id: string }; Querystring: QueryParameters }>('/v1/conversations/:id/items', async (request) =>
    service().listItems(request.principal!.tenantId, request.params.id, itemsPageQuery(request.query)),
  );

  app.get<{ Params: { id: string; itemId: string } }>('/v1/conversations/:id/items/:itemId', async (request) =>
    service().getItem(request.principal!.tenantId, request.params.id, request.params.itemId),
  );

  app.delete<{ Params: { id: string; itemId: string } }>('/v1/conversations/:id/items/:itemId', async (request) =>
    service().deleteItem(request.principal!.tenantId, request.params.id, request.params.itemId),
  );
}
