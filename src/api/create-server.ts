/**
 * The HTTP surface: OpenAI-compatible routes under `/v1`, the admin API under `/admin/v1`, health and metrics.
 * Each handler validates (compiled schemas), calls one service function and maps the result or the error.
 */
import { performance } from 'node:perf_hooks';
import fastifyCors from '@fastify/cors';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { RATE_LIMIT_HEADER_NAMES, rateLimitHeaders } from '../admission/rate-limit-headers.js';
import { BillingQueries } from '../billing/billing-queries.js';
import type { BillingService } from '../billing/billing-service.js';
import type { Conversations } from '../conversations/conversations.js';
import {
  AuthenticationError,
  GatewayError,
  InvalidRequestError,
  toOpenAIErrorBody,
  UnavailableError,
} from '../errors/gateway-error.js';
import { countPromptTokensOffThread } from '../metering/prompt-token-pool.js';
import { newRequestTrace, type RequestRecorder, type RequestTrace } from '../metering/request-recorder.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { AdmissionGate } from '../relay/admission-gate.js';
import type { RelayRequest, RelayService } from '../relay/relay-service.js';
import type { SseSink } from '../relay/sse-sink.js';
import type { BackgroundResponses } from '../responses/background-responses.js';
import {
  COMPACTION_PROMPT,
  type CompactionSeal,
  compactedResponse,
  summaryOf,
  summaryTokenLimit,
} from '../responses/compaction.js';
import type { StoredResponses } from '../responses/stored-responses.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import type { Store } from '../store/store.js';
import type { KeyService, Principal } from '../tenancy/key-service.js';
import type { PlanService } from '../tenancy/plan-service.js';
import type { TenantService } from '../tenancy/tenant-service.js';
import type { UpstreamEndpoint } from '../upstreams/upstream.js';
import { registerAdminBillingRoutes } from './admin-billing-routes.js';
import { registerAdminFleetRoutes } from './admin-fleet-routes.js';
import { registerAdminRoutes } from './admin-routes.js';
import { REQUEST_AJV_OPTIONS } from './ajv-options.js';
import { type BatchRouteServices, registerAdminBatchRoutes, registerBatchesRoutes } from './batches-routes.js';
import { registerBillingRoutes } from './billing-routes.js';
import type { ConnectionSignals } from './connection-signals.js';
import { registerConversationsRoutes } from './conversations-routes.js';
import { toClientError } from './error-reply.js';
import { registerFilesRoutes } from './files-routes.js';
import { HttpSseSink, hijackForStream } from './http-sse-sink.js';
import type { OutstandingRequests } from './outstanding-requests.js';
import { newRequestId } from './request-id.js';
import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  EmbeddingRequestSchema,
  type GenerationRequest,
} from './request-schemas.js';
import { inputItemsOf, newResponseContext, responseFromChat, responsesUsage } from './responses/responses-object.js';
import {
  asResponsesError,
  type CompactRequest,
  CompactRequestSchema,
  chatRequestOf,
  conversationIdOf,
  type InputTokensRequest,
  InputTokensRequestSchema,
  type ResponsesRequest,
  ResponsesRequestSchema,
  refuseTwoHistories,
} from './responses/responses-request.js';
import { ResponsesStreamSink } from './responses/responses-stream-sink.js';
import {
  type EventStreamServices,
  registerStoredResponsesRoutes,
  sendEventStream,
} from './responses/stored-responses-routes.js';
import { truncateToWindow } from './responses/truncation.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set for `/v1` requests: what the request log will record. */
    trace: RequestTrace | undefined;
    /** Set once the API key is authenticated. */
    principal: Principal | undefined;
  }
}

/** Everything the HTTP layer calls. */
export interface ServerServices {
  relay: RelayService;
  keys: KeyService;
  tenants: TenantService;
  recorder: RequestRecorder;
  metrics: GatewayMetrics;
  billing: BillingService;
  store: Store;
  plans: PlanService;
  router: DeploymentRouter;
  gate: AdmissionGate;
  /** The Files and Batches API; undefined disables it (503). */
  batches?: BatchRouteServices;
  /** Stored Responses API responses; undefined stores none. */
  responses?: StoredResponses;
  /** The Conversations API; undefined disables it (503). */
  conversations?: Conversations;
  /** Responses run in the background (`background: true`); undefined refuses them (it needs stored responses). */
  background?: BackgroundResponses;
  /** Seals the summaries of compacted conversations (`/v1/responses/compact`) and opens them in requests. */
  compaction: CompactionSeal;
  /** The API requests not over yet, for shutdown to wait on. */
  outstanding: OutstandingRequests;
  /** The abort signals of API requests, for shutdown to stop what still runs. */
  connections: ConnectionSignals;
  /** The admin bearer token. */
  adminToken: string;
  /** Where unexpected failures (500 `internal_error`) and unclassified store failures are logged (Fastify's is off). */
  logger: Logger;
  /** True when the gateway can serve (store reachable, upstreams configured). */
  ready(): Promise<boolean>;
  /**
   * Resolves once every request that ended before the call is in the store; billing reads await it (see
   * `BillingQueriesOptions.settled`).
   */
  settled: () => Promise<void>;
}

