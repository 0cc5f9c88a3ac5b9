/**
 * The request path after authentication: model and permission → context check → admission (plan, rate limits,
 * wallet, capacity) → route with failover (before the first byte only) → relay (whole or streamed, with
 * backpressure) → usage (reported or estimated) → record. HTTP specifics stay in `src/api`.
 */
import { performance } from 'node:perf_hooks';
import { rateLimitHeaders } from '../admission/rate-limit-headers.js';
import { type Catalog, type CatalogModel, type Deployment, modelServes } from '../catalog/catalog.js';
import {
  abortedRequestError,
  ClientClosedError,
  GatewayError,
  InvalidRequestError,
  NotFoundError,
  PermissionError,
  toGatewayError,
  toOpenAIErrorBody,
  UpstreamError,
} from '../errors/gateway-error.js';
import { countLongestPromptTokensOffThread, countPromptTokensOffThread } from '../metering/prompt-token-pool.js';
import type { RequestRecorder, RequestTrace } from '../metering/request-recorder.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import {
  callWithFailover,
  type FailoverAttempt,
  type FailoverResult,
  summarizeAttempts,
} from '../routing/call-with-failover.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import { type ServiceClass, serviceClassRank } from '../scheduling/service-class.js';
import type { Principal } from '../tenancy/key-service.js';
import type { UpstreamEndpoint, UpstreamRequest, UpstreamStream } from '../upstreams/upstream.js';
import type { Usage } from '../upstreams/usage.js';
import type { AdmissionGate } from './admission-gate.js';
import { chunkRewriter, synthesizedUsageChunk, withoutUsage } from './chunk-rewriting.js';
import { DeliveredText } from './delivered-text.js';
import { maxOutputTokens as maxOutputTokensOf, outputLimitParam, requestedOutputTokens } from './output-budget.js';
import { reportedServiceTier } from './service-tier.js';
import type { SseSink } from './sse-sink.js';
import { estimateStreamUsage, estimateWholeUsage } from './usage-estimate.js';

/** A validated request ready to be relayed. */
export interface RelayRequest {
  trace: RequestTrace;
  principal: Principal;
  endpoint: UpstreamEndpoint;
  /** The client's body, validated; never mutated. */
  body: Readonly<Record<string, unknown>>;
  /** Aborted when the client disconnects; it also cancels the upstream call. */
  signal: AbortSignal;
  /**
   * For batch traces only: the class to run in, overriding the plan/tier mapping (a batch line promoted to `flex`
   * or `default` as its deadline nears). Ignored for online requests.
   */
  serviceClass?: ServiceClass;
  /**
   * The prompt tokens of `body` (`countPromptTokens` of exactly this body), when the caller counted them already: a
   * long conversation is not counted twice.
   */
  promptTokens?: number;
  /**
   * Whole answers only: a check of the answer before the request is recorded. A `GatewayError` it throws fails the
   * request, recorded with that error's status and code, and its usage billed all the same: the answer was made.
   */
  checkAnswer?: (body: Record<string, unknown>) => void;
}

/** A stream being relayed: what a checkpoint needs. */
export interface InFlightStream {
  trace: RequestTrace;
  estimatedPromptTokens: number;
  /** Content delivered to the client so far. */
  delivered: DeliveredText;
}

/** Options of `RelayService`. */
export interface RelayServiceOptions {
  /** Attempts on different deployments before the first byte. Default 3. */
  maxAttempts?: number;
  /**
   * Where a stream's own failure goes once the stream is open (a fault of the gateway, not of the upstream: the
   * adapters classify every failure of theirs). The client only sees `internal_error` in the stream. Default: none.
   */
  logger?: Logger;
}

/** A request admitted and ready for its upstream call. */
interface AdmittedRequest {
  model: CatalogModel;
  estimatedPromptTokens: number;
  tokens: number;
}

/** Relays OpenAI requests to the fleet. */
export class RelayService {
  /** Streams being relayed, for delivered-token checkpoints. */
  readonly inFlightStreams = new Map<string, InFlightStream>();
  private readonly maxAttempts: number;
  private readonly logger: Logger | undefined;

