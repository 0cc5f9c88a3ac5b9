/**
 * The adapter for any server that speaks the OpenAI HTTP API: vLLM, SGLang, Ollama, llama.cpp server, DeepSeek,
 * Volcano Ark, OpenRouter, OpenAI itself. Vendors differ only in settings (base URL, key), never in code.
 */
import { Pool } from 'undici';
import type { OpenAIUpstreamConfig } from '../../config/config-schema.js';
import { InvalidRequestError, UpstreamError } from '../../errors/gateway-error.js';
import type {
  Upstream,
  UpstreamEndpoint,
  UpstreamLoad,
  UpstreamRequest,
  UpstreamResult,
  UpstreamStream,
} from '../upstream.js';
import { usageFromOpenAI } from '../usage.js';
import { OpenAIStreamEvents } from './openai-stream-events.js';
import { parsePrometheusLoad } from './prometheus-load.js';
import { type ExchangeResponse, exchange } from './upstream-exchange.js';
import {
  findUpstreamError,
  toUpstreamFailure,
  upstreamReportedError,
  upstreamStatusError,
} from './upstream-failure.js';

/** Options that do not belong in the configuration file. */
export interface OpenAICompatibleUpstreamOptions {
  /** The upstream's API key (read from `api_key_env` by the caller), sent as `authorization: Bearer <key>`. Default: none. */
  apiKey?: string;
  /** Timeout of a `load()` call (a GET of `/metrics`), ms. Default 1000. */
  loadTimeoutMs?: number;
}

/** Most bytes of a non-2xx body read for its error message. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** Creates the adapter. It owns one keep-alive connection pool to the upstream's origin until `close()`. */
export function createOpenAICompatibleUpstream(
  config: OpenAIUpstreamConfig,
  options: OpenAICompatibleUpstreamOptions = {},
): Upstream {
  return new OpenAICompatibleUpstream(config, options);
}

class OpenAICompatibleUpstream implements Upstream {
  readonly name: string;
  private readonly pool: Pool;
  private readonly paths: Readonly<Record<UpstreamEndpoint, string>>;
  private readonly authorization: string | undefined;
  private readonly loadTimeoutMs: number;
  private readonly sendPriority: boolean;
  /** Set once `/metrics` answered 404: the upstream does not report its load, so `load()` stops asking. */
  private metricsMissing = false;

  constructor(config: OpenAIUpstreamConfig, options: OpenAICompatibleUpstreamOptions) {
    this.name = config.name;
    const url = new URL(config.base_url);
    const prefix = url.pathname.replace(/\/+$/, '');
    // A query in the base URL (Azure-style `?api-version=`) applies to every endpoint.
    const query = url.search;
    this.paths = {
      chat: `${prefix}/chat/completions${query}`,
      completions: `${prefix}/completions${query}`,
      embeddings: `${prefix}/embeddings${query}`,
    };
    this.authorization = options.apiKey === undefined || options.apiKey === '' ? undefined : `Bearer ${options.apiKey}`;
    this.loadTimeoutMs = options.loadTimeoutMs ?? 1_000;
    this.sendPriority = config.send_priority;
    this.pool = new Pool(url.origin, {
      connections: config.connections,
      connectTimeout: config.timeouts.connect_ms,
      headersTimeout: config.timeouts.first_byte_ms,
      bodyTimeout: config.timeouts.idle_ms,
    });
  }

  async complete(request: UpstreamRequest): Promise<UpstreamResult> {
    const body = request.endpoint === 'embeddings' ? request.body : nonStreamingBody(request.body);
    const { text } = await this.send(request, JSON.stringify(this.withPriority(body, request)), false);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error: unknown) {
      throw this.malformed(error);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw this.malformed();
    const result = parsed as Record<string, unknown>;
    // Some servers and routers answer 200 with an error object instead of a result.
    if (result.choices === undefined && result.data === undefined) {
      const reported = findUpstreamError(result);
      if (reported !== undefined) throw upstreamReportedError(this.name, reported, text);
    }
    return { body: result, usage: usageFromOpenAI(result.usage) };
  }

  async stream(request: UpstreamRequest): Promise<UpstreamStream> {
    if (request.endpoint === 'embeddings') {
      throw new InvalidRequestError('Embeddings cannot be streamed.', {
        code: 'stream_not_supported',
        param: 'stream',
      });
    }
    const { body, text } = await this.send(
      request,
      JSON.stringify(this.withPriority(streamingBody(request.body), request)),
      true,
    );
    if (body === undefined) throw this.notAStream(text);
    return { events: new OpenAIStreamEvents(body, this.name, request.signal) };
  }

