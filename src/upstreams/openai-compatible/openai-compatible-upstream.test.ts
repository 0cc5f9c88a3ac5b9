import { getEventListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { refusedBaseUrl } from '../../../test/support/refused-url.js';
import type { OpenAIUpstreamConfig } from '../../config/config-schema.js';
import { UpstreamError, UpstreamTimeoutError } from '../../errors/gateway-error.js';
import type { StreamEvent, Upstream, UpstreamEndpoint, UpstreamRequest } from '../upstream.js';
import type { Usage } from '../usage.js';
import { createOpenAICompatibleUpstream } from './openai-compatible-upstream.js';

const fixturesDir = join(import.meta.dirname, 'fixtures');
const fixture = (name: string): Buffer => readFileSync(join(fixturesDir, name));

interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void | Promise<void>;

interface TestServer {
  baseUrl: string;
  port: number;
  received: ReceivedRequest[];
  /** Number of TCP connections accepted. */
  connections: () => number;
  /** Resolves with `true` when a response is closed before it was ended (the client went away). */
  nextClose: () => Promise<boolean>;
  close: () => Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function startServer(handler: Handler): Promise<TestServer> {
  const received: ReceivedRequest[] = [];
  const closeWaiters: Array<(abandoned: boolean) => void> = [];
  const closeResults: boolean[] = [];
  let connections = 0;
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      received.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
      response.on('close', () => {
        const abandoned = !response.writableEnded;
        const waiter = closeWaiters.shift();
        if (waiter === undefined) closeResults.push(abandoned);
        else waiter(abandoned);
      });
      void handler(request, response, body);
    });
  });
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const close = async (): Promise<void> => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanups.push(close);
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    port,
    received,
    connections: () => connections,
    nextClose: () => {
      const ready = closeResults.shift();
      if (ready !== undefined) return Promise.resolve(ready);
      return new Promise<boolean>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the server saw no close within 10 s')), 10_000);
        closeWaiters.push((abandoned) => {
          clearTimeout(timer);
          resolve(abandoned);
        });
      });
    },
    close,
  };
}

function upstreamFor(
  baseUrl: string,
  timeouts: Partial<OpenAIUpstreamConfig['timeouts']> = {},
  apiKey: string | null = 'sk-test-key',
  sendPriority = false,
): Upstream {
  const upstream = createOpenAICompatibleUpstream(
    {
      name: 'test-upstream',
      type: 'openai',
      base_url: baseUrl,
      connections: 4,
      // Generous defaults, so a stalled machine never times out a test that does not set its own.
      timeouts: { connect_ms: 10_000, first_byte_ms: 30_000, idle_ms: 30_000, ...timeouts },
      send_priority: sendPriority,
    },
    apiKey === null ? {} : { apiKey },
  );
  cleanups.unshift(() => upstream.close());
  return upstream;
}

function chatRequest(overrides: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    endpoint: 'chat',
    body: { model: 'upstream-model', messages: [{ role: 'user', content: 'Hi' }], temperature: 0.2 },
    requestId: 'req-0001',
    signal: new AbortController().signal,
    ...overrides,
  };
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes bytes as an SSE response, in pieces of `pieceSize` bytes with a 1 ms pause every `pauseEvery` pieces. */
async function writeSse(response: ServerResponse, bytes: Buffer, pieceSize = bytes.length, pauseEvery = 0) {
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let pieces = 0;
  for (let offset = 0; offset < bytes.length; offset += pieceSize) {
    response.write(bytes.subarray(offset, offset + pieceSize));
    pieces++;
    if (pauseEvery > 0 && pieces % pauseEvery === 0) await delay(1);
  }
  response.end();
}

function sendJson(response: ServerResponse, status: number, bytes: Buffer, headers: Record<string, string> = {}) {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(bytes);
}

async function collect(events: AsyncIterable<StreamEvent>): Promise<StreamEvent[]> {
  const result: StreamEvent[] = [];
  for await (const event of events) result.push(event);
  return result;
}