  constructor(
    private readonly catalog: Catalog,
    private readonly router: DeploymentRouter,
    private readonly gate: AdmissionGate,
    private readonly recorder: RequestRecorder,
    private readonly metrics: GatewayMetrics,
    options: RelayServiceOptions = {},
  ) {
    this.maxAttempts = options.maxAttempts ?? 3;
    this.logger = options.logger;
  }

  /** Models the principal may use. */
  /** Every model the gateway serves, by public name. */
  modelNames(): string[] {
    return this.catalog.list().map((model) => model.name);
  }

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
    const admitted = await this.admit(request);
    const inFlight = this.metrics.inFlight.labels(request.endpoint);
    inFlight.inc();
    try {
      const routed = await this.route(request, admitted, false, (deployment) =>
        deployment.upstream.complete(this.upstreamRequest(request, admitted, deployment)),
      );
      const body = routed.value.body;
      body.model = admitted.model.name;
      if (request.endpoint !== 'embeddings' && trace.serviceClass !== undefined) {
        body.service_tier = reportedServiceTier(trace.serviceClass);
      }
      trace.usage =
        routed.value.usage ?? (await estimateWholeUsage(request.endpoint, body, admitted.estimatedPromptTokens));
      trace.status = 200;
      try {
        request.checkAnswer?.(body);
      } catch (error: unknown) {
        if (!(error instanceof GatewayError)) throw error;
        trace.status = error.status;
        trace.errorCode = error.code;
        await this.recorder.finish(trace);
        throw error;
      }
      await this.recorder.finish(trace);
      return body;
    } finally {
      inFlight.dec();
    }
  }

  /**
   * A streamed answer, relayed event by event with backpressure. Errors before the upstream accepted the request are
   * thrown (the client gets an ordinary error response, after failover to other deployments); after that they end
   * the stream with an error event and are never retried.
   */
  async stream(request: RelayRequest, sink: SseSink): Promise<void> {
    const { trace } = request;
    const admitted = await this.admit(request);
    const clientWantsUsage =
      (request.body.stream_options as { include_usage?: boolean } | null | undefined)?.include_usage === true;
    const inFlight = this.metrics.inFlight.labels(request.endpoint);
    inFlight.inc();
    let routed: FailoverResult<UpstreamStream>;
    try {
      routed = await this.route(request, admitted, true, (deployment) =>
        deployment.upstream.stream(this.upstreamRequest(request, admitted, deployment)),
      );
    } catch (error: unknown) {
      inFlight.dec();
      throw error;
    }
    const { deployment, attempt } = routed;
    trace.status = 200;
    sink.open({ 'x-request-id': trace.requestId, ...this.responseHeaders(trace) });
    const rewrite = chunkRewriter({
      publicModel: admitted.model.name,
      serviceTier: trace.serviceClass === undefined ? undefined : reportedServiceTier(trace.serviceClass),
      stripNullUsage: !clientWantsUsage,
    });
    const delivered = new DeliveredText();
    this.inFlightStreams.set(trace.requestId, {
      trace,
      estimatedPromptTokens: admitted.estimatedPromptTokens,
      delivered,
    });
    let reported: Usage | undefined;
    let lastChunk: string | undefined;
    let failure: GatewayError | undefined;
    /** The failure is the gateway's own (logged), not one the upstream adapter reported. */
    let internal = false;
    /** The gateway stopped the call (shutdown): the stream ends with `failure`, held against no deployment. */
    let stopped = false;
    try {
      for await (const event of routed.value.events) {
        if (sink.closed) break;
        if (event.type === 'usage') {
          reported = event.usage;
          if (clientWantsUsage) await sink.write(`data: ${rewrite(event.data)}\n\n`);
          continue;
        }
        if (event.usage !== undefined) reported = event.usage;
        delivered.append(event.text);
        lastChunk = event.data;
        if (trace.firstTokenAt === null) trace.firstTokenAt = performance.now();
        const data =
          event.usage !== undefined && !clientWantsUsage ? rewrite(withoutUsage(event.data)) : rewrite(event.data);
        const pending = sink.write(`data: ${data}\n\n`);
        if (pending !== undefined) await pending;
      }
    } catch (error: unknown) {
      if (request.signal.aborted) {
        // Its signal aborted the upstream call: a client that left (the stream ends as `client_closed` below), or
        // shutdown stopping it (the stream ends with its reason). Neither is the upstream's failure nor a fault of ours.
        const reason = abortedRequestError(request.signal);
        if (!(reason instanceof ClientClosedError)) {
          failure = reason;
          stopped = true;
        }
      } else {
        failure = toGatewayError(error);
        internal = !(error instanceof GatewayError);
      }
      if (internal) {
        this.logger?.error({ err: error, requestId: trace.requestId, deployment: deployment.id }, 'internal error');
      }
    } finally {
      inFlight.dec();
      this.inFlightStreams.delete(trace.requestId);
    }
    // A stream that arrived within one turn (a short answer, or a fast upstream) then leaves in one write with its end.
    sink.holdForEnd();

    const completed = failure === undefined && !sink.closed;
    trace.usage =
      completed && reported !== undefined
        ? reported
        : await estimateStreamUsage(admitted.estimatedPromptTokens, delivered.text, reported);
    if (sink.closed) {
      trace.errorCode = 'client_closed';
      attempt.cancel();
    } else if (failure !== undefined) {
      trace.errorCode = failure.code;
      if (stopped) {
        attempt.cancel();
      } else {
        attempt.fail(failure);
        if (!internal) this.metrics.upstreamErrors.labels(deployment.id, failure.code).inc();
      }
    } else {
      attempt.succeed();
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
    if (clientWantsUsage && reported === undefined) {
      const tier = trace.serviceClass === undefined ? undefined : reportedServiceTier(trace.serviceClass);
      await sink.write(`data: ${synthesizedUsageChunk(lastChunk, admitted.model.name, trace.usage, tier)}\n\n`);
    }
    await committed;
    await sink.write('data: [DONE]\n\n');
    sink.end();
  }

  /** Rate-limit headers for a response of this request (empty when no limit applies). */
  responseHeaders(trace: RequestTrace): Record<string, string> {
    return trace.rateLimit === undefined ? {} : rateLimitHeaders(trace.rateLimit);
  }

  private async admit(request: RelayRequest): Promise<AdmittedRequest> {
    const { body, endpoint, principal, trace } = request;
    const model = this.resolveModel(principal, endpoint, body.model as string);
    trace.model = model.name;
    const counted = request.promptTokens ?? countPromptTokensOffThread(endpoint, body);
    const estimatedPromptTokens = typeof counted === 'number' ? counted : await counted;
    if (endpoint !== 'embeddings' && estimatedPromptTokens + (requestedOutputTokens(body) ?? 1) > model.contextWindow) {
      await refuseOverContextWindow(model, endpoint, body, estimatedPromptTokens);
    }
    const maxOutputTokens = maxOutputTokensOf(endpoint, body, model.maxOutputTokens);
    await this.gate.admit({
      trace,
      principal,
      model,
      estimatedPromptTokens,
      maxOutputTokens,
      requestedTier: body.service_tier,
      signal: request.signal,
      ...(request.serviceClass === undefined ? {} : { serviceClass: request.serviceClass }),
    });
    return { model, estimatedPromptTokens, tokens: estimatedPromptTokens + maxOutputTokens };
  }

  /** The pre-first-byte phase on the best deployment, failing over to others on retryable errors. */
  private async route<T>(
    request: RelayRequest,
    admitted: AdmittedRequest,
    keepOpen: boolean,
    call: (deployment: Deployment) => Promise<T>,
  ): Promise<FailoverResult<T>> {
    const { trace } = request;
    const attempts: FailoverAttempt[] = [];
    try {
      const routed = await callWithFailover(this.router, admitted.model, call, {
        tokens: admitted.tokens,
        maxAttempts: this.maxAttempts,
        signal: request.signal,
        keepOpen,
        onAttempt: (attempt) => {
          attempts.push(attempt);
          trace.deployment = attempt.deployment;
          if (attempt.errorCode !== null)
            this.metrics.upstreamErrors.labels(attempt.deployment, attempt.errorCode).inc();
        },
      });
      return routed;
    } catch (error: unknown) {
      // The call failed because its signal aborted it (the client left, or shutdown stopped it): not the upstream's
      // failure, nor a fault of ours.
      if (request.signal.aborted) throw abortedRequestError(request.signal);
      throw upstreamFailure(error);
    } finally {
      // Every attempt, failed ones included, is visible in the request log.
      trace.attempts = attempts.length;
      if (attempts.length > 1) trace.attemptLog = summarizeAttempts(attempts);
    }
  }

  private upstreamRequest(request: RelayRequest, admitted: AdmittedRequest, deployment: Deployment): UpstreamRequest {
    const body: Record<string, unknown> = { ...request.body, model: deployment.upstreamModel };
    const upstreamRequest: UpstreamRequest = {
      endpoint: request.endpoint,
      body,
      requestId: request.trace.requestId,
      signal: request.signal,
      promptTokens: admitted.estimatedPromptTokens,
    };
    const serviceClass = request.trace.serviceClass;
    if (serviceClass !== undefined) {
      upstreamRequest.priority = serviceClassRank(serviceClass) - serviceClassRank('default');
      // The tier the gateway admitted, not the one asked for: an OpenAI upstream runs (and bills the operator for)
      // the tier it is sent, and the tenant is billed for the one it was given.
      if (body.service_tier !== undefined && body.service_tier !== null) {
        body.service_tier = reportedServiceTier(serviceClass);
      }
    }
    return upstreamRequest;
  }

  /**
   * The model `name` for a request on `endpoint` by `principal`: 404 `model_not_found` when there is none, 403
   * `model_not_allowed` when the key may not use it, 400 `model_not_supported` when it does not serve the endpoint.
   */
  resolveModel(principal: Principal, endpoint: UpstreamEndpoint, name: string): CatalogModel {
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
}

/**
 * The client-facing error of a failed upstream call. An upstream that rejected the request itself (bad parameter,
 * context too long) answers the client with its own 4xx; its credential, configuration and capacity problems (401,
 * 403, 404, 429) stay gateway-side 502s: the client's model exists, the deployment behind it is broken.
 */
function upstreamFailure(error: unknown): GatewayError {
  const failure = toGatewayError(error);
  if (
    failure instanceof UpstreamError &&
    failure.upstreamStatus !== undefined &&
    [400, 409, 413, 422].includes(failure.upstreamStatus)
  ) {
    return new GatewayError(
      400,
      'invalid_request_error',
      failure.upstreamCode ?? 'upstream_rejected',
      failure.message,
      false,
      { cause: failure, param: failure.param },
    );
  }
  return failure;
}

/**
 * 400 `context_length_exceeded` for a request whose prompt plus requested output does not fit the model's window.
 * Each prompt of a legacy batch of prompts is a sequence of its own: such a request is refused only when its longest
 * prompt does not fit.
 */
async function refuseOverContextWindow(
  model: CatalogModel,
  endpoint: 'chat' | 'completions',
  body: Readonly<Record<string, unknown>>,
  promptTokens: number,
): Promise<void> {
  const requested = requestedOutputTokens(body);
  const output = requested ?? 1;
  const longest = endpoint === 'completions' ? await countLongestPromptTokensOffThread(body.prompt) : promptTokens;
  if (longest + output <= model.contextWindow) return;
  const input = endpoint === 'chat' ? 'messages' : 'prompt';
  throw new InvalidRequestError(
    `This model's maximum context length is ${model.contextWindow} tokens. However, you requested ` +
      `${longest + output} tokens (${longest} in the ${input}, ${output} in the completion).`,
    { code: 'context_length_exceeded', param: requested === undefined ? input : outputLimitParam(body) },
  );
}
