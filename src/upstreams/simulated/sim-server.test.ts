import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countPromptTokens, countTextTokens } from '../../metering/token-counter.js';
import { parseSimFaults } from './sim-fault.js';
import { type SimServer, startSimServer } from './sim-server.js';

// Fast replicas so real-clock tests take milliseconds.
const fastProfile = { t_fixed_ms: 0.1, t_seq_ms: 0.01, t_prefill_us: 0.1 };

let server: SimServer;
let client: OpenAI;

beforeAll(async () => {
  server = await startSimServer({ profile: fastProfile, replicas: 2, models: ['sim-8b'] });
  client = new OpenAI({ baseURL: server.url, apiKey: 'x', maxRetries: 0, timeout: 5_000 });
});

afterAll(async () => {
  await server.close();
});

const messages = [
  { role: 'system' as const, content: 'You are a concise assistant.' },
  { role: 'user' as const, content: 'Explain KV caches in one paragraph.' },
];

async function post(path: string, body: unknown, headers: Record<string, string> = {}, baseUrl = server.url) {
  return fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** The `data:` payloads of an SSE body, in order. */
function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: '))
    .map((frame) => frame.slice('data: '.length));
}

describe('startSimServer with the official openai SDK', () => {
  it('serves a whole chat completion with exact usage', async () => {
    const completion = await client.chat.completions.create({ model: 'any-model', messages, max_tokens: 40 });
    expect(completion.object).toBe('chat.completion');
    expect(completion.model).toBe('any-model');
    const content = completion.choices[0]!.message.content!;
    expect(completion.choices[0]!.finish_reason).toBe('length');
    expect(completion.usage!.prompt_tokens).toBe(countPromptTokens('chat', { messages }));
    expect(completion.usage!.completion_tokens).toBe(40);
    expect(countTextTokens(content)).toBe(completion.usage!.completion_tokens);
  });

  it('streams a chat completion whose text has completion_tokens tokens', async () => {
    const stream = await client.chat.completions.create({
      model: 'sim-8b',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(finish).toBe('stop');
    expect(usage).toBeDefined();
    expect(usage!.prompt_tokens).toBe(countPromptTokens('chat', { messages }));
    expect(countTextTokens(text)).toBe(usage!.completion_tokens);
    // role chunk + one per token + finish chunk + usage chunk
    expect(chunks).toBe(usage!.completion_tokens + 3);
  });

  it('sends the usage chunk only when include_usage is set, then [DONE]', async () => {
    const response = await post('/chat/completions', { model: 'm', messages, max_tokens: 5, stream: true });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const data = sseData(await response.text());
    expect(data.at(-1)).toBe('[DONE]');
    const chunks = data.slice(0, -1).map((item) => JSON.parse(item));
    expect(chunks).toHaveLength(1 + 5 + 1);
    expect(chunks.every((chunk) => chunk.choices.length === 1 && !('usage' in chunk))).toBe(true);
  });

  it('serves completions whole and streamed', async () => {
    const whole = await client.completions.create({ model: 'm', prompt: 'The capital of France is', max_tokens: 9 });
    expect(whole.object).toBe('text_completion');
    expect(countTextTokens(whole.choices[0]!.text)).toBe(9);
    expect(whole.usage).toEqual({
      prompt_tokens: countPromptTokens('completions', { prompt: 'The capital of France is' }),
      completion_tokens: 9,
      total_tokens: countPromptTokens('completions', { prompt: 'The capital of France is' }) + 9,
    });
    const stream = await client.completions.create({
      model: 'm',
      prompt: 'The capital of France is',
      max_tokens: 9,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let completionTokens = -1;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
    }
    expect(text).toBe(whole.choices[0]!.text);
    expect(completionTokens).toBe(9);
  });

  it('serves embeddings (the SDK asks for base64 and decodes it)', async () => {
    const result = await client.embeddings.create({ model: 'embed', input: ['hello world', 'goodbye'] });
    expect(result.data).toHaveLength(2);
    const vector = result.data[0]!.embedding;
    expect(vector).toHaveLength(256);
    expect(Math.hypot(...vector)).toBeCloseTo(1, 5);
    expect(result.usage.prompt_tokens).toBe(countPromptTokens('embeddings', { input: ['hello world', 'goodbye'] }));
    const floats = await client.embeddings.create({
      model: 'embed',
      input: 'hello world',
      dimensions: 32,
      encoding_format: 'float',
    });
    expect(floats.data[0]!.embedding).toHaveLength(32);
  });

  it('lists models, answers health, and 404s unknown routes with an OpenAI error', async () => {
    const models = await client.models.list();
    expect(models.data.map((model) => model.id)).toEqual(['sim-8b']);
    const health = await fetch(server.url.replace(/\/v1$/, '/health'));
    expect(health.status).toBe(200);
    const missing = await post('/nope', {});
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as any).error.code).toBe('unknown_route');
  });

  it('answers bad input with a 400 OpenAI error', async () => {
    const response = await fetch(`${server.url}/chat/completions`, { method: 'POST', body: '{not json' });
    expect(response.status).toBe(400);
    expect(((await response.json()) as any).error).toMatchObject({
      type: 'invalid_request_error',
      code: 'invalid_json',
    });
    const error = await client.chat.completions.create({ model: 'm', messages, n: 2 }).catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error.code).toBe('unsupported_value');
  });
});