/** Collects events until iteration throws; returns both. */
async function collectUntilError(
  events: AsyncIterable<StreamEvent>,
): Promise<{ events: StreamEvent[]; error: unknown }> {
  const result: StreamEvent[] = [];
  try {
    for await (const event of events) result.push(event);
  } catch (error: unknown) {
    return { events: result, error };
  }
  return { events: result, error: undefined };
}

/** The raw `data:` payloads of a fixture except `[DONE]`, read line by line. */
function dataLines(bytes: Buffer): string[] {
  return bytes
    .toString('utf8')
    .split('\n')
    .filter((line) => line.startsWith('data: ') && line !== 'data: [DONE]')
    .map((line) => line.slice('data: '.length));
}

function usage(input: number, cached: number, output: number, reasoning: number): Usage {
  return { input: { total: input, cached }, output: { total: output, reasoning }, estimated: false };
}

const textOf = (events: StreamEvent[]) => events.map((event) => (event.type === 'chunk' ? event.text : '')).join('');

interface FixtureCase {
  file: string;
  endpoint: UpstreamEndpoint;
  chunks: number;
  text: string;
  usageEvent: Usage | undefined;
  chunkUsage: Usage | undefined;
}

const fixtureCases: FixtureCase[] = [
  {
    file: 'openai-chat-stream.sse',
    endpoint: 'chat',
    chunks: 11,
    text: 'Hello! How can I help you today?',
    usageEvent: usage(19, 0, 10, 0),
    chunkUsage: undefined,
  },
  {
    file: 'vllm-chat-stream.sse',
    endpoint: 'chat',
    chunks: 9,
    text: 'The capital of France is Paris.',
    usageEvent: usage(42, 0, 8, 0),
    chunkUsage: undefined,
  },
  {
    file: 'ollama-chat-stream.sse',
    endpoint: 'chat',
    chunks: 6,
    text: 'Hi there 👋 friend!',
    usageEvent: usage(26, 0, 6, 0),
    chunkUsage: undefined,
  },
  {
    file: 'llamacpp-chat-stream.sse',
    endpoint: 'chat',
    chunks: 8,
    text: 'Sure, here it is.',
    usageEvent: undefined,
    chunkUsage: usage(31, 0, 7, 0),
  },
  {
    file: 'deepseek-reasoning-stream.sse',
    endpoint: 'chat',
    chunks: 8,
    text: '用户在打招呼。你好！有什么可以帮你的？',
    usageEvent: usage(80, 64, 85, 72),
    chunkUsage: undefined,
  },
  {
    file: 'completions-stream.sse',
    endpoint: 'completions',
    chunks: 5,
    text: 'This is a test.',
    usageEvent: usage(5, 0, 5, 0),
    chunkUsage: undefined,
  },
  {
    file: 'no-usage-stream.sse',
    endpoint: 'chat',
    chunks: 4,
    text: 'Bonjour à tous',
    usageEvent: undefined,
    chunkUsage: undefined,
  },
];

