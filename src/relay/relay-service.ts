/**
 * The request path after authentication: model lookup and permission → context check → route → upstream call →
 * relay (whole or streamed) → usage (reported or estimated) → record. HTTP specifics stay in `src/api`.
 */
import { performance } from 'node:perf_hooks';
import type { BillingService } from '../billing/billing-service.js';
import { type Catalog, type CatalogModel, type Deployment, modelServes } from '../catalog/catalog.js';
import {
  GatewayError,
  InvalidRequestError,
  NotFoundError,
  PermissionError,
  toGatewayError,
  toOpenAIErrorBody,
  UpstreamError,
} from '../errors/gateway-error.js';
import type { RequestRecorder, RequestTrace } from '../metering/request-recorder.js';
import { countPromptTokens, countTextTokens } from '../metering/token-counter.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import type { Principal } from '../tenancy/key-service.js';
import type { UpstreamEndpoint, UpstreamRequest } from '../upstreams/upstream.js';
import { toOpenAIUsage, type Usage } from '../upstreams/usage.js';
import type { SseSink } from './sse-sink.js';

/** A validated request ready to be relayed. */
export interface RelayRequest {
  trace: RequestTrace;
  principal: Principal;
  endpoint: UpstreamEndpoint;
  /** The client's body, validated; never mutated. */
  body: Readonly<Record<string, unknown>>;
}

/** A stream being relayed: what a checkpoint needs. */
export interface InFlightStream {
  trace: RequestTrace;
  estimatedPromptTokens: number;
  /** Content delivered to the client so far. */
  deliveredText: string;
}

/** A model the key may use, with the request's token estimate. */
interface PreparedRequest {
  model: CatalogModel;
  deployment: Deployment;
  upstreamRequest: UpstreamRequest;
  /** Prompt tokens by the gateway's tokenizer. */
  estimatedPromptTokens: number;
  abort: AbortController;
}

/** Relays OpenAI requests to the fleet. */
export class RelayService {
  /** Streams being relayed, for delivered-token checkpoints. */
  readonly inFlightStreams = new Map<string, InFlightStream>();

  constructor(
    private readonly catalog: Catalog,
    private readonly router: DeploymentRouter,
    private readonly recorder: RequestRecorder,
    private readonly billing: BillingService,
    private readonly metrics: GatewayMetrics,
  ) {}

  /** Models the principal may use. */
  listModels(principal: Principal): CatalogModel[] {
    return this.catalog.list().filter((model) => principal.models === null || principal.models.has(model.name));
  }

  /** One model, if the principal may use it (404 otherwise: a model it may not use is not shown to exist). */
  getModel(principal: Principal, name: string): CatalogModel {
    const model = this.catalog.get(name);
    if (model === undefined || (principal.models !== null && !principal.models.has(name))) {
      throw new NotFoundError(
        `The model '${name}' does not exist or you do not have access to it.`,
        'model_not_found',
        {
          param: 'model',
        },
      );
    }
    return model;
  }

  /** A whole answer. Resolves with the response body after the request is recorded. */
  async whole(request: RelayRequest): Promise<Record<string, unknown>> {
    const { trace } = request;
    const prepared = await this.prepare(request);
    const inFlight = this.metrics.inFlight.labels(request.endpoint);
    inFlight.inc();
    try {
      const result = await prepared.deployment.upstream.complete(prepared.upstreamRequest);
      const body = result.body;
      body.model = prepared.model.name;
      trace.usage = result.usage ?? estimateWholeUsage(request.endpoint, body, prepared.estimatedPromptTokens);
      trace.status = 200;
      await this.recorder.finish(trace);
      return body;
    } catch (error: unknown) {
      throw this.upstreamFailure(prepared.deployment, error);
    } finally {
      inFlight.dec();
    }
  }