describe('metrics and disconnects', () => {
  let slow: SimServer;
  beforeAll(async () => {
    slow = await startSimServer({ profile: { t_fixed_ms: 5, t_seq_ms: 0, t_prefill_us: 0, max_batch: 1 } });
  });
  afterAll(async () => {
    await slow.close();
  });

  const metric = (text: string, name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\d+)$`, 'm').exec(text)?.[1]);

  it('exposes vLLM gauges and cancels the sequences of clients that disconnect', { timeout: 30_000 }, async () => {
    const controllers = [new AbortController(), new AbortController()];
    const responses = await Promise.all(
      controllers.map((controller) =>
        fetch(`${slow.url}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm', messages, max_tokens: 100_000, stream: true }),
          signal: controller.signal,
        }),
      ),
    );
    expect(responses.map((response) => response.status)).toEqual([200, 200]);
    const metricsUrl = slow.url.replace(/\/v1$/, '/metrics');
    const before = await (await fetch(metricsUrl)).text();
    expect(metric(before, 'vllm:num_requests_running')).toBe(1);
    expect(metric(before, 'vllm:num_requests_waiting')).toBe(1);
    for (const controller of controllers) controller.abort();
    const deadline = Date.now() + 10_000;
    let after = '';
    for (;;) {
      after = await (await fetch(metricsUrl)).text();
      const busy = metric(after, 'vllm:num_requests_running') + metric(after, 'vllm:num_requests_waiting');
      if (busy === 0 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(metric(after, 'vllm:num_requests_running')).toBe(0);
    expect(metric(after, 'vllm:num_requests_waiting')).toBe(0);
    expect(slow.upstream.engines[0]!.stats.cancelled).toBe(2);
  });
});