describe('stream() replaying fixtures', () => {
  for (const testCase of fixtureCases) {
    it(`${testCase.file}: normalized events, text and usage`, async () => {
      const bytes = fixture(testCase.file);
      const server = await startServer((_request, response) => writeSse(response, bytes, 13, 25));
      const upstream = upstreamFor(server.baseUrl);
      const { events } = await upstream.stream(chatRequest({ endpoint: testCase.endpoint }));
      const received = await collect(events);

      expect(received.map((event) => event.data)).toEqual(dataLines(bytes));
      const chunks = received.filter((event) => event.type === 'chunk');
      expect(chunks).toHaveLength(testCase.chunks);
      expect(textOf(received)).toBe(testCase.text);
      const usageEvents = received.filter((event) => event.type === 'usage');
      if (testCase.usageEvent === undefined) expect(usageEvents).toEqual([]);
      else {
        expect(usageEvents).toHaveLength(1);
        expect(usageEvents[0]!.usage).toEqual(testCase.usageEvent);
        expect(received.at(-1)!.type).toBe('usage');
      }
      const withUsage = chunks.filter((event) => event.usage !== undefined);
      if (testCase.chunkUsage === undefined) expect(withUsage).toEqual([]);
      else {
        expect(withUsage).toHaveLength(1);
        expect(withUsage[0]!.usage).toEqual(testCase.chunkUsage);
        expect(withUsage[0]).toBe(chunks.at(-1));
      }
      expect(server.received[0]!.url).toBe(testCase.endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions');
    });
  }

  it('sends stream: true with include_usage, keeps unknown fields and the client stream options, sends key and id', async () => {
    const server = await startServer((_request, response) => writeSse(response, fixture('openai-chat-stream.sse')));
    const upstream = upstreamFor(server.baseUrl);
    const body = {
      model: 'upstream-model',
      messages: [{ role: 'user', content: 'Hi' }],
      stream_options: { include_usage: false, continuous_usage_stats: true },
      vendor_extension: { top_k: 40 },
    };
    const original = structuredClone(body);
    const { events } = await upstream.stream(chatRequest({ body, requestId: 'req-xyz-42' }));
    await collect(events);

    const request = server.received[0]!;
    expect(request.method).toBe('POST');
    expect(request.url).toBe('/v1/chat/completions');
    expect(request.headers.authorization).toBe('Bearer sk-test-key');
    expect(request.headers['x-request-id']).toBe('req-xyz-42');
    expect(request.headers['content-type']).toBe('application/json');
    expect(JSON.parse(request.body)).toEqual({
      model: 'upstream-model',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
      vendor_extension: { top_k: 40 },
    });
    expect(body).toEqual(original);
  });

  it("sends the gateway's priority only when configured, and never the client's", async () => {
    const server = await startServer((_request, response) => writeSse(response, fixture('vllm-chat-stream.sse')));
    const body = { model: 'upstream-model', messages: [{ role: 'user', content: 'Hi' }], priority: -100 };
    await collect((await upstreamFor(server.baseUrl).stream(chatRequest({ body, priority: 2 }))).events);
    const prioritized = upstreamFor(server.baseUrl, {}, 'sk-test-key', true);
    await collect((await prioritized.stream(chatRequest({ body, priority: 2 }))).events);
    await collect((await prioritized.stream(chatRequest({ body }))).events);
    const sent = server.received.map((request) => JSON.parse(request.body).priority);
    // Off: no priority at all, the client's own removed (it would jump the queue the gateway ordered). On: the
    // class's priority, or 0 (default) when the request has none.
    expect(sent).toEqual([undefined, 2, 0]);
  });

  it('sends no authorization header without a key', async () => {
    const server = await startServer((_request, response) => writeSse(response, fixture('vllm-chat-stream.sse')));
    const upstream = upstreamFor(server.baseUrl, {}, null);
    await collect((await upstream.stream(chatRequest())).events);
    expect(server.received[0]!.headers.authorization).toBeUndefined();
    expect(JSON.parse(server.received[0]!.body).stream_options).toEqual({ include_usage: true });
  });

  it('reuses the keep-alive connection after a stream that ended with [DONE]', async () => {
    const bytes = fixture('vllm-chat-stream.sse');
    // One promise per response, resolved when the server has handed the end of the body to the socket.
    const finished: Array<Promise<void>> = [];
    const server = await startServer(async (_request, response) => {
      finished.push(new Promise((resolve) => response.once('finish', () => resolve())));
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(bytes);
      // The end of the chunked body comes in a later packet than [DONE], as it often does from real servers.
      await delay(10);
      response.end();
    });
    const upstream = upstreamFor(server.baseUrl);
    for (let round = 0; round < 3; round++) {
      await collect((await upstream.stream(chatRequest())).events);
      // Until the end of the chunked body has arrived the connection is still busy: the next round starts only
      // after the server has sent it (however late its timer fired) and the client has had a moment to read it.
      await finished[round];
      await delay(30);
    }
    expect(server.received).toHaveLength(3);
    expect(server.connections()).toBe(1);
  });
});

describe('stream() failures', () => {
  it('fails before the stream opens, retryably, when a stream request is answered 200 with JSON or HTML', async () => {
    const answers: Array<[string, string]> = [
      ['application/json', JSON.stringify({ error: { message: 'engine overloaded', type: 'server_error' } })],
      ['text/html; charset=utf-8', '<html><body>Welcome to the proxy</body></html>'],
    ];
    const server = await startServer((_request, response) => {
      const [type, text] = answers[server.received.length - 1]!;
      response.writeHead(200, { 'content-type': type });
      response.end(text);
    });
    const upstream = upstreamFor(server.baseUrl);
    const reported = (await upstream.stream(chatRequest()).catch((error: unknown) => error)) as UpstreamError;
    expect(reported).toBeInstanceOf(UpstreamError);
    expect([reported.code, reported.retryable]).toEqual(['upstream_stream_error', true]);
    const page = (await upstream.stream(chatRequest()).catch((error: unknown) => error)) as UpstreamError;
    expect(page).toBeInstanceOf(UpstreamError);
    expect([page.code, page.retryable]).toEqual(['upstream_malformed_response', true]);
  });

  it('reads an event stream whatever else its content type says', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end(fixture('vllm-chat-stream.sse'));
    });
    const events = await collect((await upstreamFor(server.baseUrl).stream(chatRequest())).events);
    expect(events.at(-1)?.type).toBe('usage');
  });

  it('yields what arrived, then throws upstream_stream_truncated when [DONE] never comes', async () => {
    const server = await startServer((_request, response) => writeSse(response, fixture('truncated-stream.sse'), 50));
    const upstream = upstreamFor(server.baseUrl);
    const { events, error } = await collectUntilError((await upstream.stream(chatRequest())).events);
    expect(events).toHaveLength(3);
    expect(textOf(events)).toBe('Once upon');
    expect(error).toBeInstanceOf(UpstreamError);
    expect((error as UpstreamError).code).toBe('upstream_stream_truncated');
  });

  it('throws upstream_stream_error on an error event mid-stream, without leaking its text', async () => {
    const server = await startServer((_request, response) => writeSse(response, fixture('error-mid-stream.sse')));
    const upstream = upstreamFor(server.baseUrl);
    const { events, error } = await collectUntilError((await upstream.stream(chatRequest())).events);
    expect(textOf(events)).toBe('Let me');
    expect(events).toHaveLength(3);
    expect(error).toBeInstanceOf(UpstreamError);
    expect((error as UpstreamError).code).toBe('upstream_stream_error');
    expect((error as UpstreamError).message).not.toContain('CUDA');
  });

  it('throws upstream_connection_lost when the upstream socket dies mid-stream', async () => {
    const lines = dataLines(fixture('openai-chat-stream.sse'));
    const server = await startServer(async (request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: ${lines[0]}\n\ndata: ${lines[1]}\n\n`);
      await delay(30);
      request.socket.destroy();
    });
    const upstream = upstreamFor(server.baseUrl);
    const { events, error } = await collectUntilError((await upstream.stream(chatRequest())).events);
    expect(events.map((event) => event.data)).toEqual([lines[0], lines[1]]);
    expect(error).toBeInstanceOf(UpstreamError);
    expect((error as UpstreamError).code).toBe('upstream_connection_lost');
    expect((error as UpstreamError).retryable).toBe(true);
  });

  it('rejects with a first_byte timeout when the upstream never answers', async () => {
    const server = await startServer(() => {});
    const upstream = upstreamFor(server.baseUrl, { first_byte_ms: 200 });
    const started = performance.now();
    const [error, completeError] = await Promise.all([
      upstream.stream(chatRequest()).catch((caught: unknown) => caught),
      upstream.complete(chatRequest()).catch((caught: unknown) => caught),
    ]);
    expect(error).toBeInstanceOf(UpstreamTimeoutError);
    expect((error as UpstreamTimeoutError).phase).toBe('first_byte');
    expect((error as UpstreamTimeoutError).code).toBe('upstream_timeout');
    expect((completeError as UpstreamTimeoutError).phase).toBe('first_byte');
    // undici runs these timers on a 500 ms tick, so 200 ms fires within about a second; the bound leaves room for a
    // stalled machine and is still far below the 30 s default, so it shows the configured 200 ms was applied.
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('throws an idle timeout when the upstream stalls after the headers', async () => {
    const lines = dataLines(fixture('openai-chat-stream.sse'));
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: ${lines[0]}\n\n`);
    });
    const upstream = upstreamFor(server.baseUrl, { idle_ms: 200 });
    const { events, error } = await collectUntilError((await upstream.stream(chatRequest())).events);
    expect(events).toHaveLength(1);
    expect(error).toBeInstanceOf(UpstreamTimeoutError);
    expect((error as UpstreamTimeoutError).phase).toBe('idle');
  });

  it('rejects with upstream_unreachable when the connection is refused', async () => {
    const upstream = upstreamFor(refusedBaseUrl);
    for (const attempt of [upstream.stream(chatRequest()), upstream.complete(chatRequest())]) {
      const error = await attempt.catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(UpstreamError);
      expect((error as UpstreamError).code).toBe('upstream_unreachable');
      expect((error as UpstreamError).retryable).toBe(true);
      expect((error as UpstreamError).status).toBe(502);
    }
  });

  it('rejects stream() like complete() on a 429, with Retry-After as an HTTP date', async () => {
    const retryAt = new Date(Date.now() + 120_000).toUTCString();
    const server = await startServer((_request, response) =>
      sendJson(response, 429, fixture('error-429.json'), { 'retry-after': retryAt }),
    );
    const upstream = upstreamFor(server.baseUrl);
    const error = (await upstream.stream(chatRequest()).catch((caught: unknown) => caught)) as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.upstreamStatus).toBe(429);
    expect(error.retryable).toBe(true);
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(117);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(121);
  });
});

