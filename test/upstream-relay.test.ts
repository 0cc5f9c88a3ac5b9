/**
 * The gateway over real HTTP upstreams started by the test (the simulated server behind the OpenAI-compatible
 * adapter, with injected faults, and a capturing server): pass-through, usage completeness, failures mapped to
 * 502/504, streams cut mid-way billed for what was delivered, client disconnects cancelling the upstream.
 */
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { offThreadCharacters } from '../src/metering/prompt-token-pool.js';
import { countTextTokens } from '../src/metering/token-counter.js';
import { type SimServer, startSimServer } from '../src/upstreams/simulated/sim-server.js';
import { chunksOf } from './support/chunked-body.js';
import { refusedBaseUrl } from './support/refused-url.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

const fast = { t_prefill_us: 1, t_fixed_ms: 0.2, t_seq_ms: 0.01 };
const sims: Record<string, SimServer> = {};
let capture: Server;
let captureUrl: string;
const captured: Array<{ body: Record<string, unknown>; headers: IncomingMessage['headers'] }> = [];
/** An upstream that streams one content chunk, then holds the rest until the test calls `releaseGate`. */
let gate: Server;
let releaseGate: () => void = () => undefined;
/** Responses of the gate upstream that ended (finished or cut). */
let gateClosed = 0;
/** An upstream that streams `FLOOD_CHUNKS` chunks as fast as the gateway reads them, counting what it wrote. */
let flood: Server;
let floodWritten = 0;
/** An upstream that writes a whole stream (3 content chunks, usage, `[DONE]`) at once, as a fast engine may. */
let burst: Server;
const FLOOD_CHUNK_CHARS = 16_383;
const FLOOD_CHUNKS = 4_000; // ~66 MB

let harness: TestGateway;
let client: OpenAI;
let tenantId: string;
let apiKey: string;

/**
 * True for a chat completion; anything else gets a 404 and is not counted. The gateway's capacity refiner asks every
 * OpenAI-compatible upstream for `GET /metrics` every few seconds (a 404 tells it to stop): answered as a chat, that
 * request once reached `capture` with an empty body, and reached `gate`, where it took the test's held stream's place
 * in `releaseGate` and counted a close no test caused.
 */
function isChatCompletion(request: IncomingMessage, response: ServerResponse): boolean {
  if (request.method === 'POST' && request.url === '/v1/chat/completions') return true;
  request.resume();
  response.writeHead(404).end();
  return false;
}