/** Options of `createServer`. */
export interface ServerOptions {
  /** Largest accepted body, bytes. */
  bodyLimitBytes: number;
  /** Cross-origin access for web pages; none when absent or without origins. */
  cors?: CorsOptions;
}

/** Which web pages may call the gateway from a browser (`server.cors`). */
export interface CorsOptions {
  /** Exact origins (`https://app.example.com`), or `*` for any. */
  origins: readonly string[];
  /** How long a browser may reuse a preflight's answer, seconds. */
  maxAgeSeconds: number;
}

/**
 * Response headers a page's script may read besides the CORS-safelisted ones: the request id to quote to support,
 * OpenAI's rate-limit headers and `retry-after` (SDKs read both to pace their retries).
 */
const EXPOSED_HEADERS = ['x-request-id', ...RATE_LIMIT_HEADER_NAMES];

/** Builds the Fastify application (not yet listening). */
export function createServer(services: ServerServices, options: ServerOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimitBytes,
    genReqId: () => newRequestId(),
    requestIdHeader: false,
    // While closing, requests arriving on connections still open are refused by the `onRequest` hook below, with an
    // OpenAI error body and the request id (Fastify's own 503 has neither).
    return503OnClosing: false,
    // Closing drops idle keep-alive connections at once instead of waiting for clients to hang up.
    forceCloseConnections: 'idle',
    ajv: REQUEST_AJV_OPTIONS,
  });
  app.decorateRequest('trace', undefined);
  app.decorateRequest('principal', undefined);
  // Only JSON bodies (and multipart in the Files API's scope): a JSON text sent as `text/plain` is refused with 415 as
  // any other type is, rather than parsed as a string and refused for not being an object.
  app.removeContentTypeParser('text/plain');
  if (options.cors !== undefined && options.cors.origins.length > 0) {
    // Answers preflights itself (204) and adds the allow-origin headers to every response of an allowed origin.
    // Credentials stay off: keys travel in `Authorization`, which the preflight's answer allows, never in cookies.
    app.register(fastifyCors, {
      origin: options.cors.origins.includes('*') ? '*' : [...options.cors.origins],
      methods: ['GET', 'POST', 'DELETE'],
      exposedHeaders: EXPOSED_HEADERS,
      maxAge: options.cors.maxAgeSeconds,
    });
  }

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // A preflight carries no key: the CORS plugin answers it, or, with CORS off, the router (404).
    const api = request.url.startsWith('/v1/') && request.method !== 'OPTIONS';
    const trace = api ? newRequestTrace(request.id, endpointOf(request.url), Date.now(), performance.now()) : undefined;
    request.trace = trace;
    // Fastify has set `Connection: close` on it: the client retries on a new connection, to another instance.
    if (closing) throw new UnavailableError('The gateway is shutting down; retry the request.', 'server_shutting_down');
    if (trace === undefined) return;
    const principal = await services.keys.authenticate(request.headers.authorization);
    request.principal = principal;
    trace.tenantId = principal.tenantId;
    trace.keyId = principal.keyId;
  });

  // Requests that ended without the relay recording them (errors anywhere, model listings) are recorded here.
  app.addHook('onResponse', async (request, reply) => {
    const trace = request.trace;
    if (trace === undefined || trace.recorded) return;
    if (trace.status === 0) trace.status = reply.statusCode;
    services.outstanding.hold(services.recorder.finish(trace));
  });

  // An opaque 500 tells the client nothing: its cause goes to the log, under the request id the client was given. So
  // does a store failure no service had classified (a billing read, an admin route) before it became a 503.
  const logFailure = (clientError: GatewayError, error: unknown, request: FastifyRequest) => {
    if (clientError.code === 'internal_error') {
      services.logger.error({ err: error, requestId: request.id, url: request.url }, 'internal error');
    } else if (clientError.code === 'store_unavailable' && !(error instanceof GatewayError)) {
      services.logger.warn({ err: error, requestId: request.id, url: request.url }, 'store unavailable');
    }
  };

  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const clientError = toClientError(error, options.bodyLimitBytes, request.headers['content-encoding']);
    logFailure(clientError, error, request);
    sendError(request, reply, clientError);
  });

  app.setNotFoundHandler((request, reply) => {
    sendError(request, reply, toClientError({ statusCode: 404 }, options.bodyLimitBytes));
  });

  const generation = (endpoint: UpstreamEndpoint) => async (request: FastifyRequest, reply: FastifyReply) => {
    const trace = request.trace!;
    const body = request.body as GenerationRequest;
    const relayRequest = {
      trace,
      principal: request.principal!,
      endpoint,
      body,
      signal: services.connections.of(reply.raw),
    };
    if (body.stream === true) {
      hijackForStream(request, reply);
      await relayStream(request, reply, relayRequest);
      return reply;
    }
    const result = await relayWhole(relayRequest);
    reply.headers(services.relay.responseHeaders(trace));
    return result;
  };

  /**
   * Records a request the relay failed, as the error its client gets (or would have got, had it stayed). Returns that
   * error.
   */
  const recordFailure = (trace: RequestTrace, error: unknown): GatewayError => {
    const clientError = toClientError(error, options.bodyLimitBytes);
    trace.status = clientError.status;
    trace.errorCode = clientError.code;
    services.outstanding.hold(services.recorder.finish(trace));
    return clientError;
  };

  /**
   * The items a Responses request goes on from: those of its `previous_response_id`, or of its `conversation`;
   * undefined when it names neither. A gateway that keeps neither refuses them, as `chatRequestOf` does without a
   * history.
   */
  const historyOf = async (
    principal: Principal,
    body: Pick<ResponsesRequest, 'previous_response_id' | 'conversation'>,
    conversationId: string | undefined,
  ): Promise<Record<string, unknown>[] | undefined> => {
    // Refused before a chain of up to 1,000 responses is read for nothing.
    refuseTwoHistories(body);
    if (typeof body.previous_response_id === 'string') {
      return services.responses?.historyOf(principal.tenantId, body.previous_response_id);
    }
    if (conversationId === undefined) return undefined;
    return services.conversations?.historyOf(principal.tenantId, conversationId);
  };

  /**
   * The chat request a Responses request becomes, with the items it goes on from; with `truncation: "auto"`, cut to
   * its model's context window (`truncateToWindow`), and then with its prompt tokens as counted for the cut.
   */
  const chatOfResponses = async (
    principal: Principal,
    body: ResponsesRequest | InputTokensRequest,
    conversationId: string | undefined,
    options: { background?: boolean } = {},
  ): Promise<{ chat: Record<string, unknown>; promptTokens?: number }> => {
    const chat = chatRequestOf(body, await historyOf(principal, body, conversationId), {
      truncates: true,
      openCompaction: services.compaction.openerFor(principal.tenantId),
      ...options,
    });
    if (body.truncation !== 'auto') return { chat };
    const model = services.relay.resolveModel(principal, 'chat', body.model);
    return truncateToWindow(chat, {
      pinned: typeof body.instructions === 'string' ? 1 : 0,
      budget: model.contextWindow - (body.max_output_tokens ?? 1),
      count: (request) => countPromptTokensOffThread('chat', request),
    });
  };

  /**
   * What is kept of a finished Response: the stored response (unless `store` is off), and, unless it failed, its
   * input and output items appended to its conversation. Undefined when nothing is kept. Runs before the client learns the response is
   * done, so that it can go on from it at once; a failure is logged (and counted), never thrown: the answer was made
   * and billed.
   */
  const keeperOf = (principal: Principal, body: ResponsesRequest, conversationId: string | undefined) => {
    const stored = services.responses?.stores(body) === true ? services.responses : undefined;
    const conversations = services.conversations;
    const appended = conversationId !== undefined && conversations !== undefined;
    if (stored === undefined && !appended) return { stored };
    const inputItems = inputItemsOf(body);
    const keep = async (response: Record<string, unknown>) => {
      await stored?.save(principal, inputItems, response);
      // A failed response (its stream broke) is stored, but its conversation goes on as if it had not been asked.
      if (!appended || response.status === 'failed') return;
      await conversations
        .appendResponse(principal.tenantId, conversationId, inputItems, response)
        .catch((error: unknown) =>
          services.logger.error(
            { err: error, responseId: response.id, conversationId },
            'response not added to its conversation',
          ),
        );
    };
    return { stored, keep };
  };

  /**
   * `background: true`: the response is stored as `queued` and answered at once; it runs on without its client
   * (`BackgroundResponses`), and its request is recorded when it ends, under this request's id. What can be refused
   * at once is: the body, the model, a previous response or conversation not found, and a response that would not be
   * stored (the client polls it).
   */
  const runInBackground = async (
    request: FastifyRequest,
    reply: FastifyReply,
    body: ResponsesRequest,
    conversationId: string | undefined,
  ): Promise<Record<string, unknown> | FastifyReply> => {
    const principal = request.principal!;
    const background = services.background;
    if (background === undefined || services.responses?.stores(body) !== true) {
      throw new InvalidRequestError(
        background === undefined
          ? 'This gateway does not store responses (responses.store is off), so it cannot run one in the background.'
          : 'A background response must be stored: background: true cannot go with store: false.',
        { param: 'background', code: 'invalid_value' },
      );
    }
    services.relay.resolveModel(principal, 'chat', body.model);
    const { chat } = await chatOfResponses(principal, body, conversationId, { background: true });
    const trace = request.trace!;
    trace.stream = body.stream === true;
    const conversations = services.conversations;
    const inputItems = inputItemsOf(body);
    const queued = await background.create({
      principal,
      trace,
      chat,
      context: newResponseContext(body, trace.receivedAt, { store: true }),
      inputItems,
      stream: body.stream === true,
      ...(conversationId === undefined || conversations === undefined
        ? {}
        : {
            onDone: (response) =>
              conversations
                .appendResponse(principal.tenantId, conversationId, inputItems, response)
                .catch((error: unknown) =>
                  services.logger.error(
                    { err: error, responseId: response.id, conversationId },
                    'response not added to its conversation',
                  ),
                ),
          }),
    });
    // The run records the request when it ends; this answer does not.
    request.trace = undefined;
    if (body.stream !== true) return queued;
    // Streamed: the client reads the run's events as they are stored; should it leave, the run goes on, and the
    // stream can be read again (`GET /v1/responses/{id}?stream=true&starting_after=N`).
    const id = String(queued.id);
    await sendEventStream(
      request,
      reply,
      (write, signal) => background.follow(principal.tenantId, id, -1, write, signal),
      eventStreams,
    );
    return reply;
  };

  /** What streams of stored events (`sendEventStream`) need: shutdown's signals, and recording their requests. */
  const eventStreams: EventStreamServices = {
    signalOf: (response) => services.connections.of(response),
    onEnd: (request, left) => {
      const trace = request.trace;
      // A background response's create request is recorded by its run.
      if (trace === undefined || trace.recorded) return;
      if (trace.status === 0) trace.status = 200;
      if (left) trace.errorCode = 'client_closed';
      services.outstanding.hold(services.recorder.finish(trace));
    },
    logger: services.logger,
  };

  /**
   * A streamed answer. `translate` (the Responses API) wraps the client's sink to rewrite what the relay writes, and
   * `clientErrorOf` the error a client gets before the stream opened.
   */
  const relayStream = async (
    request: FastifyRequest,
    reply: FastifyReply,
    relayRequest: RelayRequest,
    translate: { sink?: (sink: SseSink) => SseSink; clientErrorOf?: (error: GatewayError) => GatewayError } = {},
  ) => {
    const trace = relayRequest.trace;
    const sink = new HttpSseSink(reply.raw);
    services.outstanding.enter();
    try {
      await services.relay.stream(relayRequest, translate.sink === undefined ? sink : translate.sink(sink));
    } catch (error: unknown) {
      // Thrown only before the stream opened: answer with an ordinary error response.
      const recorded = recordFailure(trace, error);
      const clientError = translate.clientErrorOf === undefined ? recorded : translate.clientErrorOf(recorded);
      logFailure(clientError, error, request);
      if (!sink.closed) {
        reply.raw.writeHead(clientError.status, {
          'content-type': 'application/json; charset=utf-8',
          'x-request-id': trace.requestId,
          ...services.relay.responseHeaders(trace),
          ...clientError.headers,
        });
        reply.raw.end(JSON.stringify(toOpenAIErrorBody(clientError)));
      }
    } finally {
      services.outstanding.leave();
    }
  };

  /**
   * A whole answer. A failure is recorded here, as a stream's is above, rather than when its error answer has been
   * sent (`onResponse`): a client that left gets no answer, and its request must still end (rate limits, scheduler
   * capacity and the wallet reservation given back) and be logged.
   */
  const relayWhole = async (relayRequest: RelayRequest) => {
    services.outstanding.enter();
    try {
      return await services.relay.whole(relayRequest);
    } catch (error: unknown) {
      recordFailure(relayRequest.trace, error);
      throw error;
    } finally {
      services.outstanding.leave();
    }
  };

  app.post('/v1/chat/completions', { schema: { body: ChatCompletionRequestSchema } }, generation('chat'));
  app.post('/v1/completions', { schema: { body: CompletionRequestSchema } }, generation('completions'));
  // The Responses API, served as chat completions (see `responses/responses-request.ts`).
  app.post('/v1/responses', { schema: { body: ResponsesRequestSchema } }, async (request, reply) => {
    const body = request.body as ResponsesRequest;
    const trace = request.trace!;
    const principal = request.principal!;
    const conversationId = conversationIdOf(body.conversation);
    if (body.background === true) return runInBackground(request, reply, body, conversationId);
    // With truncation the cut request was counted already.
    const { chat, promptTokens } = await chatOfResponses(principal, body, conversationId);
    const relayRequest: RelayRequest = {
      trace,
      principal,
      endpoint: 'chat',
      body: chat,
      signal: services.connections.of(reply.raw),
      ...(promptTokens === undefined ? {} : { promptTokens }),
    };
    const { stored, keep } = keeperOf(principal, body, conversationId);
    const context = newResponseContext(body, trace.receivedAt, { store: stored !== undefined });
    if (body.stream === true) {
      hijackForStream(request, reply);
      await relayStream(request, reply, relayRequest, {
        sink: (sink) => new ResponsesStreamSink(sink, context, keep),
        clientErrorOf: asResponsesError,
      });
      return reply;
    }
    const completion = await relayWhole(relayRequest).catch((error: unknown) => {
      throw asResponsesError(error);
    });
    reply.headers(services.relay.responseHeaders(trace));
    const response = responseFromChat(context, completion, trace.usage);
    await keep?.(response);
    return response;
  });
  // Input token counts (`client.responses.inputTokens.count`): the prompt tokens of the chat request the body
  // becomes, as this gateway meters them (`countPromptTokens`, tools included). No upstream call and no charge; the
  // request log records it under `input_tokens`, with no model and no tokens, as it records a model listing.
  app.post('/v1/responses/input_tokens', { schema: { body: InputTokensRequestSchema } }, async (request) => {
    const body = request.body as InputTokensRequest;
    // Checked as the request itself would be: an unknown model is a 404, one the key may not use a 403.
    services.relay.resolveModel(request.principal!, 'chat', body.model);
    // Counted as the request would be metered, in the background or not.
    const { chat, promptTokens } = await chatOfResponses(
      request.principal!,
      body,
      conversationIdOf(body.conversation),
      { background: true },
    );
    // With truncation the cut request was counted already.
    const inputTokens = promptTokens ?? (await countPromptTokensOffThread('chat', chat));
    return { object: 'response.input_tokens', input_tokens: inputTokens };
  });
  // Compaction (`client.responses.compact`): a summary of the conversation, written by the request's model through
  // the ordinary request path (limits, wallet, metering: it is billed as any answer), sealed into a compaction item
  // after the client's own messages (`responses/compaction.ts`). Nothing is stored.
  app.post('/v1/responses/compact', { schema: { body: CompactRequestSchema } }, async (request, reply) => {
    const body = request.body as CompactRequest;
    const principal = request.principal!;
    const trace = request.trace!;
    const model = services.relay.resolveModel(principal, 'chat', body.model);
    const input = body.input === undefined || body.input === null ? [] : inputItemsOf({ input: body.input });
    if (typeof body.previous_response_id !== 'string' && input.length === 0) {
      throw new InvalidRequestError('Nothing to compact: give input, previous_response_id or both.', {
        param: 'input',
        code: 'missing_required_parameter',
      });
    }
    const history = await historyOf(principal, body, undefined);
    // The conversation, then the request for its summary; `chatRequestOf` refuses what it cannot carry (a
    // previous_response_id on a gateway that stores no responses among them).
    const summaryRequest = {
      ...body,
      input: [...input, { type: 'message', role: 'user', content: COMPACTION_PROMPT }],
    } as ResponsesRequest;
    const chat = chatRequestOf(summaryRequest, history, {
      openCompaction: services.compaction.openerFor(principal.tenantId),
    });
    const promptTokens = await countPromptTokensOffThread('chat', chat);
    chat.max_completion_tokens = summaryTokenLimit(promptTokens, model.contextWindow);
    let summary = '';
    await relayWhole({
      trace,
      principal,
      endpoint: 'chat',
      body: chat,
      signal: services.connections.of(reply.raw),
      promptTokens,
      // An answer with no summary in it fails the request; it is billed all the same.
      checkAnswer: (completion) => {
        summary = summaryOf(completion);
      },
    }).catch((error: unknown) => {
      throw asResponsesError(error);
    });
    reply.headers(services.relay.responseHeaders(trace));
    const sealed = services.compaction.seal(principal.tenantId, summary);
    return compactedResponse([...(history ?? []), ...input], sealed, trace.receivedAt, responsesUsage(trace.usage));
  });
  registerStoredResponsesRoutes(app, services.responses, services.background, eventStreams);
  registerConversationsRoutes(app, services.conversations);

  app.post('/v1/embeddings', { schema: { body: EmbeddingRequestSchema } }, async (request, reply) => {
    const relayRequest = {
      trace: request.trace!,
      principal: request.principal!,
      endpoint: 'embeddings' as const,
      body: request.body as Record<string, unknown>,
      signal: services.connections.of(reply.raw),
    };
    const result = await relayWhole(relayRequest);
    reply.headers(services.relay.responseHeaders(relayRequest.trace));
    return result;
  });

  app.get('/v1/models', async (request) => ({
    object: 'list',
    data: services.relay.listModels(request.principal!).map(modelObject),
  }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) =>
    modelObject(services.relay.getModel(request.principal!, request.params.model)),
  );

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const ready = await services.ready();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable' });
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await services.metrics.registry.metrics();
    return reply.header('content-type', services.metrics.registry.contentType).send(text);
  });

  const billingQueries = new BillingQueries(services.store, services.billing, { settled: services.settled });
  registerBillingRoutes(app, billingQueries);
  // Its own scope: the multipart parser applies to the Files API only.
  app.register(async (scope) => registerFilesRoutes(scope, services.batches?.service));
  registerBatchesRoutes(app, services.batches);
  app.register(
    async (admin) => {
      await registerAdminRoutes(admin, services);
      registerAdminBillingRoutes(admin, {
        store: services.store,
        billing: services.billing,
        queries: billingQueries,
        servedModels: () => services.relay.modelNames(),
      });
      registerAdminFleetRoutes(admin, services);
      registerAdminBatchRoutes(admin, services.batches);
    },
    { prefix: '/admin/v1' },
  );
  return app;
}

