/**
 * Reading stored responses back: `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
 * `GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`, in OpenAI's shapes
 * (`client.responses.retrieve`, `.delete`, `.inputItems.list`, `.cancel`). Every route reads the caller's tenant
 * only (`StoredResponses`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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

  app.get<{ Params: { id: string }; Querystring: QueryParameters }>('/v1/responses/:id', async (request, reply) => {
    const stream = singleQueryValue(request.query, 'stream');
    if (stream !== undefined && stream !== 'true' && stream !== 'false') {
      throw new InvalidRequestError("stream must be 'true' or 'false'.", { param: 'stream', code: 'invalid_value' });
    }
    if (stream !== 'true') return stored(request.params.id).get(request.principal!.tenantId, request.params.id);
    if (background === undefined) {
      throw new InvalidRequestError('This gateway stores no streams of responses to send again.', {
        param: 'stream',
        code: 'unsupported_parameter',
      });
    }
    const after = startingAfterOf(singleQueryValue(request.query, 'starting_after'));
    const tenantId = request.principal!.tenantId;
    // Refused (404, 400) before the stream opens, as an ordinary error answer.
    await background.checkStreamed(tenantId, request.params.id);
    await sendEventStream(request, reply, (write, signal) =>
      background.follow(tenantId, request.params.id, after, write, signal),
    );
    return reply;
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

/** `starting_after`: a sequence number (a decimal integer ≥ 0), or -1 (from the first event) when absent. */
function startingAfterOf(value: string | undefined): number {
  if (value === undefined) return -1;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(value)) {
    throw new InvalidRequestError('starting_after must be a sequence number: an integer of 0 or more.', {
      param: 'starting_after',
      code: 'invalid_value',
    });
  }
  return Number(value);
}

/**
 * Sends a response's stored events as a Server-Sent Events stream on `reply`, taken over from Fastify: `follow` writes
 * them (and waits when the client's buffer is full), and `signal` aborts when the client leaves. The headers hooks set
 * on `reply` (the request id, CORS) go out with the stream's own.
 */
export async function sendEventStream(
  request: FastifyRequest,
  reply: FastifyReply,
  follow: (write: (frames: string) => Promise<void> | undefined, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const raw = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) raw.setHeader(name, value);
  }
  reply.hijack();
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-request-id': request.id,
  });
  const left = new AbortController();
  raw.on('close', () => left.abort());
  const write = (frames: string): Promise<void> | undefined => {
    if (left.signal.aborted || raw.write(frames)) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        raw.off('drain', done);
        left.signal.removeEventListener('abort', done);
        resolve();
      };
      raw.on('drain', done);
      left.signal.addEventListener('abort', done, { once: true });
    });
  };
  try {
    await follow(write, left.signal);
  } finally {
    if (!left.signal.aborted) raw.end();
  }
}