describe('cancellation', () => {
  /** An upstream that sends one chunk, then one every 20 ms, forever. */
  /** Streams `piece` `times` times as fast as the client reads (each write that fills the buffer waits for `drain`). */
  function flood(piece: Buffer, times: number, sent: { bytes: number }): Handler {
    return async (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      let open = true;
      response.on('close', () => {
        open = false;
      });
      for (let count = 0; open && count < times; count++) {
        sent.bytes += piece.length;
        if (!response.write(piece)) await new Promise((resolve) => response.once('drain', resolve));
      }
    };
  }

  function endlessStream(): Handler {
    const line = dataLines(fixture('openai-chat-stream.sse'))[1]!;
    return (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`data: ${line}\n\n`);
      const timer = setInterval(() => response.write(`data: ${line}\n\n`), 20);
      response.on('close', () => clearInterval(timer));
    };
  }

  it('closes the upstream connection when the consumer breaks out of the loop', async () => {
    const server = await startServer(endlessStream());
    const upstream = upstreamFor(server.baseUrl);
    const { events } = await upstream.stream(chatRequest());
    let seen = 0;
    for await (const event of events) {
      expect(event.type).toBe('chunk');
      if (++seen === 3) break;
    }
    expect(await server.nextClose()).toBe(true);
  });

  it('closes the upstream connection and rethrows the reason when the signal aborts mid-stream', async () => {
    const server = await startServer(endlessStream());
    const upstream = upstreamFor(server.baseUrl);
    const controller = new AbortController();
    const reason = new Error('client went away');
    const { events } = await upstream.stream(chatRequest({ signal: controller.signal }));
    const iterator = events[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    controller.abort(reason);
    expect(await server.nextClose()).toBe(true);
    await expect(iterator.next()).rejects.toBe(reason);
  });

  it('closes the upstream connection when the signal aborts before the headers', async () => {
    const server = await startServer(() => {});
    const upstream = upstreamFor(server.baseUrl);
    const controller = new AbortController();
    const pending = upstream.stream(chatRequest({ signal: controller.signal }));
    while (server.received.length === 0) await delay(5);
    const reason = new Error('gave up');
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(await server.nextClose()).toBe(true);
  });

  it('closes the upstream connection when the iterator is returned before the first event', async () => {
    const server = await startServer(endlessStream());
    const upstream = upstreamFor(server.baseUrl);
    const { events } = await upstream.stream(chatRequest());
    await events[Symbol.asyncIterator]().return?.();
    expect(await server.nextClose()).toBe(true);
  });

  it('reads from the upstream only as fast as the consumer pulls', async () => {
    const piece = Buffer.from(`data: ${dataLines(fixture('openai-chat-stream.sse'))[1]}\n\n`.repeat(200));
    const sent = { bytes: 0 };
    const server = await startServer(flood(piece, Math.ceil((64 * 1024 * 1024) / piece.length), sent));
    const upstream = upstreamFor(server.baseUrl);
    const { events } = await upstream.stream(chatRequest());
    const iterator = events[Symbol.asyncIterator]();
    await iterator.next();
    await delay(300);
    // Kernel socket buffers on loopback hold a few MB; an unbounded reader would have taken all 64 MB by now.
    expect(sent.bytes).toBeLessThan(24 * 1024 * 1024);
    await iterator.return?.();
    expect(await server.nextClose()).toBe(true);
  });

  it('does not time a slow consumer out: the idle timeout counts only while the gateway is reading', async () => {
    // More than the read-ahead and loopback's socket buffers hold, so the upstream really waits on backpressure
    // while the consumer sleeps through several idle timeouts; then the whole answer still arrives.
    const piece = Buffer.from(`data: ${dataLines(fixture('openai-chat-stream.sse'))[1]}\n\n`.repeat(200));
    const pieces = Math.ceil((16 * 1024 * 1024) / piece.length);
    const sent = { bytes: 0 };
    const server = await startServer(async (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let count = 0; count < pieces; count++) {
        sent.bytes += piece.length;
        if (!response.write(piece)) await new Promise((resolve) => response.once('drain', resolve));
      }
      response.end('data: [DONE]\n\n');
    });
    const upstream = upstreamFor(server.baseUrl, { idle_ms: 200 });
    const { events } = await upstream.stream(chatRequest());
    const iterator = events[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    // undici checks its timers on a 500 ms tick: 2 s is several idle timeouts however the ticks fall.
    await delay(2_000);
    expect(sent.bytes).toBeLessThan(pieces * piece.length);
    let received = 1;
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) received++;
    expect(received).toBe(pieces * 200);
  });

  it('keeps a consumer that takes one large event per turn at a bounded distance from the upstream', async () => {
    // 16 KB events, as a tool call's arguments or a long reasoning summary can make. Pausing undici's body after each
    // one made every resume read the whole socket buffer and unshift the rest, so the upstream's lead grew by about
    // 48 KB an event (19 MB over the 400 events below) and relaying crawled at 1 MB/s.
    const content = 'xy '.repeat(5461);
    const event = `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`;
    const sent = { bytes: 0 };
    const server = await startServer(flood(Buffer.from(event), 4000, sent));
    const upstream = upstreamFor(server.baseUrl);
    const { events } = await upstream.stream(chatRequest());
    const lead: number[] = [];
    let consumed = 0;
    for await (const streamed of events) {
      consumed += streamed.data.length + 8;
      await new Promise((resolve) => setImmediate(resolve)); // the relay's write to its client
      const count = Math.round(consumed / event.length);
      if (count === 100 || count === 500) lead.push(sent.bytes - consumed);
      if (count === 500) break;
    }
    expect(lead).toHaveLength(2);
    // What kernel buffers and the read-ahead hold, not a growing share of the response.
    expect(lead[1]! - lead[0]!).toBeLessThan(5 * 1024 * 1024);
    expect(await server.nextClose()).toBe(true);
  });
});

