/**
 * A standalone OpenAI-compatible HTTP server over a `SimulatedUpstream`: a load target, a stand-in for vLLM in
 * adapter and failover tests (with fault injection, see `sim-fault.ts`), and the demo fleet's backend.
 *
 * Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings` (whole or SSE), `GET /v1/models`,
 * `GET /health`, `GET /metrics` (vLLM's `vllm:num_requests_running` / `vllm:num_requests_waiting` gauges). Like OpenAI
 * and vLLM, a stream carries the usage chunk only when the request sets `stream_options.include_usage: true`.
 * A client that disconnects cancels its sequence. Plain `node:http`, to stay light as a load target.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SimulatedProfile } from '../../config/config-schema.js';
import {
  GatewayError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  toGatewayError,
  toOpenAIErrorBody,
} from '../../errors/gateway-error.js';
import type { UpstreamEndpoint, UpstreamRequest } from '../upstream.js';
import { resolveSimulatedProfile } from './replica-engine.js';
import { parseSimFaults, type SimFault, simFaultHeader } from './sim-fault.js';
import { createSimulatedUpstream, type SimulatedUpstream } from './simulated-upstream.js';

/** Options of `startSimServer`. */
export interface SimServerOptions {
  /** Listen address. Default `127.0.0.1`. */
  host?: string;
  /** Listen port; 0 picks a free one. Default 0. */
  port?: number;
  /** Replicas behind the server. Default 1. */
  replicas?: number;
  /** Replica profile; missing fields take DESIGN.md's defaults. */
  profile?: Partial<SimulatedProfile>;
  /**
   * Faults applied to every request (text like `status:503,no-usage`, or parsed). A request's `x-sim-fault` header
   * replaces them. Default none.
   */
  faults?: string | readonly SimFault[];
  /** Model ids listed by `GET /v1/models` (any id is served). Default `['simulated']`. */
  models?: readonly string[];
  /** Largest accepted request body, bytes. Default 8 MiB. */
  bodyLimitBytes?: number;
}

/** A running simulated server. */
export interface SimServer {
  /** Base URL ending in `/v1`, e.g. `http://127.0.0.1:40123/v1`. */
  url: string;
  /** The port it listens on. */
  port: number;
  /** The upstream behind it (load, engines). */
  upstream: SimulatedUpstream;
  /** Drops every connection (hanging ones included) and stops the replicas. */
  close(): Promise<void>;
}

const routes: Readonly<Record<string, UpstreamEndpoint>> = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
};