  /**
   * A streamed answer, relayed event by event with backpressure. Errors before the upstream accepted the request are
   * thrown (the client gets an ordinary error response); after that they end the stream with an error event.
   */
  async stream(request: RelayRequest, sink: SseSink): Promise<void> {
    const { trace } = request;
    const prepared = await this.prepare(request);
    const { deployment, abort } = prepared;
    const clientWantsUsage =
      (request.body.stream_options as { include_usage?: boolean } | null | undefined)?.include_usage === true;
    const inFlight = this.metrics.inFlight.labels(request.endpoint);
    inFlight.inc();
    sink.onClose(() => abort.abort());
    let upstreamStream: Awaited<ReturnType<typeof deployment.upstream.stream>>;
    try {
      upstreamStream = await deployment.upstream.stream(prepared.upstreamRequest);
    } catch (error: unknown) {
      inFlight.dec();
      throw this.upstreamFailure(deployment, error);
    }
    trace.status = 200;
    sink.open({ 'x-request-id': trace.requestId });
    const rewrite = modelRewriter(deployment.upstreamModel, prepared.model.name, !clientWantsUsage);
    const progress: InFlightStream = {
      trace,
      estimatedPromptTokens: prepared.estimatedPromptTokens,
      deliveredText: '',
    };
    this.inFlightStreams.set(trace.requestId, progress);
    let deliveredText = '';
    let reported: Usage | undefined;
    let lastChunk: string | undefined;
    let failure: GatewayError | undefined;
    try {
      for await (const event of upstreamStream.events) {
        if (sink.closed) break;
        if (event.type === 'usage') {
          reported = event.usage;
          if (clientWantsUsage) await sink.write(`data: ${rewrite(event.data)}\n\n`);
          continue;
        }
        if (event.usage !== undefined) reported = event.usage;
        deliveredText += event.text;
        progress.deliveredText = deliveredText;
        lastChunk = event.data;
        if (trace.firstTokenAt === null) trace.firstTokenAt = performance.now();
        const data = event.usage !== undefined && !clientWantsUsage ? withoutUsage(event.data) : rewrite(event.data);
        const pending = sink.write(`data: ${data}\n\n`);
        if (pending !== undefined) await pending;
      }
    } catch (error: unknown) {
      failure = toGatewayError(error);
    } finally {
      inFlight.dec();
      this.inFlightStreams.delete(trace.requestId);
    }

    const completed = failure === undefined && !sink.closed;
    trace.usage =
      completed && reported !== undefined ? reported : estimateStreamUsage(prepared, deliveredText, reported);
    if (sink.closed) {
      trace.errorCode = 'client_closed';
    } else if (failure !== undefined) {
      trace.errorCode = failure.code;
      this.metrics.upstreamErrors.labels(deployment.id, failure.code).inc();
    }
    const committed = this.recorder.finish(trace);
    if (sink.closed) {
      await committed;
      return;
    }
    if (failure !== undefined) {
      await committed;
      await sink.write(`data: ${JSON.stringify(toOpenAIErrorBody(failure))}\n\n`);
      sink.end();
      return;
    }
    if (clientWantsUsage && reported === undefined && trace.usage !== undefined) {
      await sink.write(`data: ${synthesizedUsageChunk(lastChunk, prepared.model.name, trace.usage)}\n\n`);
    }
    await committed;
    await sink.write('data: [DONE]\n\n');
    sink.end();
  }

  private async prepare(request: RelayRequest): Promise<PreparedRequest> {
    const { body, endpoint, principal, trace } = request;
    const model = this.resolveModel(principal, endpoint, body.model as string);
    trace.model = model.name;
    const estimatedPromptTokens = countPromptTokens(endpoint, body);
    if (endpoint !== 'embeddings') checkContextWindow(model, body, estimatedPromptTokens);
    const quote = this.billing.quote({
      tenantId: principal.tenantId,
      model: model.name,
      receivedAt: trace.receivedAt,
      promptTokens: estimatedPromptTokens,
      maxOutputTokens: endpoint === 'embeddings' ? 0 : (requestedOutputTokens(body) ?? model.maxOutputTokens),
      batch: trace.batch,
    });
    trace.reservation = await this.billing.reserve(principal.tenantId, principal.keyId, quote, trace.receivedAt);
    const deployment = this.router.pick(model);
    if (deployment === undefined) {
      throw new UpstreamError(`No deployment of '${model.name}' is available.`, { code: 'no_healthy_deployment' });
    }
    trace.deployment = deployment.id;
    trace.attempts = 1;
    const abort = new AbortController();
    return {
      model,
      deployment,
      estimatedPromptTokens,
      abort,
      upstreamRequest: {
        endpoint,
        body: { ...body, model: deployment.upstreamModel },
        requestId: trace.requestId,
        signal: abort.signal,
      },
    };
  }

  private resolveModel(principal: Principal, endpoint: UpstreamEndpoint, name: string): CatalogModel {
    const model = this.catalog.get(name);
    if (model === undefined) {
      throw new NotFoundError(`The model '${name}' does not exist.`, 'model_not_found', { param: 'model' });
    }
    if (principal.models !== null && !principal.models.has(name)) {
      throw new PermissionError(`This API key may not use the model '${name}'.`, 'model_not_allowed', {
        param: 'model',
      });
    }
    if (!modelServes(model.kind, endpoint)) {
      throw new InvalidRequestError(`The model '${name}' does not support this endpoint.`, {
        code: 'model_not_supported',
        param: 'model',
      });
    }
    return model;
  }