describe('complete()', () => {
  it('returns the parsed body and normalized usage, forcing stream: false without stream_options', async () => {
    const bytes = fixture('chat-completion.json');
    const server = await startServer((_request, response) => sendJson(response, 200, bytes));
    const upstream = upstreamFor(server.baseUrl);
    const body = { model: 'o4-mini', messages: [], stream: true, stream_options: { include_usage: true }, seed: 7 };
    const result = await upstream.complete(chatRequest({ body }));
    expect(result.body).toEqual(JSON.parse(bytes.toString('utf8')));
    expect(result.usage).toEqual(usage(1200, 1024, 300, 192));
    expect(JSON.parse(server.received[0]!.body)).toEqual({ model: 'o4-mini', messages: [], stream: false, seed: 7 });
    expect(server.received[0]!.headers['x-request-id']).toBe('req-0001');
    expect(body.stream).toBe(true);
  });

  it('returns usage undefined when the upstream reports none', async () => {
    const server = await startServer((_request, response) =>
      sendJson(response, 200, fixture('chat-completion-no-usage.json')),
    );
    const upstream = upstreamFor(server.baseUrl);
    const result = await upstream.complete(chatRequest());
    expect(result.usage).toBeUndefined();
    expect((result.body.choices as Array<{ message: { content: string } }>)[0]!.message.content).toBe('Bonjour à tous');
  });

  it('calls /embeddings with the body unchanged', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, fixture('embeddings.json')));
    const upstream = upstreamFor(server.baseUrl);
    const body = { model: 'text-embedding-3-small', input: 'The food was delicious', encoding_format: 'float' };
    const result = await upstream.complete({ ...chatRequest(), endpoint: 'embeddings', body });
    expect(server.received[0]!.url).toBe('/v1/embeddings');
    expect(JSON.parse(server.received[0]!.body)).toEqual(body);
    expect(result.usage).toEqual(usage(8, 0, 0, 0));
    expect((result.body.data as unknown[]).length).toBe(1);
  });

  it('rejects a body that is not JSON with upstream_malformed_response', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, Buffer.from('{"id": "cut')));
    const upstream = upstreamFor(server.baseUrl);
    const error = (await upstream.complete(chatRequest()).catch((caught: unknown) => caught)) as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.code).toBe('upstream_malformed_response');
  });

  it('maps a 429 with Retry-After seconds', async () => {
    const server = await startServer((_request, response) =>
      sendJson(response, 429, fixture('error-429.json'), { 'retry-after': '7' }),
    );
    const upstream = upstreamFor(server.baseUrl);
    const error = (await upstream.complete(chatRequest()).catch((caught: unknown) => caught)) as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.status).toBe(502);
    expect(error.upstreamStatus).toBe(429);
    expect(error.code).toBe('upstream_http_error');
    expect(error.retryable).toBe(true);
    expect(error.retryAfterSeconds).toBe(7);
    expect(error.message).not.toContain('org-');
  });

  const statusCases = [
    {
      file: 'error-400.json',
      status: 400,
      retryable: false,
      contains: 'maximum context length is 128000',
      param: 'messages',
    },
    {
      file: 'error-400-vllm.json',
      status: 400,
      retryable: false,
      contains: 'maximum context length is 8192',
      param: null,
    },
    { file: 'error-401.json', status: 401, retryable: true, absent: 'sk-proj', param: null },
    { file: 'error-500.json', status: 500, retryable: true, absent: 'Sorry', param: null },
  ];
  for (const statusCase of statusCases) {
    it(`maps ${statusCase.file} (status ${statusCase.status})`, async () => {
      const server = await startServer((_request, response) =>
        sendJson(response, statusCase.status, fixture(statusCase.file)),
      );
      const upstream = upstreamFor(server.baseUrl);
      const error = (await upstream.complete(chatRequest()).catch((caught: unknown) => caught)) as UpstreamError;
      expect(error).toBeInstanceOf(UpstreamError);
      expect(error.status).toBe(502);
      expect(error.upstreamStatus).toBe(statusCase.status);
      expect(error.retryable).toBe(statusCase.retryable);
      expect(error.retryAfterSeconds).toBeUndefined();
      expect(error.param).toBe(statusCase.param);
      if (statusCase.contains !== undefined) expect(error.message).toContain(statusCase.contains);
      if (statusCase.absent !== undefined) expect(error.message).not.toContain(statusCase.absent);
    });
  }
});