/** Starts the server; resolves once it listens. */
export async function startSimServer(options: SimServerOptions = {}): Promise<SimServer> {
  const upstream = createSimulatedUpstream({
    name: 'sim-server',
    type: 'simulated',
    replicas: options.replicas ?? 1,
    profile: resolveSimulatedProfile(options.profile ?? {}),
  });
  const serverFaults: readonly SimFault[] =
    typeof options.faults === 'string' ? parseSimFaults(options.faults) : (options.faults ?? []);
  const models = options.models ?? ['simulated'];
  const bodyLimitBytes = options.bodyLimitBytes ?? 8 * 1024 * 1024;
  const startedAt = Math.floor(Date.now() / 1000);

  const context: HandlerContext = { upstream, serverFaults, models, bodyLimitBytes, startedAt };
  const server = createServer((request, response) => {
    handleRequest(context, request, response).catch((error: unknown) => {
      // Errors after the response started cannot be reported in-band; cut the connection so the client notices.
      if (response.headersSent) response.destroy();
      else sendError(response, toGatewayError(error));
    });
  });
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/v1`,
    port: address.port,
    upstream,
    async close(): Promise<void> {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await upstream.close();
      await closed;
    },
  };
}

interface HandlerContext {
  upstream: SimulatedUpstream;
  serverFaults: readonly SimFault[];
  models: readonly string[];
  bodyLimitBytes: number;
  startedAt: number;
}

async function handleRequest(context: HandlerContext, request: IncomingMessage, response: ServerResponse) {
  const path = (request.url ?? '/').split('?', 1)[0]!;
  const requestId = headerValue(request, 'x-request-id') ?? randomUUID();
  response.setHeader('x-request-id', requestId);

  if (request.method === 'GET') {
    if (path === '/health') return sendJson(response, 200, { status: 'ok' });
    if (path === '/metrics') return sendMetrics(response, context);
    if (path === '/v1/models') {
      return sendJson(response, 200, {
        object: 'list',
        data: context.models.map((id) => ({ id, object: 'model', created: context.startedAt, owned_by: 'tollgate' })),
      });
    }
  }
  const endpoint = request.method === 'POST' ? routes[path] : undefined;
  if (endpoint === undefined) {
    request.resume();
    return sendError(response, new NotFoundError(`Unknown route ${request.method} ${path}.`, 'unknown_route'));
  }

  const faultHeader = headerValue(request, simFaultHeader);
  const faults = faultHeader === undefined ? context.serverFaults : parseSimFaults(faultHeader);
  const rawBody = await readBody(request, context.bodyLimitBytes);
  const fault = <K extends SimFault['kind']>(kind: K) =>
    faults.find((candidate): candidate is Extract<SimFault, { kind: K }> => candidate.kind === kind);

  const slow = fault('slow-first-byte');
  if (slow !== undefined && !(await delayUnlessClosed(response, slow.delayMs))) return;
  const status = fault('status');
  if (status !== undefined) return sendError(response, faultError(status.status));
  // Keep the socket open and say nothing; `close()` or the client ends it.
  if (fault('hang') !== undefined) return;

  const body = parseJsonObject(rawBody);
  const abort = new AbortController();
  response.on('close', () => {
    if (!response.writableFinished) abort.abort();
  });
  const upstreamRequest: UpstreamRequest = { endpoint, body, requestId, signal: abort.signal };
  const die = fault('die-mid-stream');
  const noUsage = fault('no-usage') !== undefined;

  if (body.stream === true) {
    const stream = await context.upstream.stream(upstreamRequest);
    const includeUsage = !noUsage && includesUsage(body);
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    // Headers go out now, like vLLM's: a queued request is "accepted" before its first token.
    response.flushHeaders();
    if (die?.afterChunks === 0) {
      // An SSE comment flushes the headers; then the connection dies before any data.
      response.write(': simulated fault\n\n', () => response.destroy());
      return;
    }
    let sent = 0;
    try {
      for await (const event of stream.events) {
        if (event.type === 'usage' && !includeUsage) continue;
        const frame = `data: ${event.data}\n\n`;
        sent++;
        if (die !== undefined && sent >= die.afterChunks) {
          // Destroy once the frame is flushed, so the client sees exactly `afterChunks` chunks.
          response.write(frame, () => response.destroy());
          return;
        }
        if (!response.write(frame)) await drained(response);
        if (response.destroyed) return;
      }
    } catch (error: unknown) {
      // The client went away (the abort cancelled the sequence) or the upstream closed: end the connection.
      if (!abort.signal.aborted) response.destroy(error instanceof Error ? error : undefined);
      return;
    }
    if (fault('no-done') === undefined) response.write('data: [DONE]\n\n');
    response.end();
    return;
  }

  const result = await context.upstream.complete(upstreamRequest);
  const answer: Record<string, unknown> = { ...result.body };
  if (noUsage) delete answer.usage;
  const bytes = Buffer.from(JSON.stringify(answer));
  if (die !== undefined) {
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
    response.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => response.destroy());
    return;
  }
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
  response.end(bytes);
}

function includesUsage(body: Record<string, unknown>): boolean {
  const streamOptions = body.stream_options;
  return (
    typeof streamOptions === 'object' &&
    streamOptions !== null &&
    (streamOptions as Record<string, unknown>).include_usage === true
  );
}

function sendMetrics(response: ServerResponse, context: HandlerContext): void {
  const { running, waiting } = context.upstream.currentLoad();
  let promptTokens = 0;
  let generationTokens = 0;
  for (const engine of context.upstream.engines) {
    const stats = engine.stats;
    promptTokens += stats.promptTokens;
    generationTokens += stats.generatedTokens;
  }
  const label = `{model_name=${JSON.stringify(context.models[0] ?? 'simulated')}}`;
  const lines = [
    '# HELP vllm:num_requests_running Number of requests in model execution batches.',
    '# TYPE vllm:num_requests_running gauge',
    `vllm:num_requests_running${label} ${running}`,
    '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.',
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting${label} ${waiting}`,
    '# HELP vllm:prompt_tokens_total Number of prefill tokens processed.',
    '# TYPE vllm:prompt_tokens_total counter',
    `vllm:prompt_tokens_total${label} ${promptTokens}`,
    '# HELP vllm:generation_tokens_total Number of generation tokens processed.',
    '# TYPE vllm:generation_tokens_total counter',
    `vllm:generation_tokens_total${label} ${generationTokens}`,
  ];
  response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
  response.end(`${lines.join('\n')}\n`);
}

/** The OpenAI error an injected `status:<code>` fault answers with. */
function faultError(status: number): GatewayError {
  const message = `Simulated fault: HTTP ${status}.`;
  if (status === 429) {
    return new GatewayError(429, 'requests', 'rate_limit_exceeded', message, true, { headers: { 'retry-after': '1' } });
  }
  if (status >= 500) return new GatewayError(status, 'server_error', 'simulated_fault', message, true);
  return new GatewayError(status, 'invalid_request_error', 'simulated_fault', message, false);
}

function sendError(response: ServerResponse, error: GatewayError): void {
  const bytes = Buffer.from(JSON.stringify(toOpenAIErrorBody(error)));
  response.writeHead(error.status, {
    ...error.headers,
    'content-type': 'application/json',
    'content-length': bytes.length,
  });
  response.end(bytes);
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(JSON.stringify(body));
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.length });
  response.end(bytes);
}

function headerValue(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function readBody(request: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of request) {
    const buffer = part as Buffer;
    size += buffer.length;
    if (size > limitBytes) throw new PayloadTooLargeError(limitBytes);
    parts.push(buffer);
  }
  return Buffer.concat(parts);
}

function parseJsonObject(raw: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (error: unknown) {
    throw new InvalidRequestError('The request body is not valid JSON.', { code: 'invalid_json', cause: error });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_json' });
  }
  return parsed as Record<string, unknown>;
}

/** Waits `delayMs`; resolves false early if the connection closes meanwhile. */
function delayUnlessClosed(response: ServerResponse, delayMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const onClose = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      response.off('close', onClose);
      resolve(true);
    }, delayMs);
    response.once('close', onClose);
  });
}

function drained(response: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      response.off('drain', done);
      response.off('close', done);
      resolve();
    };
    response.once('drain', done);
    response.once('close', done);
  });
}