  async load(): Promise<UpstreamLoad | undefined> {
    if (this.metricsMissing) return undefined;
    try {
      const response = await this.pool.request({
        method: 'GET',
        path: '/metrics',
        headers: this.authorization === undefined ? undefined : { authorization: this.authorization },
        headersTimeout: this.loadTimeoutMs,
        bodyTimeout: this.loadTimeoutMs,
        signal: AbortSignal.timeout(this.loadTimeoutMs),
      });
      if (response.statusCode < 200 || response.statusCode >= 300) {
        if (response.statusCode === 404) this.metricsMissing = true;
        await response.body.dump();
        return undefined;
      }
      return parsePrometheusLoad(await response.body.text());
    } catch {
      // Load is advisory: an upstream that cannot report it in time is treated as not reporting it.
      return undefined;
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  /**
   * The body with the gateway's `priority` when configured to send it. The client's own never reaches the engine: an
   * engine scheduling by priority would otherwise let a tenant jump the queue the gateway ordered.
   */
  private withPriority(
    body: Readonly<Record<string, unknown>>,
    request: UpstreamRequest,
  ): Readonly<Record<string, unknown>> {
    if (this.sendPriority && request.endpoint !== 'embeddings') return { ...body, priority: request.priority ?? 0 };
    if (body.priority === undefined) return body;
    const { priority: _clients, ...rest } = body;
    return rest;
  }

  /** Sends the request; resolves with a 2xx answer (its text, or its body when streaming), rejects otherwise. */
  private async send(request: UpstreamRequest, payload: string, streaming: boolean): Promise<ExchangeResponse> {
    let response: ExchangeResponse;
    try {
      response = await exchange(
        this.pool,
        {
          method: 'POST',
          path: this.paths[request.endpoint],
          headers: this.headers(request.requestId, streaming),
          body: payload,
        },
        request.signal,
        { streaming, maxErrorBodyBytes: MAX_ERROR_BODY_BYTES },
      );
    } catch (error: unknown) {
      throw this.failure(error, request.signal);
    }
    const status = response.status;
    if (status >= 200 && status < 300) return response;
    throw upstreamStatusError(this.name, status, response.headers, response.text, Date.now());
  }

  private headers(requestId: string, streaming: boolean): string[] {
    const accept = streaming ? 'text/event-stream' : 'application/json';
    return this.authorization === undefined
      ? ['content-type', 'application/json', 'accept', accept, 'x-request-id', requestId]
      : [
          'content-type',
          'application/json',
          'accept',
          accept,
          'authorization',
          this.authorization,
          'x-request-id',
          requestId,
        ];
  }

  private failure(error: unknown, signal: AbortSignal): unknown {
    return signal.aborted ? signal.reason : toUpstreamFailure(error, this.name);
  }

  /** A stream request answered 2xx with JSON or HTML: an error object the upstream reported, or a page of a proxy. */
  private notAStream(text: string): UpstreamError {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const reported = parsed !== null && typeof parsed === 'object' ? findUpstreamError(parsed) : undefined;
    if (reported !== undefined) return upstreamReportedError(this.name, reported, text);
    return new UpstreamError(`Upstream ${this.name} answered a stream request without an event stream.`, {
      code: 'upstream_malformed_response',
      retryable: true,
      cause: new Error(`upstream ${this.name} answered: ${text.slice(0, 2_000)}`),
    });
  }

  private malformed(cause?: unknown): UpstreamError {
    return new UpstreamError(`Upstream ${this.name} answered with a body that is not a JSON object.`, {
      code: 'upstream_malformed_response',
      retryable: true,
      cause,
    });
  }
}

/** The body for a whole answer: `stream: false`, and no `stream_options`, which servers reject without `stream`. */
function nonStreamingBody(body: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  if ((body.stream === undefined || body.stream === false) && body.stream_options === undefined) return body;
  const copy: Record<string, unknown> = {};
  for (const key in body) {
    if (key !== 'stream_options') copy[key] = body[key];
  }
  copy.stream = false;
  return copy;
}

/** The body for a stream: `stream: true` and always `include_usage`, keeping the client's other stream options. */
function streamingBody(body: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const clientOptions = body.stream_options;
  const streamOptions =
    clientOptions !== null && typeof clientOptions === 'object' && !Array.isArray(clientOptions)
      ? { ...clientOptions, include_usage: true }
      : { include_usage: true };
  return { ...body, stream: true, stream_options: streamOptions };
}