describe('the exchange with the upstream', () => {
  it('rejects at once when the signal aborts while the request waits for a connection, and never sends it', async () => {
    const server = await startServer(() => {});
    const upstream = upstreamFor(server.baseUrl);
    const hung = new AbortController();
    // The pool has 4 connections: four unanswered requests hold them all.
    const holding = Array.from({ length: 4 }, () =>
      upstream.complete(chatRequest({ signal: hung.signal })).catch(() => undefined),
    );
    while (server.received.length < 4) await delay(5);
    const controller = new AbortController();
    const queued = upstream.complete(chatRequest({ signal: controller.signal, requestId: 'req-queued' }));
    const reason = new Error('gave up while queued');
    controller.abort(reason);
    await expect(queued).rejects.toBe(reason);
    // Freeing the connections does not send the abandoned request after all.
    hung.abort(new Error('test over'));
    await Promise.all(holding);
    await delay(50);
    expect(server.received.map((request) => request.headers['x-request-id'])).not.toContain('req-queued');
  });

  it('rejects with the reason and closes the connection when the signal aborts in the middle of a whole answer', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"id": "chatcmpl-1", "choices": [');
    });
    const upstream = upstreamFor(server.baseUrl);
    const controller = new AbortController();
    const pending = upstream.complete(chatRequest({ signal: controller.signal }));
    while (server.received.length === 0) await delay(5);
    await delay(20);
    const reason = new Error('client went away');
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(await server.nextClose()).toBe(true);
  });

  it('keeps the start of an endless error body for the message and drops the connection', async () => {
    const detail = JSON.stringify({ error: { message: 'No such parameter: foo', param: 'foo' } });
    const server = await startServer(async (_request, response) => {
      response.writeHead(400, { 'content-type': 'application/json' });
      let open = true;
      response.on('close', () => {
        open = false;
      });
      response.write(detail);
      const filler = Buffer.alloc(16 * 1024, 0x20);
      while (open) {
        if (!response.write(filler)) await new Promise((resolve) => response.once('drain', resolve));
      }
    });
    const upstream = upstreamFor(server.baseUrl);
    const error = (await upstream.complete(chatRequest()).catch((caught: unknown) => caught)) as UpstreamError;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error.upstreamStatus).toBe(400);
    expect(error.message).toBe('No such parameter: foo');
    expect(await server.nextClose()).toBe(true);
  });

  it("leaves no listener on a connection's signal shared by its requests", async () => {
    const bytes = fixture('chat-completion.json');
    const stream = fixture('openai-chat-stream.sse');
    const server = await startServer((request, response, body) => {
      if ((JSON.parse(body) as { stream?: boolean }).stream === true) void writeSse(response, stream);
      else if (request.headers['x-request-id'] === 'req-error') sendJson(response, 500, fixture('error-500.json'));
      else sendJson(response, 200, bytes);
    });
    const upstream = upstreamFor(server.baseUrl);
    const signal = new AbortController().signal;
    await upstream.complete(chatRequest({ signal }));
    await upstream.complete(chatRequest({ signal, requestId: 'req-error' })).catch(() => undefined);
    const { events } = await upstream.stream(chatRequest({ signal }));
    await collect(events);
    const broken = await upstream.stream(chatRequest({ signal }));
    await broken.events[Symbol.asyncIterator]().return?.();
    expect(server.received).toHaveLength(4);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('reads a whole answer that starts with a UTF-8 byte-order mark', async () => {
    const bytes = fixture('chat-completion.json');
    const server = await startServer((_request, response) =>
      sendJson(response, 200, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes])),
    );
    const upstream = upstreamFor(server.baseUrl);
    const result = await upstream.complete(chatRequest());
    expect(result.body).toEqual(JSON.parse(bytes.toString('utf8')));
  });
});

describe('load()', () => {
  it('sums vLLM running and waiting gauges from /metrics', async () => {
    const metrics = [
      '# HELP vllm:num_requests_running Number of requests currently running on GPU.',
      '# TYPE vllm:num_requests_running gauge',
      'vllm:num_requests_running{engine="0",model_name="llama"} 3.0',
      'vllm:num_requests_running{engine="1",model_name="llama"} 1.0',
      '# TYPE vllm:num_requests_waiting gauge',
      'vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0',
      'vllm:num_requests_waiting{engine="1",model_name="llama"} 0.0',
      'vllm:num_requests_waiting_total 99',
      '',
    ].join('\n');
    const server = await startServer((request, response) => {
      if (request.url === '/metrics') {
        response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        response.end(metrics);
      } else response.writeHead(404).end();
    });
    const upstream = upstreamFor(server.baseUrl);
    expect(await upstream.load?.()).toEqual({ running: 4, waiting: 2 });
  });

  it('returns undefined when the upstream has no /metrics, and stops asking', async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(404).end();
    });
    const upstream = upstreamFor(server.baseUrl);
    expect(await upstream.load?.()).toBeUndefined();
    expect(await upstream.load?.()).toBeUndefined();
    expect(server.received).toHaveLength(1);
  });
});
