/**
 * Reading stored responses back: `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
 * `GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`, in OpenAI's shapes
 * (`client.responses.retrieve`, `.delete`, `.inputItems.list`, `.cancel`). Every route reads the caller's tenant
 * only (`StoredResponses`).
 */
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError, NotFoundError } from '../../errors/gateway-error.js';
import type { BackgroundResponses } from '../../responses/background-responses.js';
import type { StoredResponses } from '../../responses/stored-responses.js';
import { pageLimit, type QueryParameters, singleQueryValue } from '../page-limit.js';

/** Registers the stored-response routes; without `responses` (a store that keeps none) each answers 404. */
export function registerStoredResponsesRoutes(
  app: FastifyInstance,
  responses: StoredResponses | undefined,
  background: BackgroundResponses | undefined,
): void {
  const stored = (id: string): StoredResponses => {
    if (responses === undefined) {
      throw new NotFoundError(
        `Response with id '${id.slice(0, 80)}' not found: this gateway does not store responses.`,
        'response_not_found',
      );
    }
    return responses;
  };

  app.get<{ Params: { id: string }; Querystring: QueryParameters }>('/v1/responses/:id', async (request) => {
    if (singleQueryValue(request.query, 'stream') === 'true') {
      throw new InvalidRequestError('Streaming a stored response again is not supported by this gateway.', {
        param: 'stream',
        code: 'unsupported_parameter',
      });
    }
    return stored(request.params.id).get(request.principal!.tenantId, request.params.id);
  });

  app.delete<{ Params: { id: string } }>('/v1/responses/:id', async (request) =>
    stored(request.params.id).delete(request.principal!.tenantId, request.params.id),
  );

  app.post<{ Params: { id: string } }>('/v1/responses/:id/cancel', async (request) =>
    background === undefined
      ? stored(request.params.id).cancel(request.principal!.tenantId, request.params.id)
      : background.cancel(request.principal!.tenantId, request.params.id),
  );

  app.get<{ Params: { id: string }; Querystring: QueryParameters }>(
    '/v1/responses/:id/input_items',
    async (request) => {
      const order = singleQueryValue(request.query, 'order') ?? 'desc';
      if (order !== 'asc' && order !== 'desc') {
        throw new InvalidRequestError("order must be 'asc' or 'desc'.", { param: 'order', code: 'invalid_value' });
      }
      const after = singleQueryValue(request.query, 'after');
      return stored(request.params.id).inputItems(request.principal!.tenantId, request.params.id, {
        limit: pageLimit(singleQueryValue(request.query, 'limit'), 20, 100),
        order,
        ...(after === undefined ? {} : { after }),
      });
    },
  );
}
