/**
 * The official `openai` SDK against a real gateway over the simulated fleet: every endpoint, whole and streamed,
 * objects validated against OpenAI's own OpenAPI schemas, usage checked against the tokenizer.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { countPromptTokens, countTextTokens } from '../src/metering/token-counter.js';
import { openAIErrors } from './support/openai-schema.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

let harness: TestGateway;
let client: OpenAI;
let tenantId: string;

beforeAll(async () => {
  harness = await startTestGateway();
  const created = await harness.createTenantWithKey();
  tenantId = created.tenantId;
  client = harness.client(created.key);
});
afterAll(async () => harness?.close());

const messages = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Tell me about token metering in one paragraph.' },
];

describe('chat completions', () => {
  it('answers whole, in the OpenAI shape, with exact usage and the public model name', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'sim-pro-32k', messages, max_tokens: 40 })
      .withResponse();
    expect(openAIErrors('CreateChatCompletionResponse', data)).toEqual([]);
    expect(data.model).toBe('sim-pro-32k');
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    const expectedPrompt = countPromptTokens('chat', { model: 'sim-pro-32k', messages });
    expect(data.usage?.prompt_tokens).toBe(expectedPrompt);
    expect(data.usage?.completion_tokens).toBe(40);
    expect(countTextTokens(data.choices[0]?.message.content ?? '')).toBe(40);
    expect(data.usage?.total_tokens).toBe(expectedPrompt + 40);
  });

  it('answers a prompt that is one 800,000-character word, counted exactly', async () => {
    // The tokenizer library's merge is quadratic in a word's length (64,000 characters took 4 s), so this prompt
    // alone would have held the gateway's event loop for about ten minutes.
    const word = [{ role: 'user' as const, content: 'x'.repeat(800_000) }];
    const data = await client.chat.completions.create({ model: 'sim-pro-128k', messages: word, max_tokens: 5 });
    expect(data.usage?.prompt_tokens).toBe(countPromptTokens('chat', { messages: word }));
    expect(data.usage?.prompt_tokens).toBeGreaterThan(50_000);
  });

  it('streams without a usage chunk when the client did not ask for one', async () => {
    const stream = await client.chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 12,
      stream: true,
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.length).toBeGreaterThan(12);
    for (const chunk of chunks) {
      expect(openAIErrors('CreateChatCompletionStreamResponse', chunk)).toEqual([]);
      expect(chunk.model).toBe('sim-pro-32k');
      expect(chunk.usage ?? null).toBeNull();
      expect(chunk.choices.length).toBeGreaterThan(0);
    }
    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
    expect(countTextTokens(text)).toBe(12);
  });

  it('streams exactly one trailing usage chunk when stream_options.include_usage is set', async () => {
    const stream = await client.chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 9,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const withUsage = chunks.filter((chunk) => chunk.usage);
    expect(withUsage).toHaveLength(1);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage?.completion_tokens).toBe(9);
    expect(last.usage?.prompt_tokens).toBe(countPromptTokens('chat', { messages }));
    for (const chunk of chunks) expect(openAIErrors('CreateChatCompletionStreamResponse', chunk)).toEqual([]);
  });

  it('records every request in the request log with its usage', async () => {
    const { response } = await client.chat.completions
      .create({ model: 'sim-pro-128k', messages, max_tokens: 7 })
      .withResponse();
    const requestId = response.headers.get('x-request-id');
    // Journaled before the response, committed right after it.
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const record = records.find((candidate) => candidate.requestId === requestId);
    expect(record).toMatchObject({
      tenantId,
      model: 'sim-pro-128k',
      deployment: 'sim/pro-128k',
      status: 200,
      completionTokens: 7,
      usageEstimated: false,
      stream: false,
    });
  });
});

describe('legacy completions', () => {
  it('answers whole and streamed', async () => {
    const whole = await client.completions.create({ model: 'sim-pro-32k', prompt: 'Once upon a time', max_tokens: 5 });
    expect(openAIErrors('CreateCompletionResponse', whole)).toEqual([]);
    expect(whole.usage?.completion_tokens).toBe(5);
    expect(whole.usage?.prompt_tokens).toBe(countPromptTokens('completions', { prompt: 'Once upon a time' }));

    const stream = await client.completions.create({
      model: 'sim-pro-32k',
      prompt: 'Once upon a time',
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.Completions.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(countTextTokens(text)).toBe(6);
    expect(usage?.completion_tokens).toBe(6);
  });
});

describe('embeddings', () => {
  it('returns deterministic vectors in the OpenAI shape', async () => {
    const first = await client.embeddings.create({ model: 'sim-embed', input: ['alpha', 'beta'] });
    const again = await client.embeddings.create({ model: 'sim-embed', input: ['alpha', 'beta'] });
    expect(openAIErrors('CreateEmbeddingResponse', first)).toEqual([]);
    expect(first.data).toHaveLength(2);
    expect(first.data[0]?.embedding).toEqual(again.data[0]?.embedding);
    expect(first.data[0]?.embedding).not.toEqual(first.data[1]?.embedding);
    expect(first.usage.prompt_tokens).toBe(countPromptTokens('embeddings', { input: ['alpha', 'beta'] }));
  });
});

describe('models', () => {
  it('lists the models the key may use and retrieves one', async () => {
    const page = await client.models.list();
    const ids = page.data.map((model) => model.id).sort();
    expect(ids).toEqual(['sim-embed', 'sim-pro-128k', 'sim-pro-32k']);
    for (const model of page.data) expect(openAIErrors('Model', model)).toEqual([]);
    const one = await client.models.retrieve('sim-pro-32k');
    expect(one.id).toBe('sim-pro-32k');
  });

  it('shows a restricted key only its models', async () => {
    const restricted = await harness.createTenantWithKey({ models: ['sim-pro-32k'] });
    const restrictedClient = harness.client(restricted.key);
    const page = await restrictedClient.models.list();
    expect(page.data.map((model) => model.id)).toEqual(['sim-pro-32k']);
    await expect(restrictedClient.models.retrieve('sim-pro-128k')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('errors arrive as the SDK typed errors with OpenAI bodies', () => {
  async function caught(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
    try {
      await promise;
    } catch (error: unknown) {
      if (error instanceof OpenAI.APIError) return error;
      throw error;
    }
    throw new Error('expected an error');
  }

  it('400 names the bad field', async () => {
    const error = await caught(
      client.chat.completions.create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 7 as any }] }),
    );
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error.param).toBe('messages[0].content');
    expect(openAIErrors('ErrorResponse', { error: error.error })).toEqual([]);

    const missing = await caught(client.chat.completions.create({ model: 'sim-pro-32k' } as any));
    expect(missing).toBeInstanceOf(OpenAI.BadRequestError);
    expect(missing.param).toBe('messages');
    expect(missing.code).toBe('missing_required_parameter');

    const range = await caught(client.chat.completions.create({ model: 'sim-pro-32k', messages, temperature: 9 }));
    expect(range.param).toBe('temperature');
  });

  it('400 context_length_exceeded when prompt + max_tokens exceed the window', async () => {
    const error = await caught(client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 32_768 }));
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error.code).toBe('context_length_exceeded');
    expect(error.param).toBe('max_tokens');
    // The parameter the client used is the one named.
    const newer = await caught(
      client.chat.completions.create({ model: 'sim-pro-32k', messages, max_completion_tokens: 32_768 }),
    );
    expect([newer.code, newer.param]).toEqual(['context_length_exceeded', 'max_completion_tokens']);
  });

  it('checks each prompt of a legacy batch of prompts against the window, not their sum', async () => {
    // About 20,000 tokens each: two fit a 32k window one at a time, not together.
    const long = 'hello '.repeat(20_000);
    // Past the gateway's check, the simulated fleet itself takes one prompt per request.
    const both = await caught(client.completions.create({ model: 'sim-pro-32k', prompt: [long, long], max_tokens: 2 }));
    expect(both.code).toBe('unsupported_value');
    expect(both.message).toMatch(/one prompt per request/);
    const one = await caught(client.completions.create({ model: 'sim-pro-32k', prompt: long + long }));
    expect([one.code, one.param]).toEqual(['context_length_exceeded', 'prompt']);
    expect(one.message).toMatch(/in the prompt/);
  });

  it('401 for missing, unknown and malformed keys', async () => {
    const unknown = await caught(harness.client('tg-unknownkeyunknownkeyunknownkeyunknownkey').models.list());
    expect(unknown).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(unknown.code).toBe('invalid_api_key');
    const response = await fetch(`${harness.url}/v1/models`);
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('missing_api_key');
  });

  it('403 for a model the key may not use, 404 model_not_found for an unknown one', async () => {
    const restricted = await harness.createTenantWithKey({ models: ['sim-pro-32k'] });
    const forbidden = await caught(
      harness.client(restricted.key).chat.completions.create({ model: 'sim-pro-128k', messages }),
    );
    expect(forbidden).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const missing = await caught(client.chat.completions.create({ model: 'no-such-model', messages }));
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect(missing.code).toBe('model_not_found');
  });

  it('413 for a body over the limit', async () => {
    const small = await startTestGateway({
      ...(await import('./support/test-gateway.js')).fastSimulatedConfig,
      server: { body_limit_bytes: 2048 },
    });
    try {
      const { key } = await small.createTenantWithKey();
      const error = await caught(
        small
          .client(key)
          .chat.completions.create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
      );
      expect(error.status).toBe(413);
      expect(error.code).toBe('request_too_large');
    } finally {
      await small.close();
    }
  });

  it('every error response carries x-request-id and is recorded', async () => {
    const response = await fetch(`${harness.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer nope', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    const malformed = await fetch(`${harness.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json' },
      body: '{"model": "sim-pro-32k", "messages": [',
    });
    expect(malformed.status).toBe(400);
    const requestId = malformed.headers.get('x-request-id');
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    // The record is written asynchronously after the response: poll until it is there.
    await vi.waitFor(
      async () => {
        const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
        expect(records.find((record) => record.requestId === requestId)).toMatchObject({
          status: 400,
          errorCode: 'invalid_json',
        });
      },
      { timeout: 10_000, interval: 20 },
    );
  });
});

describe('usage without a price book', () => {
  it('reports the tokens of unpriced requests in /v1/usage, at no amount', async () => {
    const { key } = await harness.createTenantWithKey();
    const tenantClient = harness.client(key);
    const replies = await Promise.all(
      [3, 5].map((max_tokens) => tenantClient.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens })),
    );
    const expected = {
      input: replies.reduce((sum, reply) => sum + reply.usage!.prompt_tokens, 0),
      output: replies.reduce((sum, reply) => sum + reply.usage!.completion_tokens, 0),
    };
    const start = Math.floor(Date.now() / 1000) - 3600;
    type UsageResult = { input_tokens: number; output_tokens: number; num_model_requests: number };
    let results: UsageResult[] = [];
    const deadline = Date.now() + 5_000;
    while (results.length === 0 && Date.now() < deadline) {
      const response = await fetch(`${harness.url}/v1/usage?start_time=${start}&bucket_width=1h`, {
        headers: { authorization: `Bearer ${key}` },
      });
      const page = (await response.json()) as { data: Array<{ results: UsageResult[] }> };
      results = page.data.flatMap((bucket) => bucket.results);
      if (results.length === 0) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const sum = (pick: (result: UsageResult) => number) => results.reduce((total, result) => total + pick(result), 0);
    expect(sum((result) => result.num_model_requests)).toBe(2);
    expect(sum((result) => result.input_tokens)).toBe(expected.input);
    expect(sum((result) => result.output_tokens)).toBe(expected.output);
  });
});

describe('operations endpoints', () => {
  it('serves healthz, readyz and Prometheus metrics', async () => {
    expect((await fetch(`${harness.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${harness.url}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${harness.url}/metrics`)).text();
    expect(metrics).toMatch(/tollgate_requests_total\{endpoint="chat",model="sim-pro-32k",status="200"\} \d+/);
    expect(metrics).toMatch(/tollgate_tokens_total\{model="sim-pro-32k",class="output"\} \d+/);
    expect(metrics).toContain('tollgate_time_to_first_token_seconds_bucket');
    // Requests ran before this test: their records were committed in at least one group commit, at most one each.
    const committed = Number(/^tollgate_request_log_committed_total (\d+)$/m.exec(metrics)?.[1]);
    const transactions = Number(/^tollgate_request_log_transactions_total (\d+)$/m.exec(metrics)?.[1]);
    expect(transactions).toBeGreaterThan(0);
    expect(transactions).toBeLessThanOrEqual(committed);
  });

  it('guards the admin API', async () => {
    const response = await fetch(`${harness.url}/admin/v1/tenants`, { headers: { authorization: 'Bearer wrong' } });
    expect(response.status).toBe(401);
    const none = await fetch(`${harness.url}/admin/v1/tenants`);
    expect(none.status).toBe(401);
    const basic = await fetch(`${harness.url}/admin/v1/tenants`, {
      headers: { authorization: `Basic ${harness.adminToken}` },
    });
    expect(basic.status).toBe(401);
    // The scheme is case-insensitive (RFC 9110), as it is for API keys.
    const lower = await fetch(`${harness.url}/admin/v1/tenants`, {
      headers: { authorization: `bearer ${harness.adminToken}` },
    });
    expect(lower.status).toBe(200);
  });
});