function sendError(request: FastifyRequest, reply: FastifyReply, error: GatewayError): void {
  const trace = request.trace;
  if (trace !== undefined && trace.status === 0) {
    trace.status = error.status;
    trace.errorCode = error.code;
  }
  if (trace?.rateLimit !== undefined) reply.headers(rateLimitHeaders(trace.rateLimit));
  if (error instanceof AuthenticationError) reply.header('www-authenticate', 'Bearer');
  reply.code(error.status).headers(error.headers).send(toOpenAIErrorBody(error));
}

function endpointOf(url: string): string {
  if (url.startsWith('/v1/chat/completions')) return 'chat';
  if (url.startsWith('/v1/completions')) return 'completions';
  if (url.startsWith('/v1/embeddings')) return 'embeddings';
  if (url.startsWith('/v1/responses/input_tokens')) return 'input_tokens';
  if (url === '/v1/responses/compact' || url.startsWith('/v1/responses/compact?')) return 'responses_compact';
  // Reading, listing and deleting stored responses: `/v1/responses/{id}…`.
  if (url.startsWith('/v1/responses/')) return 'stored_responses';
  if (url.startsWith('/v1/responses')) return 'responses';
  if (url.startsWith('/v1/models')) return 'models';
  if (url.startsWith('/v1/conversations')) return 'conversations';
  return 'other';
}

function modelObject(model: { name: string; created: number }) {
  return { id: model.name, object: 'model', created: model.created, owned_by: 'tollgate' };
}