  private upstreamFailure(deployment: Deployment, error: unknown): GatewayError {
    const failure = toGatewayError(error);
    this.metrics.upstreamErrors.labels(deployment.id, failure.code).inc();
    // An upstream that rejected the request itself (bad parameter, context too long) answers the client with its
    // own 4xx; its credential and capacity problems (401, 403, 429) stay gateway-side 502s.
    if (
      failure instanceof UpstreamError &&
      failure.upstreamStatus !== undefined &&
      [400, 404, 409, 413, 422].includes(failure.upstreamStatus)
    ) {
      return new GatewayError(
        failure.upstreamStatus === 404 ? 404 : 400,
        'invalid_request_error',
        'upstream_rejected',
        failure.message,
        false,
        {
          cause: failure,
        },
      );
    }
    return failure;
  }
}

/** 400 `context_length_exceeded` when the prompt plus the requested output cannot fit the model's window. */
function checkContextWindow(model: CatalogModel, body: Readonly<Record<string, unknown>>, promptTokens: number): void {
  const requested = requestedOutputTokens(body);
  const needed = promptTokens + (requested ?? 1);
  if (needed > model.contextWindow) {
    throw new InvalidRequestError(
      `This model's maximum context length is ${model.contextWindow} tokens. However, you requested ${needed} tokens ` +
        `(${promptTokens} in the messages, ${requested ?? 1} in the completion).`,
      { code: 'context_length_exceeded', param: requested === undefined ? 'messages' : 'max_tokens' },
    );
  }
}

/** `max_completion_tokens` or `max_tokens`, when the client set one. */
export function requestedOutputTokens(body: Readonly<Record<string, unknown>>): number | undefined {
  const value = body.max_completion_tokens ?? body.max_tokens;
  return typeof value === 'number' ? value : undefined;
}

function estimateWholeUsage(endpoint: UpstreamEndpoint, body: Record<string, unknown>, promptTokens: number): Usage {
  let text = '';
  if (endpoint !== 'embeddings' && Array.isArray(body.choices)) {
    for (const choice of body.choices as Array<Record<string, unknown>>) {
      const message = choice.message as Record<string, unknown> | undefined;
      if (typeof message?.content === 'string') text += message.content;
      if (typeof choice.text === 'string') text += choice.text;
    }
  }
  return {
    input: { total: promptTokens, cached: 0 },
    output: { total: text === '' ? 0 : countTextTokens(text), reasoning: 0 },
    estimated: true,
  };
}

/**
 * Usage of a stream that did not complete normally (or completed without usage): the prompt as counted by the
 * gateway and the output actually delivered. Never more than the upstream reported, when it reported.
 */
function estimateStreamUsage(prepared: PreparedRequest, deliveredText: string, reported: Usage | undefined): Usage {
  const output = deliveredText === '' ? 0 : countTextTokens(deliveredText);
  return {
    input: reported?.input ?? { total: prepared.estimatedPromptTokens, cached: 0 },
    output: {
      total: reported === undefined ? output : Math.min(output, reported.output.total),
      reasoning: 0,
    },
    estimated: true,
  };
}

/**
 * Replaces the upstream's model id with the public name in a chunk's JSON text without re-serializing it: the
 * `"model":"…"` pair can only match at a real key, since quotes inside strings are escaped. Also drops the
 * `"usage":null` that forced `include_usage` adds to every chunk when the client did not ask for usage.
 */
function modelRewriter(upstreamModel: string, publicModel: string, stripNullUsage: boolean): (data: string) => string {
  const quoted = JSON.stringify(upstreamModel);
  const needles = [`"model":${quoted}`, `"model": ${quoted}`];
  const replacement = `"model":${JSON.stringify(publicModel)}`;
  const renames = upstreamModel !== publicModel;
  return (data) => {
    let result = data;
    if (renames) {
      for (const needle of needles) {
        const at = result.indexOf(needle);
        if (at !== -1) {
          result = result.slice(0, at) + replacement + result.slice(at + needle.length);
          break;
        }
      }
    }
    if (stripNullUsage) result = result.replace(/,\s*"usage"\s*:\s*null/, '');
    return result;
  };
}

function withoutUsage(data: string): string {
  const chunk = JSON.parse(data) as Record<string, unknown>;
  delete chunk.usage;
  return JSON.stringify(chunk);
}

function synthesizedUsageChunk(lastChunk: string | undefined, model: string, usage: Usage): string {
  let id = 'chatcmpl-tollgate';
  let object = 'chat.completion.chunk';
  let created = Math.floor(Date.now() / 1000);
  if (lastChunk !== undefined) {
    try {
      const parsed = JSON.parse(lastChunk) as Record<string, unknown>;
      if (typeof parsed.id === 'string') id = parsed.id;
      if (typeof parsed.object === 'string') object = parsed.object;
      if (typeof parsed.created === 'number') created = parsed.created;
    } catch {
      // The chunk was already relayed as received; a malformed one only costs us its id here.
    }
  }
  return JSON.stringify({ id, object, created, model, choices: [], usage: toOpenAIUsage(usage) });
}
