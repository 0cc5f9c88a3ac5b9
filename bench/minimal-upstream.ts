/**
 * The benchmarks' upstream: the smallest reasonable OpenAI-compatible server on `node:http`, so that what a benchmark
 * measures is the gateway in front of it. Answers `POST /v1/chat/completions` with fixed, precomputed bytes:
 * - whole: one small `chat.completion` with usage;
 * - streamed: `--chunks` content chunks, a final chunk with `finish_reason`, a usage chunk only when
 *   `stream_options.include_usage` is true, then `data: [DONE]`; written in one go when `--chunk-delay-ms` is 0,
 *   otherwise one event every `--chunk-delay-ms`.
 *
 * Run it as its own process so that it never shares an event loop with the load generator or the gateway:
 * `node dist/bench/minimal-upstream.js --port 0 [--latency-ms 0] [--chunk-delay-ms 0] [--chunks 20]`.
 * It prints one JSON line `{"event":"listening","port":N}` on stdout once it accepts connections.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { wholeNumber } from './cli-numbers.js';

/** How the minimal upstream answers. */
export interface MinimalUpstreamOptions {
  /** Listen port; 0 picks a free one. Default 0. */
  port: number;
  /** Listen address. Default `127.0.0.1`. */
  host: string;
  /** Fixed delay between reading the whole request body and answering, ms. Default 0. */
  latencyMs: number;
  /** Delay between two streamed events, ms; 0 writes the whole stream in one write. Default 0. */
  chunkDelayMs: number;
  /** Content chunks in a streamed answer (the final, usage and `[DONE]` events come on top). Default 20. */
  chunks: number;
}

/** The defaults of `MinimalUpstreamOptions`. */
export const defaultMinimalUpstreamOptions: MinimalUpstreamOptions = {
  port: 0,
  host: '127.0.0.1',
  latencyMs: 0,
  chunkDelayMs: 0,
  chunks: 20,
};

/** Usage the upstream reports for every answer (a short prompt, one token per content chunk). */
const promptTokens = 12;

const created = Math.floor(Date.now() / 1000);
const completionId = 'chatcmpl-bench0000000000000000';
const modelName = 'bench-model';

interface PrecomputedAnswers {
  whole: Buffer;
  /** Every SSE event of a stream without the usage chunk, each `data: …\n\n`. */
  streamEvents: readonly Buffer[];
  /** The same with the usage chunk before `[DONE]`. */
  streamEventsWithUsage: readonly Buffer[];
  stream: Buffer;
  streamWithUsage: Buffer;
}

function precomputeAnswers(chunks: number): PrecomputedAnswers {
  const usage = { prompt_tokens: promptTokens, completion_tokens: chunks, total_tokens: promptTokens + chunks };
  const whole = Buffer.from(
    JSON.stringify({
      id: completionId,
      object: 'chat.completion',
      created,
      model: modelName,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: ' tok'.repeat(chunks).trimStart() },
          logprobs: null,
          finish_reason: 'stop',
        },
      ],
      usage,
    }),
  );
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    Buffer.from(
      `data: ${JSON.stringify({ id: completionId, object: 'chat.completion.chunk', created, model: modelName, choices, ...extra })}\n\n`,
    );
  const contentEvents: Buffer[] = [];
  for (let index = 0; index < chunks; index += 1) {
    const delta = index === 0 ? { role: 'assistant', content: 'tok' } : { content: ' tok' };
    contentEvents.push(chunk([{ index: 0, delta, logprobs: null, finish_reason: null }]));
  }
  const finalEvent = chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]);
  const usageEvent = chunk([], { usage });
  const doneEvent = Buffer.from('data: [DONE]\n\n');
  const streamEvents = [...contentEvents, finalEvent, doneEvent];
  const streamEventsWithUsage = [...contentEvents, finalEvent, usageEvent, doneEvent];
  return {
    whole,
    streamEvents,
    streamEventsWithUsage,
    stream: Buffer.concat(streamEvents),
    streamWithUsage: Buffer.concat(streamEventsWithUsage),
  };
}

const jsonHeaders = { 'content-type': 'application/json' } as const;
const sseHeaders = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
} as const;

interface ChatRequestShape {
  stream: boolean;
  includeUsage: boolean;
}