describe('fault injection', () => {
  it('parses fault lists and rejects malformed ones', () => {
    expect(parseSimFaults('slow-first-byte:200, no-usage,die-mid-stream')).toEqual([
      { kind: 'slow-first-byte', delayMs: 200 },
      { kind: 'no-usage' },
      { kind: 'die-mid-stream', afterChunks: 3 },
    ]);
    expect(parseSimFaults('status:429')).toEqual([{ kind: 'status', status: 429 }]);
    for (const bad of ['explode', 'status', 'status:200', 'hang:3', 'slow-first-byte:-1']) {
      expect(() => parseSimFaults(bad)).toThrow(/simulated fault/);
    }
  });

  it('status:<code> answers that status with an OpenAI error body; 429 carries retry-after', async () => {
    const unavailable = await client.chat.completions
      .create({ model: 'm', messages }, { headers: { 'x-sim-fault': 'status:503' } })
      .catch((caught) => caught);
    expect(unavailable).toBeInstanceOf(OpenAI.InternalServerError);
    expect(unavailable.status).toBe(503);
    expect(unavailable.error).toMatchObject({ type: 'server_error', code: 'simulated_fault' });
    const limited = await client.chat.completions
      .create({ model: 'm', messages, stream: true }, { headers: { 'x-sim-fault': 'status:429' } })
      .catch((caught) => caught);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect(limited.headers.get('retry-after')).toBe('1');
  });

  it('hang accepts the request and never answers', async () => {
    const hanging = new OpenAI({ baseURL: server.url, apiKey: 'x', maxRetries: 0, timeout: 200 });
    const error = await hanging.chat.completions
      .create({ model: 'm', messages }, { headers: { 'x-sim-fault': 'hang' } })
      .catch((caught) => caught);
    expect(error).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
  });

  it('die-mid-stream sends some chunks then destroys the socket', async () => {
    const stream = await client.chat.completions.create(
      { model: 'm', messages, max_tokens: 50, stream: true },
      { headers: { 'x-sim-fault': 'die-mid-stream:4' } },
    );
    let received = 0;
    const error = await (async () => {
      for await (const _chunk of stream) received++;
    })().catch((caught) => caught);
    expect(error).toBeInstanceOf(Error);
    expect(received).toBe(4);

    const whole = await client.chat.completions
      .create({ model: 'm', messages, max_tokens: 50 }, { headers: { 'x-sim-fault': 'die-mid-stream' } })
      .catch((caught) => caught);
    expect(whole).toBeInstanceOf(Error);
  });

  it('no-usage never sends usage, even when asked', async () => {
    const stream = await client.chat.completions.create(
      { model: 'm', messages, max_tokens: 5, stream: true, stream_options: { include_usage: true } },
      { headers: { 'x-sim-fault': 'no-usage' } },
    );
    let sawUsage = false;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) sawUsage = true;
    }
    expect(sawUsage).toBe(false);
    expect(chunks).toBe(1 + 5 + 1);
    const whole = await client.chat.completions.create(
      { model: 'm', messages, max_tokens: 5 },
      { headers: { 'x-sim-fault': 'no-usage' } },
    );
    expect(whole.usage).toBeUndefined();
  });

  it('no-done ends the stream without [DONE]', async () => {
    const response = await post(
      '/chat/completions',
      { model: 'm', messages, max_tokens: 5, stream: true, stream_options: { include_usage: true } },
      { 'x-sim-fault': 'no-done' },
    );
    const data = sseData(await response.text());
    expect(data).toHaveLength(1 + 5 + 1 + 1);
    expect(data).not.toContain('[DONE]');
    expect(JSON.parse(data.at(-1)!).usage.completion_tokens).toBe(5);
  });

  it('slow-first-byte delays the answer', async () => {
    const started = performance.now();
    await client.chat.completions.create(
      { model: 'm', messages, max_tokens: 2 },
      { headers: { 'x-sim-fault': 'slow-first-byte:150' } },
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
  });

  it('applies server-level faults unless the header replaces them; rejects a malformed header', async () => {
    const faulty = await startSimServer({ profile: fastProfile, faults: 'status:502' });
    try {
      const failing = await post('/chat/completions', { model: 'm', messages }, {}, faulty.url);
      expect(failing.status).toBe(502);
      expect(((await failing.json()) as any).error.code).toBe('simulated_fault');
      const healthy = await post(
        '/chat/completions',
        { model: 'm', messages, max_tokens: 3 },
        { 'x-sim-fault': '' },
        faulty.url,
      );
      expect(healthy.status).toBe(200);
      const malformed = await post(
        '/chat/completions',
        { model: 'm', messages },
        { 'x-sim-fault': 'explode' },
        faulty.url,
      );
      expect(malformed.status).toBe(400);
      expect(((await malformed.json()) as any).error.code).toBe('invalid_fault');
    } finally {
      await faulty.close();
    }
  });
});