beforeAll(async () => {
  sims.ok = await startSimServer({ profile: fast });
  sims.hang = await startSimServer({ profile: fast, faults: 'hang' });
  sims.die = await startSimServer({ profile: fast, faults: 'die-mid-stream' });
  sims.nousage = await startSimServer({ profile: fast, faults: 'no-usage' });
  sims.error = await startSimServer({ profile: fast, faults: 'status:500' });
  sims.rejects = await startSimServer({ profile: fast, faults: 'status:400' });
  sims.unknown = await startSimServer({ profile: fast, faults: 'status:404' });
  // 50 tokens/s: slow enough to disconnect mid-stream.
  sims.slow = await startSimServer({ profile: { t_prefill_us: 1, t_fixed_ms: 20, t_seq_ms: 0 } });
  capture = createServer((request, response) => {
    if (!isChatCompletion(request, response)) return;
    let text = '';
    request.on('data', (data: Buffer) => {
      text += data.toString();
    });
    request.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        // A body that is not JSON: 400, since a throw here fails the whole run.
        response.writeHead(400).end();
        return;
      }
      captured.push({ body: body as Record<string, unknown>, headers: request.headers });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({
          id: 'chatcmpl-capture',
          object: 'chat.completion',
          created: 1,
          model: 'captured-model',
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: 'ok', refusal: null },
              logprobs: null,
              finish_reason: 'stop',
            },
          ],
          usage: { prompt_tokens: 11, completion_tokens: 1, total_tokens: 12 },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => capture.listen(0, '127.0.0.1', resolve));
  captureUrl = `http://127.0.0.1:${(capture.address() as AddressInfo).port}/v1`;
  gate = createServer((request, response) => {
    if (!isChatCompletion(request, response)) return;
    response.on('close', () => {
      gateClosed += 1;
    });
    request.resume();
    request.on('end', () => {
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        `data: ${JSON.stringify({ id: 'chatcmpl-gate', object: 'chat.completion.chunk', created: 1, model: 'simulated', choices, ...extra })}\n\n`;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(chunk([{ index: 0, delta: { role: 'assistant', content: 'first' }, finish_reason: null }]));
      releaseGate = () => {
        response.write(chunk([{ index: 0, delta: { content: ' second' }, finish_reason: null }]));
        response.write(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]));
        response.write(chunk([], { usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } }));
        response.end('data: [DONE]\n\n');
      };
    });
  });
  await new Promise<void>((resolve) => gate.listen(0, '127.0.0.1', resolve));
  const gateUrl = `http://127.0.0.1:${(gate.address() as AddressInfo).port}/v1`;
  flood = createServer((request, response) => {
    let text = '';
    request.on('data', (data: Buffer) => {
      text += data.toString();
    });
    request.on('end', () => {
      // Only the test's streamed request floods (health probes and other callers get a short error).
      if (!text.includes('"stream":true')) {
        response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"stream only"}}');
        return;
      }
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      const event = `data: ${JSON.stringify({
        id: 'chatcmpl-flood',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'simulated',
        choices: [{ index: 0, delta: { content: 'xy '.repeat(FLOOD_CHUNK_CHARS / 3) }, finish_reason: null }],
      })}\n\n`;
      let sent = 0;
      // As fast as the gateway takes them: each write that fills the socket's buffer waits for `drain`.
      const more = (): void => {
        while (sent < FLOOD_CHUNKS) {
          sent += 1;
          floodWritten += event.length;
          if (!response.write(event)) {
            response.once('drain', more);
            return;
          }
        }
        const usage = { prompt_tokens: 5, completion_tokens: FLOOD_CHUNKS, total_tokens: 5 + FLOOD_CHUNKS };
        response.end(
          `data: ${JSON.stringify({ id: 'chatcmpl-flood', object: 'chat.completion.chunk', created: 1, model: 'simulated', choices: [], usage })}\n\ndata: [DONE]\n\n`,
        );
      };
      more();
    });
  });
  await new Promise<void>((resolve) => flood.listen(0, '127.0.0.1', resolve));
  const floodUrl = `http://127.0.0.1:${(flood.address() as AddressInfo).port}/v1`;
  burst = createServer((request, response) => {
    if (!isChatCompletion(request, response)) return;
    request.resume();
    request.on('end', () => {
      const chunk = (choices: unknown[], usage?: unknown) =>
        `data: ${JSON.stringify({ id: 'chatcmpl-burst', object: 'chat.completion.chunk', created: 1, model: 'simulated', choices, ...(usage === undefined ? {} : { usage }) })}\n\n`;
      const content = ['one', ' two', ' three'].map((text) =>
        chunk([{ index: 0, delta: { content: text }, finish_reason: null }]),
      );
      const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(`${content.join('')}${chunk([], usage)}data: [DONE]\n\n`);
    });
  });
  await new Promise<void>((resolve) => burst.listen(0, '127.0.0.1', resolve));
  const burstUrl = `http://127.0.0.1:${(burst.address() as AddressInfo).port}/v1`;

  // Generous: these upstreams answer at once and must not time out on a stalled machine. Only the silent one (`hang`)
  // is waited for, with a short first-byte timeout of its own.
  const timeouts = { connect_ms: 5_000, first_byte_ms: 5_000, idle_ms: 10_000 };
  const upstream = (name: string, base_url: string) => ({
    name,
    type: 'openai',
    base_url,
    timeouts: name === 'hang' ? { ...timeouts, first_byte_ms: 400 } : timeouts,
    api_key_env: 'TEST_UPSTREAM_KEY',
  });
  const model = (name: string) => ({
    name: `${name}-model`,
    context_window: 32_768,
    deployments: [{ upstream: name, model: 'simulated' }],
  });
  const names = Object.keys(sims);
  harness = await startTestGateway(
    {
      upstreams: [
        ...names.map((name) => upstream(name, sims[name]!.url)),
        upstream('capture', captureUrl),
        upstream('flood', floodUrl),
        upstream('burst', burstUrl),
        // A long idle timeout: a held gate stream ends only when the gateway aborts it.
        { ...upstream('gate', gateUrl), timeouts: { ...timeouts, idle_ms: 60_000 } },
        upstream('dead', refusedBaseUrl),
      ],
      // No health probes: one reaching the gate upstream would take the place of the test's held stream.
      routing: { probe_interval_ms: 0 },
      models: [
        ...[...names, 'capture', 'flood', 'burst', 'gate', 'dead'].map(model),
        {
          name: 'failover-model',
          context_window: 32_768,
          deployments: [
            { upstream: 'dead', model: 'simulated' },
            { upstream: 'ok', model: 'simulated' },
          ],
        },
      ],
    },
    { TEST_UPSTREAM_KEY: 'sk-upstream-secret' },
  );
  const created = await harness.createTenantWithKey();
  tenantId = created.tenantId;
  apiKey = created.key;
  client = harness.client(created.key);
});