function readChatRequestShape(raw: Buffer): ChatRequestShape | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (error: unknown) {
    // A malformed body is the client's fault: answered with 400 by the caller, nothing to log in a benchmark server.
    void error;
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const body = parsed as { stream?: unknown; stream_options?: unknown };
  const streamOptions = body.stream_options as { include_usage?: unknown } | null | undefined;
  return { stream: body.stream === true, includeUsage: streamOptions?.include_usage === true };
}

function sendError(response: ServerResponse, status: number, message: string): void {
  const body = JSON.stringify({ error: { message, type: 'invalid_request_error', code: null } });
  response.writeHead(status, { ...jsonHeaders, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

/** Starts the minimal upstream; resolves once it listens. */
export async function startMinimalUpstream(options: Partial<MinimalUpstreamOptions> = {}): Promise<Server> {
  const settings: MinimalUpstreamOptions = { ...defaultMinimalUpstreamOptions, ...options };
  const answers = precomputeAnswers(settings.chunks);
  const modelsBody = Buffer.from(
    JSON.stringify({ object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'bench' }] }),
  );

  const answerStream = (response: ServerResponse, includeUsage: boolean) => {
    response.writeHead(200, sseHeaders);
    if (settings.chunkDelayMs === 0) {
      response.end(includeUsage ? answers.streamWithUsage : answers.stream);
      return;
    }
    const events = includeUsage ? answers.streamEventsWithUsage : answers.streamEvents;
    let next = 0;
    let timer: NodeJS.Timeout | undefined;
    const writeNext = () => {
      const event = events[next];
      next += 1;
      if (event === undefined || next >= events.length) {
        timer = undefined;
        response.end(event);
        return;
      }
      response.write(event);
      timer = setTimeout(writeNext, settings.chunkDelayMs);
    };
    // The client may leave mid-stream; stop the timer chain so an abandoned stream costs nothing.
    response.once('close', () => {
      if (timer !== undefined) clearTimeout(timer);
    });
    writeNext();
  };

  const answer = (request: IncomingMessage, response: ServerResponse, raw: Buffer) => {
    if (request.url === '/v1/chat/completions' && request.method === 'POST') {
      const shape = readChatRequestShape(raw);
      if (shape === undefined) {
        sendError(response, 400, 'The body must be a JSON object.');
        return;
      }
      if (shape.stream) {
        answerStream(response, shape.includeUsage);
        return;
      }
      response.writeHead(200, { ...jsonHeaders, 'content-length': answers.whole.length });
      response.end(answers.whole);
      return;
    }
    if (request.url === '/v1/models' && request.method === 'GET') {
      response.writeHead(200, { ...jsonHeaders, 'content-length': modelsBody.length });
      response.end(modelsBody);
      return;
    }
    sendError(response, 404, `No route ${request.method ?? ''} ${request.url ?? ''}.`);
  };

  const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (request, response) => {
    const parts: Buffer[] = [];
    request.on('data', (part: Buffer) => parts.push(part));
    request.on('end', () => {
      const raw = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      if (settings.latencyMs > 0) {
        setTimeout(answer, settings.latencyMs, request, response, raw);
      } else {
        answer(request, response, raw);
      }
    });
  });
  // Thousands of idle keep-alive connections from a gateway pool are normal here.
  server.maxConnections = 100_000;
  server.headersTimeout = 60_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(settings.port, settings.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

async function main(): Promise<void> {
  const program = new Command('minimal-upstream')
    .description('Minimal OpenAI-compatible upstream for benchmarks.')
    .option('--port <n>', 'listen port, 0 for a free one', wholeNumber, defaultMinimalUpstreamOptions.port)
    .option('--host <address>', 'listen address', defaultMinimalUpstreamOptions.host)
    .option('--latency-ms <ms>', 'delay before answering', wholeNumber, 0)
    .option('--chunk-delay-ms <ms>', 'delay between streamed events', wholeNumber, 0)
    .option('--chunks <n>', 'content chunks per streamed answer', wholeNumber, 20)
    .parse();
  const flags = program.opts<{ port: number; host: string; latencyMs: number; chunkDelayMs: number; chunks: number }>();
  const server = await startMinimalUpstream(flags);
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port })}\n`);
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`minimal-upstream: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
