/**
 * Reading stored responses back: `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
 * `GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`, in OpenAI's shapes
 * (`client.responses.retrieve`, `.delete`, `.inputItems.list`, `.cancel`). Every route reads the caller's tenant
 * only (`StoredResponses`).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { InvalidRequestError } from '../../errors/gateway-error.js';
import type { Logger } from '../../observability/logger.js';
import type { BackgroundResponses } from '../../responses/background-responses.js';
import { responseNotFound, type StoredResponses } from '../../responses/stored-responses.js';
import { HttpSseSink, hijackForStream } from '../http-sse-sink.js';
import { itemsPageQuery, type QueryParameters, singleQueryValue } from '../page-limit.js';

/** What sending a stream of stored events needs from the server around it. */
export interface EventStreamServices {
  /** Aborts when the client leaves, or when shutdown stops what still runs (`ConnectionSignals.of`). */
  signalOf: (response: ServerResponse) => AbortSignal;
  /** Records the request once its stream is over (`left`: its client went away before the end). */
  onEnd: (request: FastifyRequest, left: boolean) => void;
  logger: Logger;
}

/**
 * Registers the stored-response routes; without `responses` (a store that keeps none) each answers 404. With
 * `background`, cancel and streaming again serve background responses.
 */
export function registerStoredResponsesRoutes(
  app: FastifyInstance,
  responses: StoredResponses | undefined,
  background: BackgroundResponses | undefined,
  streams: EventStreamServices,
): void {
  const stored = (id: string): StoredResponses => {
    // A gateway that stores none answers as for a response never made.
    if (responses === undefined) throw responseNotFound(id);
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
    await sendEventStream(
      request,
      reply,
      (write, signal) => background.follow(tenantId, request.params.id, after, write, signal),
      streams,
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

  app.get<{ Params: { id: string }; Querystring: QueryParameters }>('/v1/responses/:id/input_items', async (request) =>
    stored(request.params.id).inputItems(request.principal!.tenantId, request.params.id, itemsPageQuery(request.query)),
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

/** How often an idle event stream gets a comment line, so that proxies do not cut it as idle, ms. */
const KEEP_ALIVE_MS = 15_000;

/**
 * Sends a response's stored events as a Server-Sent Events stream on `reply` (`HttpSseSink`): `follow` writes them,
 * waiting when the client's buffer is full, until the signal it is given aborts: the client left, or shutdown stops it
 * (the stream then ends; the client may read on from its last event). A stream that waits (a background response
 * waiting out a rate limit) gets a comment line every 15 s. The request is recorded once the stream is over (`onEnd`):
 * Fastify records a hijacked reply only when it finishes, and a client that leaves never lets it.
 */
export async function sendEventStream(
  request: FastifyRequest,
  reply: FastifyReply,
  follow: (write: (frames: string) => Promise<void> | undefined, signal: AbortSignal) => Promise<void>,
  services: EventStreamServices,
): Promise<void> {
  hijackForStream(request, reply);
  const sink = new HttpSseSink(reply.raw);
  sink.open({});
  const signal = services.signalOf(reply.raw);
  const keepAlive = setInterval(() => void sink.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
  try {
    await follow((frames) => sink.write(frames), signal);
  } catch (error: unknown) {
    // The stream is open: no error answer can follow. `follow` sent what it could (an `error` event); it ends.
    services.logger.error({ err: error, requestId: request.id }, 'stream of stored events failed');
  } finally {
    clearInterval(keepAlive);
    services.onEnd(request, sink.closed);
    sink.end();
  }
}