afterAll(async () => {
  await harness?.close();
  await Promise.all(Object.values(sims).map((sim) => sim.close()));
  capture?.close();
  gate?.closeAllConnections();
  gate?.close();
  flood?.closeAllConnections();
  flood?.close();
  burst?.closeAllConnections();
  burst?.close();
});

const messages = [{ role: 'user' as const, content: 'Say something long.' }];

/** The request-log record of `requestId`, once written (after the response): waits for it up to 10 s. */
async function recordOf(requestId: string | null) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const record = records.find((candidate) => candidate.requestId === requestId);
    if (record) return record;
    if (Date.now() > deadline) throw new Error(`no request-log record for ${requestId}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('relay through the OpenAI-compatible adapter', () => {
  it('passes unknown fields through, renames the model, sends the upstream key, never the client key', async () => {
    const body = {
      model: 'capture-model',
      messages,
      max_tokens: 5,
      logit_bias: { '42': 1 },
      vendor_extension: { x: 1 },
    };
    const reply = await client.chat.completions.create(body as any);
    expect(reply.model).toBe('capture-model');
    const seen = captured.at(-1)!;
    expect(seen.body).toMatchObject({
      model: 'simulated',
      logit_bias: { '42': 1 },
      vendor_extension: { x: 1 },
      max_tokens: 5,
    });
    expect(seen.headers.authorization).toBe('Bearer sk-upstream-secret');
    expect(seen.headers['x-request-id']).toMatch(/^req_/);
  });

  it("sends the upstream the service tier the gateway admitted, and never the client's own engine priority", async () => {
    // The default plan allows default, flex and batch: priority is downgraded to default.
    const asked = { model: 'capture-model', messages, max_tokens: 5, priority: -50 };
    const reply = await client.chat.completions.create({ ...asked, service_tier: 'priority' } as any);
    expect(reply.service_tier).toBe('default');
    expect(captured.at(-1)!.body.service_tier).toBe('default');
    expect(captured.at(-1)!.body).not.toHaveProperty('priority');
    await client.chat.completions.create({ ...asked, service_tier: 'flex' } as any);
    expect(captured.at(-1)!.body.service_tier).toBe('flex');
    // A client that names no tier sends none upstream.
    await client.chat.completions.create({ model: 'capture-model', messages, max_tokens: 5 });
    expect(captured.at(-1)!.body).not.toHaveProperty('service_tier');
  });

  it('always asks the upstream for usage on streams', async () => {
    const stream = await client.chat.completions.create({ model: 'ok-model', messages, max_tokens: 4, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.every((chunk) => !chunk.usage)).toBe(true);
    const { response } = await client.chat.completions
      .create({ model: 'ok-model', messages, max_tokens: 4, stream: true })
      .withResponse();
    const record = await recordOf(response.headers.get('x-request-id'));
    expect(record).toMatchObject({ completionTokens: 4, usageEstimated: false, stream: true, status: 200 });
  });

  /** Streams `maxTokens` from the upstream that reports no usage; the text received, the usage chunk and the record. */
  async function streamWithoutUsage(maxTokens: number) {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: 'nousage-model',
        messages,
        max_tokens: maxTokens,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    return { text, usage, record: await recordOf(response.headers.get('x-request-id')) };
  }

  it('estimates usage (flagged) and still sends the usage chunk when the upstream sends none', async () => {
    const { text, usage, record } = await streamWithoutUsage(8);
    expect(usage?.completion_tokens).toBe(countTextTokens(text));
    expect(record.usageEstimated).toBe(true);
    expect(record.completionTokens).toBe(countTextTokens(text));
  });

  it('estimates a long streamed answer without usage on the worker thread, exactly as the tokenizer counts it', async () => {
    const { text, usage, record } = await streamWithoutUsage(12_000);
    expect(text.length).toBeGreaterThan(offThreadCharacters);
    expect(usage?.completion_tokens).toBe(countTextTokens(text));
    expect(record.usageEstimated).toBe(true);
    expect(record.completionTokens).toBe(countTextTokens(text));
  });

  it('maps an upstream 5xx or 404 to 502, an upstream 400 to 400, a refused connection to 502 and a silent upstream to 504', async () => {
    const statusOf = (model: string) =>
      client.chat.completions.create({ model, messages, max_tokens: 3 }).then(
        () => undefined,
        (error: unknown) => error as InstanceType<typeof OpenAI.APIError>,
      );
    const failed = await statusOf('error-model');
    expect(failed?.status).toBe(502);
    expect(failed?.code).toBe('upstream_http_error');
    const rejected = await statusOf('rejects-model');
    expect(rejected?.status).toBe(400);
    // The client's model exists; the deployment behind it names one its upstream does not know.
    const unknown = await statusOf('unknown-model');
    expect([unknown?.status, unknown?.code]).toEqual([502, 'upstream_http_error']);
    const dead = await statusOf('dead-model');
    expect(dead?.status).toBe(502);
    expect(dead?.code).toBe('upstream_unreachable');
    const started = Date.now();
    const hung = await statusOf('hang-model');
    expect(hung?.status).toBe(504);
    expect(hung?.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('sends a stream that arrived whole in one write, its usage chunk, [DONE] and end included', async () => {
    // A raw client: the chunked encoding shows each write of the gateway's response.
    const body = JSON.stringify({
      model: 'burst-model',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const socket = connect(Number(new URL(harness.url).port), '127.0.0.1');
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      raw += text;
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${apiKey}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    await new Promise<void>((resolve, reject) => {
      const check = () => (raw.endsWith('\r\n0\r\n\r\n') ? resolve() : setTimeout(check, 5));
      socket.once('error', reject);
      check();
    });
    socket.destroy();
    expect(raw.startsWith('HTTP/1.1 200')).toBe(true);
    const chunks = chunksOf(raw);
    expect(chunks).toHaveLength(1);
    const events = chunks[0]!.split('\n\n').filter((event) => event !== '');
    // Three content chunks, the usage chunk, [DONE]: all of them, in order.
    expect(events).toHaveLength(5);
    expect(events.slice(0, 3).map((event) => JSON.parse(event.slice(6)).choices[0].delta.content)).toEqual([
      'one',
      ' two',
      ' three',
    ]);
    expect(JSON.parse(events[3]!.slice(6)).usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 3 });
    expect(events[4]).toBe('data: [DONE]');
  });

  it('relays a stream as it arrives: the first chunk reaches the client while the upstream holds the rest', async () => {
    const stream = await client.chat.completions.create({
      model: 'gate-model',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = stream[Symbol.asyncIterator]();
    try {
      const first = await Promise.race([
        chunks.next(),
        new Promise<'held'>((resolve) => setTimeout(() => resolve('held'), 5000)),
      ]);
      // A gateway that buffered the stream would hold this chunk until the upstream finished.
      expect(first).not.toBe('held');
      expect((first as IteratorResult<OpenAI.ChatCompletionChunk>).value.choices[0]?.delta.content).toBe('first');
    } finally {
      releaseGate();
    }
    let rest = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
      rest += next.value.choices[0]?.delta.content ?? '';
      usage = next.value.usage ?? usage;
    }
    expect(rest).toBe(' second');
    expect(usage?.completion_tokens).toBe(2);
  });

  it('ends a stream cut by the upstream with an error event and records the tokens delivered', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'die-model', messages, max_tokens: 50, stream: true })
      .withResponse();
    let text = '';
    const error = await (async () => {
      try {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      } catch (caught: unknown) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const record = await recordOf(response.headers.get('x-request-id'));
    expect(record.status).toBe(200);
    expect(record.errorCode).not.toBeNull();
    expect(record.usageEstimated).toBe(true);
    expect(record.completionTokens).toBe(countTextTokens(text));
    expect(record.completionTokens).toBeLessThan(50);
  });

  it('holds the upstream back while the client does not read (backpressure end to end)', async () => {
    const address = new URL(harness.url);
    const body = JSON.stringify({ model: 'flood-model', messages, stream: true });
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const call = httpRequest(
        {
          host: address.hostname,
          port: address.port,
          path: '/v1/chat/completions',
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        },
        resolve,
      );
      call.on('error', reject);
      call.end(body);
    });
    expect(response.statusCode).toBe(200);
    response.pause(); // the client stops reading
    let held = 0;
    for (let wait = 0; wait < 40; wait++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (floodWritten === held) break; // the upstream is blocked
      held = floodWritten;
    }
    const total = FLOOD_CHUNKS * (FLOOD_CHUNK_CHARS + 120);
    // What sits in socket buffers and the gateway's write buffer, a small part of the stream: a gateway that kept
    // reading the upstream while its client did not would have taken it all.
    expect(floodWritten).toBeLessThan(total / 3);
    // The client reads a little again: the stream moves (it was held, not stuck).
    const more = await new Promise<number>((resolve) => {
      response.once('data', (data: Buffer) => resolve(data.length));
      response.resume();
    });
    expect(more).toBeGreaterThan(0);
    response.destroy();
  });

  it('cancels the upstream when the client disconnects, and records what was delivered', async () => {
    const controller = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'slow-model', messages, max_tokens: 2000, stream: true }, { signal: controller.signal })
      .withResponse();
    let received = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) received += 1;
        if (received === 5) controller.abort();
      }
    } catch {
      // the abort
    }
    let running = 1;
    for (const deadline = Date.now() + 10_000; running > 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      running = (await sims.slow!.upstream.load()).running;
    }
    expect(running).toBe(0);
    const record = await recordOf(response.headers.get('x-request-id'));
    expect(record.errorCode).toBe('client_closed');
    expect(record.completionTokens).toBeGreaterThanOrEqual(5);
    expect(record.completionTokens).toBeLessThan(200);
  });

  it('ends a whole request whose client left: recorded as 499 client_closed, its concurrency given back', async () => {
    const other = await harness.createTenantWithKey();
    expect((await harness.admin('PUT', `/tenants/${other.tenantId}/plan`, { concurrency: 1 })).status).toBe(200);
    const otherClient = harness.client(other.key, { maxRetries: 0 });
    const controller = new AbortController();
    const pending = otherClient.chat.completions.create(
      { model: 'slow-model', messages, max_tokens: 2000 },
      { signal: controller.signal },
    );
    const running = async () => (await sims.slow!.upstream.load()).running;
    for (const deadline = Date.now() + 10_000; (await running()) === 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(await running()).toBe(1);
    controller.abort();
    await expect(pending).rejects.toThrow(/abort/i);
    for (const deadline = Date.now() + 10_000; (await running()) > 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(await running()).toBe(0);
    let records = await harness.gateway.store.listRequestLogs({ tenantId: other.tenantId, limit: 10 });
    for (const deadline = Date.now() + 10_000; records.length === 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      records = await harness.gateway.store.listRequestLogs({ tenantId: other.tenantId, limit: 10 });
    }
    expect(records.map((record) => [record.status, record.errorCode])).toEqual([[499, 'client_closed']]);
    // The plan allows one request at a time: this one runs only if the abandoned one gave its place back.
    const next = await otherClient.chat.completions.create({ model: 'ok-model', messages, max_tokens: 3 });
    expect(next.usage?.completion_tokens).toBe(3);
  });

  it('cancels the upstream at once when the client drops a keep-alive connection during its second request', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const post = (body: unknown) =>
      new Promise<IncomingMessage & { reused: boolean }>((resolve, reject) => {
        const sent = httpRequest(
          `${harness.url}/v1/chat/completions`,
          {
            method: 'POST',
            agent,
            headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          },
          (response) => resolve(Object.assign(response, { reused: sent.reusedSocket })),
        );
        sent.on('error', reject);
        sent.end(JSON.stringify(body));
      });
    try {
      // A first request runs to its end on the connection, which stays open.
      const first = await post({ model: 'ok-model', messages, max_tokens: 3 });
      await new Promise((resolve) => first.resume().on('end', resolve));
      expect(first.statusCode).toBe(200);
      // The second, on the same connection, reaches the gate upstream, which sends one chunk and holds the rest: no
      // further chunk will tell the relay that the client left, only the request's abort signal can.
      const closedBefore = gateClosed;
      const second = await post({ model: 'gate-model', messages, stream: true });
      expect(second.reused).toBe(true);
      await new Promise((resolve) => second.once('data', resolve));
      second.socket.destroy();
      // Well before the gate upstream's 60 s idle timeout could end it.
      for (const deadline = Date.now() + 10_000; gateClosed === closedBefore && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(gateClosed).toBe(closedBefore + 1);
      const record = await recordOf(String(second.headers['x-request-id']));
      expect(record.errorCode).toBe('client_closed');
    } finally {
      agent.destroy();
    }
  });

  it('fails over to another deployment before the first byte, and the request log shows every attempt', async () => {
    const ids: string[] = [];
    for (let index = 0; index < 4; index++) {
      const { data, response } = await client.chat.completions
        .create({ model: 'failover-model', messages, max_tokens: 3 })
        .withResponse();
      expect(data.choices[0]?.message.content).toBeTruthy();
      ids.push(response.headers.get('x-request-id')!);
    }
    const records = await Promise.all(ids.map((id) => recordOf(id)));
    const retried = records.filter((record) => record.attempts > 1);
    expect(retried.length).toBeGreaterThan(0);
    for (const record of retried) {
      expect(record.attemptLog).toMatch(/^dead\/simulated \S+ upstream_unreachable .* → ok\/simulated accepted/);
      expect(record.deployment).toBe('ok/simulated');
    }
  });
});
