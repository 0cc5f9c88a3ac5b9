/**
 * The Responses API through the official `openai` SDK: answered by the simulated fleet (text) and by a live
 * OpenAI-compatible server started here that answers with tool calls, whole and streamed. Every object and event is
 * validated against OpenAI's own OpenAPI schemas; usage, billing and the request log are those of the chat request
 * the gateway made of it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseNano } from '../src/billing/nano.js';
import { countPromptTokens, countTextTokens } from '../src/metering/token-counter.js';
import { COMPACTION_PROMPT, CompactionSeal } from '../src/responses/compaction.js';
import { type SimServer, startSimServer } from '../src/upstreams/simulated/sim-server.js';
import { isFinal, jsonl, readJsonl, uploadInput, waitForBatch } from './support/batch-fixtures.js';
import { openAIErrors } from './support/openai-schema.js';
import { pricedSimulatedConfig, startTestGateway, type TestGateway } from './support/test-gateway.js';

/** What the tool-calling upstream received, last request first. */
const toolUpstreamRequests: Array<Record<string, unknown>> = [];

/** A chat completion that calls two tools, as OpenAI answers it. */
const toolCompletion = {
  id: 'chatcmpl-tools',
  object: 'chat.completion',
  created: 1_764_000_000,
  model: 'tool-model-2026',
  choices: [
    {
      index: 0,
      message: {
        role: 'assistant',
        content: null,
        refusal: null,
        tool_calls: [
          { id: 'call_weather', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
          { id: 'call_time', type: 'function', function: { name: 'get_time', arguments: '{"zone":"CET"}' } },
        ],
      },
      finish_reason: 'tool_calls',
    },
  ],
  usage: { prompt_tokens: 57, completion_tokens: 31, total_tokens: 88, prompt_tokens_details: { cached_tokens: 32 } },
};

/** The same answer streamed: OpenAI's chunk shape, arguments in fragments, the usage chunk last. */
function toolChunks(): string[] {
  const chunk = (delta: Record<string, unknown>, finish: string | null = null, usage: unknown = null) =>
    JSON.stringify({
      id: 'chatcmpl-tools',
      object: 'chat.completion.chunk',
      created: 1_764_000_000,
      model: 'tool-model-2026',
      choices: usage === null ? [{ index: 0, delta, finish_reason: finish }] : [],
      usage,
    });
  return [
    chunk({ role: 'assistant', content: null }),
    chunk({
      tool_calls: [
        { index: 0, id: 'call_weather', type: 'function', function: { name: 'get_weather', arguments: '' } },
      ],
    }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '"Oslo"}' } }] }),
    chunk({
      tool_calls: [{ index: 1, id: 'call_time', type: 'function', function: { name: 'get_time', arguments: '' } }],
    }),
    chunk({ tool_calls: [{ index: 1, function: { arguments: '{"zone":"CET"}' } }] }),
    chunk({}, 'tool_calls'),
    chunk({}, null, toolCompletion.usage),
  ];
}

let toolUpstream: Server;
/** The context window of `small-window-model` (served by the tool upstream), tokens. */
const SMALL_WINDOW = 400;
/** The price of `slow-model`, CNY per million tokens. */
const SLOW_MODEL_PRICE = { input: '0.8', output: '2' };

let harness: TestGateway;
let client: OpenAI;
let tenantId: string;
/** An OpenAI-compatible upstream at 50 tokens/s: slow enough for a client to leave mid-stream. */
let slowUpstream: SimServer;
/** An OpenAI-compatible upstream that reports no usage: the gateway counts the tokens itself. */
let quietUpstream: SimServer;
/** An OpenAI-compatible upstream whose streams break after 3 chunks. */
let dyingUpstream: SimServer;

beforeAll(async () => {
  toolUpstream = createServer((request, response) => {
    let text = '';
    request.on('data', (data: Buffer) => {
      text += data.toString('utf8');
    });
    request.on('end', () => {
      if (request.method !== 'POST' || !request.url?.endsWith('/chat/completions')) {
        response.writeHead(404, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: { message: 'Not found', type: 'invalid_request_error' } }));
        return;
      }
      const body = JSON.parse(text) as Record<string, unknown>;
      toolUpstreamRequests.unshift(body);
      if (body.stream === true) {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const data of toolChunks()) response.write(`data: ${data}\n\n`);
        response.end('data: [DONE]\n\n');
      } else {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(toolCompletion));
      }
    });
  });
  await new Promise<void>((resolve) => toolUpstream.listen(0, '127.0.0.1', resolve));
  const port = (toolUpstream.address() as AddressInfo).port;
  slowUpstream = await startSimServer({ profile: { t_prefill_us: 1, t_fixed_ms: 20, t_seq_ms: 0 } });
  quietUpstream = await startSimServer({
    profile: { t_prefill_us: 1, t_fixed_ms: 1, t_seq_ms: 0 },
    faults: 'no-usage',
  });
  dyingUpstream = await startSimServer({
    profile: { t_prefill_us: 1, t_fixed_ms: 1, t_seq_ms: 0 },
    faults: 'die-mid-stream',
  });
  const [version] = pricedSimulatedConfig.pricing.versions;
  harness = await startTestGateway({
    ...pricedSimulatedConfig,
    upstreams: [
      ...pricedSimulatedConfig.upstreams,
      { name: 'tools', type: 'openai', base_url: `http://127.0.0.1:${port}/v1` },
      { name: 'slow', type: 'openai', base_url: slowUpstream.url },
      { name: 'quiet', type: 'openai', base_url: quietUpstream.url },
      { name: 'dying', type: 'openai', base_url: dyingUpstream.url },
    ],
    models: [
      ...pricedSimulatedConfig.models,
      { name: 'tool-model', context_window: 32_768, deployments: [{ upstream: 'tools', model: 'tool-model-2026' }] },
      {
        name: 'small-window-model',
        context_window: SMALL_WINDOW,
        deployments: [{ upstream: 'tools', model: 'tool-model-2026' }],
      },
      { name: 'slow-model', context_window: 32_768, deployments: [{ upstream: 'slow', model: 'simulated' }] },
      { name: 'quiet-model', context_window: 32_768, deployments: [{ upstream: 'quiet', model: 'simulated' }] },
      { name: 'dying-model', context_window: 32_768, deployments: [{ upstream: 'dying', model: 'simulated' }] },
    ],
    pricing: {
      ...pricedSimulatedConfig.pricing,
      versions: [{ ...version, models: { ...version!.models, 'slow-model': SLOW_MODEL_PRICE } }],
    },
  });
  const created = await harness.createTenantWithKey({ credit: '100' });
  tenantId = created.tenantId;
  client = harness.client(created.key);
});
afterAll(async () => {
  await harness?.close();
  await new Promise((resolve) => toolUpstream?.close(resolve));
  await slowUpstream?.close();
  await quietUpstream?.close();
  await dyingUpstream?.close();
});

const weatherTools: OpenAI.Responses.Tool[] = [
  {
    type: 'function',
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: true,
  },
  { type: 'function', name: 'get_time', parameters: { type: 'object', properties: {} }, strict: false },
];

/** The chat messages the upstream gets for both of `toolCompletion`'s calls and the client's results of them. */
const TOOL_ROUND_TRIP = [
  {
    role: 'assistant',
    content: null,
    tool_calls: [
      { id: 'call_weather', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
      { id: 'call_time', type: 'function', function: { name: 'get_time', arguments: '{"zone":"CET"}' } },
    ],
  },
  { role: 'tool', tool_call_id: 'call_weather', content: '3°C, snow' },
  { role: 'tool', tool_call_id: 'call_time', content: '14:05' },
];

/** The prompt tokens of the chat request a Responses request with these instructions and input becomes. */
function promptTokensOf(instructions: string, input: string): number {
  return countPromptTokens('chat', {
    messages: [
      { role: 'system', content: instructions },
      { role: 'user', content: input },
    ],
  });
}

describe('POST /v1/responses over the simulated fleet', () => {
  it('answers whole in the Response shape, with usage counted as the chat request it became', async () => {
    const { data, response } = await client.responses
      .create({ model: 'sim-pro-32k', instructions: 'Be terse.', input: 'Describe metering.', max_output_tokens: 24 })
      .withResponse();
    expect(openAIErrors('Response', data)).toEqual([]);
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    expect(data.id).toMatch(/^resp_/);
    expect(data.model).toBe('sim-pro-32k');
    // Stored unless the request says otherwise, as on OpenAI.
    expect(data).toMatchObject({ store: true, previous_response_id: null });
    expect(data.instructions).toBe('Be terse.');
    // The simulated model writes until the limit: the response is cut there, as OpenAI reports it.
    expect(data.status).toBe('incomplete');
    expect(data.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(data.output).toHaveLength(1);
    expect(countTextTokens(data.output_text)).toBe(24);
    expect(data.usage?.input_tokens).toBe(promptTokensOf('Be terse.', 'Describe metering.'));
    expect(data.usage?.output_tokens).toBe(24);
    expect(data.usage?.total_tokens).toBe((data.usage?.input_tokens ?? 0) + 24);
  });

  it('streams the semantic events in order, each valid, ending with the same text and usage', async () => {
    const stream = await client.responses.create({
      model: 'sim-pro-32k',
      instructions: 'Be terse.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'Describe metering.' }] }],
      max_output_tokens: 30,
      stream: true,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    for (const event of events) expect(openAIErrors('ResponseStreamEvent', event)).toEqual([]);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    const types = events.map((event) => event.type);
    expect(types.slice(0, 4)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
    ]);
    expect(types.slice(-4)).toEqual([
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.incomplete',
    ]);
    const text = events
      .filter((event) => event.type === 'response.output_text.delta')
      .map((event) => (event as OpenAI.Responses.ResponseTextDeltaEvent).delta)
      .join('');
    expect(countTextTokens(text)).toBe(30);
    const last = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(outputTextOf(last.response)).toBe(text);
    expect(last.response.usage?.input_tokens).toBe(promptTokensOf('Be terse.', 'Describe metering.'));
    expect(last.response.usage?.output_tokens).toBe(30);
  });

  it("works with the SDK's stream helper, and a finished answer completes", async () => {
    const runner = client.responses.stream({ model: 'sim-pro-32k', input: 'Hi.' });
    let deltas = '';
    runner.on('response.output_text.delta', (event) => {
      deltas += event.delta;
    });
    const final = await runner.finalResponse();
    expect(final.status).toBe('completed');
    expect(outputTextOf(final)).toBe(deltas);
    expect(final.usage?.output_tokens).toBe(countTextTokens(deltas));
  });

  it('bills the wallet and logs the request under the responses endpoint', async () => {
    const before = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    const data = await client.responses.create({ model: 'sim-pro-32k', input: 'Bill me.', max_output_tokens: 16 });
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const record = records.find((candidate) => candidate.completionTokens === 16 && candidate.status === 200);
    expect(record?.endpoint).toBe('responses');
    expect(record?.promptTokens).toBe(data.usage?.input_tokens);
    const after = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    expect(Number(after.body.balance)).toBeLessThan(Number(before.body.balance));
  });

  it('reports the usage it bills when the upstream reports none, whole and streamed', async () => {
    const request = { model: 'quiet-model', instructions: 'Be terse.', input: 'Describe metering.' } as const;
    const whole = await client.responses.create({ ...request, max_output_tokens: 20 }).withResponse();
    const stream = await client.responses.create({ ...request, max_output_tokens: 24, stream: true }).withResponse();
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream.data) events.push(event);
    const streamed = (events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent).response;
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    for (const [response, requestId, outputTokens] of [
      [whole.data, whole.response.headers.get('x-request-id'), 20],
      [streamed, stream.response.headers.get('x-request-id'), 24],
    ] as const) {
      expect(response.usage).toMatchObject({
        input_tokens: promptTokensOf('Be terse.', 'Describe metering.'),
        output_tokens: outputTokens,
      });
      expect(records.find((record) => record.requestId === requestId)).toMatchObject({
        usageEstimated: true,
        promptTokens: response.usage!.input_tokens,
        completionTokens: outputTokens,
      });
    }
  });

  it('cancels the upstream when the client leaves a stream, and bills exactly what was delivered', async () => {
    const before = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    const controller = new AbortController();
    const { data: stream, response } = await client.responses
      .create(
        { model: 'slow-model', input: 'Say something long.', max_output_tokens: 2000, stream: true },
        { signal: controller.signal },
      )
      .withResponse();
    let deltas = 0;
    try {
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta') deltas += 1;
        if (deltas === 5) {
          // Leave the loop too: events already in the SDK's buffer would still be yielded after the abort.
          controller.abort();
          break;
        }
      }
    } catch {
      // the abort
    }
    expect(deltas).toBe(5);
    let running = 1;
    for (const deadline = Date.now() + 10_000; running > 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      running = (await slowUpstream.upstream.load()).running;
    }
    expect(running).toBe(0);
    await harness.gateway.settled();
    const requestId = response.headers.get('x-request-id');
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const record = records.find((candidate) => candidate.requestId === requestId);
    // The stream's 200 had been sent: the record keeps that status, and says why it ended.
    expect(record).toMatchObject({ endpoint: 'responses', status: 200, errorCode: 'client_closed' });
    expect(record!.completionTokens).toBeGreaterThanOrEqual(5);
    expect(record!.completionTokens).toBeLessThan(200);
    // Billed at the model's price for the prompt and the tokens delivered, to the nano-yuan (1e-9 CNY).
    const nanoPerToken = (perMillion: string) => parseNano(perMillion) / 1_000_000n;
    const charged =
      BigInt(record!.promptTokens) * nanoPerToken(SLOW_MODEL_PRICE.input) +
      BigInt(record!.completionTokens) * nanoPerToken(SLOW_MODEL_PRICE.output);
    const after = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    expect(before - after).toBe(charged);
  });

  it('counts input tokens as the request is metered, with no upstream call and no charge', async () => {
    const body = { model: 'sim-pro-32k', instructions: 'Be terse.', input: 'Describe metering.' };
    await harness.gateway.settled();
    const billing = async () => (await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance;
    const records = async () => await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const logged = async () => (await records()).filter((record) => record.endpoint !== 'input_tokens').length;
    const [balanceBefore, loggedBefore] = [await billing(), await logged()];

    const counted = await client.responses.inputTokens.count(body);
    expect(openAIErrors('TokenCountsResource', counted)).toEqual([]);
    expect(counted).toEqual({
      object: 'response.input_tokens',
      input_tokens: promptTokensOf('Be terse.', 'Describe metering.'),
    });
    // Instructions alone may be counted, as on OpenAI (an answer needs an input, below).
    const instructionsOnly = await client.responses.inputTokens.count({
      model: 'sim-pro-32k',
      instructions: 'Be terse.',
    });
    expect(instructionsOnly.input_tokens).toBe(
      countPromptTokens('chat', { messages: [{ role: 'system', content: 'Be terse.' }] }),
    );
    const nothing = await client.responses.inputTokens
      .count({ model: 'sim-pro-32k' })
      .catch((caught: unknown) => caught);
    expect((nothing as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('input');
    // A request to run in the background counts the same (the SDK's type leaves `background` out; the body may hold it).
    const inBackground = await client.responses.inputTokens.count({
      ...body,
      background: true,
    } as OpenAI.Responses.InputTokenCountParams);
    expect(inBackground.input_tokens).toBe(counted.input_tokens);
    // Tools are part of the prompt a model reads, and of the count.
    const withTools = await client.responses.inputTokens.count({ ...body, model: 'tool-model', tools: weatherTools });
    expect(withTools.input_tokens).toBeGreaterThan(counted.input_tokens);
    // Refused as a Responses request is: a stateful field, a model that does not exist.
    const refused = await client.responses.inputTokens
      .count({ ...body, previous_response_id: 'resp_1' })
      .catch((caught: unknown) => caught);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('previous_response_id');
    const unknown = await client.responses.inputTokens
      .count({ ...body, model: 'no-such-model' })
      .catch((caught: unknown) => caught);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    await harness.gateway.settled();
    expect([await billing(), await logged()]).toEqual([balanceBefore, loggedBefore]);
    // Recorded as requests of their own kind, without tokens: nothing a usage report or an invoice adds up.
    const counts = (await records()).filter((record) => record.endpoint === 'input_tokens');
    expect(counts.map((record) => [record.status, record.promptTokens, record.completionTokens]).sort()).toEqual(
      [
        [200, 0, 0],
        [200, 0, 0],
        [200, 0, 0],
        [200, 0, 0],
        [400, 0, 0],
        [400, 0, 0],
        [404, 0, 0],
      ].sort(),
    );

    const noInput = await client.responses
      .create({ model: 'sim-pro-32k', instructions: 'Be terse.' } as OpenAI.Responses.ResponseCreateParamsNonStreaming)
      .catch((caught: unknown) => caught);
    expect(noInput).toBeInstanceOf(OpenAI.BadRequestError);
    expect((noInput as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('input');
    // The count is the input the answer is billed for.
    const answered = await client.responses.create({ ...body, max_output_tokens: 16 });
    expect(answered.usage?.input_tokens).toBe(counted.input_tokens);
  });

  it('counts input tokens only for models the key may use that serve chat', async () => {
    const limited = await harness.createTenantWithKey({ models: ['sim-pro-128k'] });
    const error = await harness
      .client(limited.key)
      .responses.inputTokens.count({ model: 'sim-pro-32k', input: 'x' })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((error as InstanceType<typeof OpenAI.PermissionDeniedError>).code).toBe('model_not_allowed');
    const embedding = await client.responses.inputTokens
      .count({ model: 'sim-embed', input: 'x' })
      .catch((caught: unknown) => caught);
    expect(embedding).toBeInstanceOf(OpenAI.BadRequestError);
    expect((embedding as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('model_not_supported');
  });

  it('refuses what chat completions cannot carry, naming the field, and charges nothing', async () => {
    const refusals: Array<[Record<string, unknown>, string, string]> = [
      [{ previous_response_id: 'resp_123' }, 'previous_response_id', 'previous_response_not_found'],
      [{ tools: [{ type: 'web_search' }] }, 'tools[0].type', 'unsupported_parameter'],
      [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].type', 'unsupported_parameter'],
      [{ frequency_penalty: 1 }, 'frequency_penalty', 'unknown_parameter'],
      [{ max_output_tokens: 'many' }, 'max_output_tokens', 'invalid_type'],
      [{ input: [{ role: 'robot', content: 'x' }] }, 'input[0].role', 'invalid_value'],
    ];
    await harness.gateway.settled();
    const before = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    for (const [fields, param, code] of refusals) {
      const error = await client.responses
        .create({ model: 'sim-pro-32k', input: 'x', ...fields } as OpenAI.Responses.ResponseCreateParamsNonStreaming)
        .catch((caught: unknown) => caught);
      expect(error, JSON.stringify(fields)).toBeInstanceOf(OpenAI.BadRequestError);
      expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
      expect((error as InstanceType<typeof OpenAI.BadRequestError>).code).toBe(code);
    }
    await harness.gateway.settled();
    const after = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    expect(after.body.balance).toBe(before.body.balance);
  });

  it('names max_output_tokens when the answer cannot fit the context window, and the model when unknown', async () => {
    const tooLong = await client.responses
      .create({ model: 'sim-pro-32k', input: 'x', max_output_tokens: 40_000 })
      .catch((caught: unknown) => caught);
    expect(tooLong).toBeInstanceOf(OpenAI.BadRequestError);
    expect((tooLong as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('context_length_exceeded');
    expect((tooLong as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('max_output_tokens');
    const streamed = await client.responses
      .create({ model: 'sim-pro-32k', input: 'x', max_output_tokens: 40_000, stream: true })
      .catch((caught: unknown) => caught);
    expect((streamed as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('max_output_tokens');
    const unknown = await client.responses.create({ model: 'no-such-model', input: 'x' }).catch((caught) => caught);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('model_not_found');
  });

  it('answers 404 for a response never made', async () => {
    const error = await client.responses.retrieve('resp_abc').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('response_not_found');
  });
});

/** The error `promise` rejects with, checked to be of `type`. */
async function rejection<T extends abstract new (...args: never[]) => unknown>(
  promise: Promise<unknown>,
  type: T,
): Promise<InstanceType<T>> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(type);
  return error as InstanceType<T>;
}

/** GET `path` of the gateway with the test's key: the JSON body as it came (the SDK wraps lists in pages). */
async function rawGet(path: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${harness.url}${path}`, { headers: { authorization: `Bearer ${client.apiKey}` } });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}

describe('stored responses', () => {
  it('reads a response back, lists its input items in pages, and deletes it', async () => {
    const created = await client.responses.create({
      model: 'sim-pro-32k',
      instructions: 'Be terse.',
      input: [
        { role: 'developer', content: 'Answer in English.' },
        { role: 'user', content: [{ type: 'input_text', text: 'Describe metering.' }] },
        { role: 'user', content: 'And billing?' },
      ],
      max_output_tokens: 20,
      metadata: { ticket: 'T-1' },
    });
    expect(created).toMatchObject({ store: true });
    const retrieved = await client.responses.retrieve(created.id);
    expect(openAIErrors('Response', retrieved)).toEqual([]);
    expect(retrieved).toEqual(created);

    expect(openAIErrors('ResponseItemList', await rawGet(`/v1/responses/${created.id}/input_items`))).toEqual([]);
    const all = await client.responses.inputItems.list(created.id, { order: 'asc' });
    expect(all.data.map((item) => item.type === 'message' && [item.role, item.content])).toEqual([
      ['developer', [{ type: 'input_text', text: 'Answer in English.' }]],
      ['user', [{ type: 'input_text', text: 'Describe metering.' }]],
      ['user', [{ type: 'input_text', text: 'And billing?' }]],
    ]);
    const ids = all.data.map((item) => item.id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id).toMatch(/^msg_/);
    // Newest first by default, a page at a time.
    const first = await client.responses.inputItems.list(created.id, { limit: 2 });
    expect(first.data.map((item) => item.id)).toEqual([ids[2], ids[1]]);
    expect(first.has_more).toBe(true);
    const second = await client.responses.inputItems.list(created.id, { limit: 2, after: ids[1] });
    expect(second.data.map((item) => item.id)).toEqual([ids[0]]);
    expect(second.has_more).toBe(false);
    const badAfter = await rejection(
      client.responses.inputItems.list(created.id, { after: 'msg_unknown' }),
      OpenAI.BadRequestError,
    );
    expect(badAfter.param).toBe('after');

    // The SDK's `delete` drops the body: read it as it comes.
    const deleted = await fetch(`${harness.url}/v1/responses/${created.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${client.apiKey}` },
    });
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toEqual({ id: created.id, object: 'response', deleted: true });
    const gone = await rejection(client.responses.retrieve(created.id), OpenAI.NotFoundError);
    expect(gone.code).toBe('response_not_found');
    await rejection(client.responses.delete(created.id), OpenAI.NotFoundError);
    await rejection(client.responses.inputItems.list(created.id), OpenAI.NotFoundError);
    // Logged apart from the requests that make responses, with no model and no tokens.
    await harness.gateway.settled();
    const reads = (await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 })).filter(
      (record) => record.endpoint === 'stored_responses',
    );
    expect(new Set(reads.map((record) => record.status))).toEqual(new Set([200, 400, 404]));
    expect(reads.every((record) => record.model === null && record.promptTokens === 0)).toBe(true);
  });

  it('refuses to cancel a response not run in the background, and 404s an unknown one', async () => {
    const created = await client.responses.create({ model: 'sim-pro-32k', input: 'Now.', max_output_tokens: 16 });
    const refused = await rejection(client.responses.cancel(created.id), OpenAI.BadRequestError);
    expect(refused.message).toContain('background');
    await rejection(client.responses.cancel('resp_unknown'), OpenAI.NotFoundError);
  });

  it("deletes every stored response of one tenant through the admin API, and no other tenant's", async () => {
    const created = await harness.createTenantWithKey({ credit: '10' });
    const purged = harness.client(created.key);
    const made = [
      await purged.responses.create({ model: 'sim-pro-32k', input: 'One.', max_output_tokens: 16 }),
      await purged.responses.create({ model: 'sim-pro-32k', input: 'Two.', max_output_tokens: 16 }),
    ];
    const conversation = await purged.conversations.create({ items: [{ role: 'user', content: 'Forget me.' }] });
    const kept = await client.responses.create({ model: 'sim-pro-32k', input: 'Kept.', max_output_tokens: 16 });
    const answer = await harness.admin('DELETE', `/tenants/${created.tenantId}/responses`);
    expect(answer).toEqual({
      status: 200,
      body: { object: 'tenant.responses.deleted', tenant_id: created.tenantId, deleted: 2, conversations_deleted: 1 },
    });
    for (const response of made) await rejection(purged.responses.retrieve(response.id), OpenAI.NotFoundError);
    await rejection(purged.conversations.retrieve(conversation.id), OpenAI.NotFoundError);
    expect((await client.responses.retrieve(kept.id)).id).toBe(kept.id);
    expect((await harness.admin('DELETE', '/tenants/ten_unknown/responses')).status).toBe(404);
    const unauthorized = await fetch(`${harness.url}/admin/v1/tenants/${tenantId}/responses`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${created.key}` },
    });
    expect(unauthorized.status).toBe(401);
    expect((await client.responses.retrieve(kept.id)).id).toBe(kept.id);
  });

  it("keeps a tenant's responses from every other tenant", async () => {
    const created = await client.responses.create({ model: 'sim-pro-32k', input: 'Mine.', max_output_tokens: 16 });
    const other = harness.client((await harness.createTenantWithKey({ credit: '10' })).key);
    for (const attempt of [
      () => other.responses.retrieve(created.id),
      () => other.responses.inputItems.list(created.id),
      () => other.responses.delete(created.id),
    ]) {
      expect((await rejection(attempt(), OpenAI.NotFoundError)).code).toBe('response_not_found');
    }
    const goOn = await rejection(
      other.responses.create({ model: 'sim-pro-32k', input: 'Go on.', previous_response_id: created.id }),
      OpenAI.BadRequestError,
    );
    expect(goOn.code).toBe('previous_response_not_found');
    expect((await client.responses.retrieve(created.id)).id).toBe(created.id);
  });

  it('goes on from a response: the upstream gets the conversation, without the earlier instructions', async () => {
    const first = await client.responses.create({
      model: 'tool-model',
      instructions: 'Use the tools.',
      input: 'Weather and time in Oslo?',
      tools: weatherTools,
    });
    const second = await client.responses.create({
      model: 'tool-model',
      previous_response_id: first.id,
      instructions: 'Answer in one line.',
      input: [
        { type: 'function_call_output', call_id: 'call_weather', output: '3°C, snow' },
        { type: 'function_call_output', call_id: 'call_time', output: '14:05' },
      ],
      tools: weatherTools,
    });
    expect(openAIErrors('Response', second)).toEqual([]);
    expect(second.previous_response_id).toBe(first.id);
    expect(toolUpstreamRequests[0]!.messages).toEqual([
      { role: 'system', content: 'Answer in one line.' },
      // Stored as OpenAI lists it: a text part.
      { role: 'user', content: [{ type: 'text', text: 'Weather and time in Oslo?' }] },
      ...TOOL_ROUND_TRIP,
    ]);
    // Its own input items only: the conversation before it is its predecessor's.
    const items = await rawGet(`/v1/responses/${second.id}/input_items?order=asc`);
    expect(openAIErrors('ResponseItemList', items)).toEqual([]);
    expect((items.data as Array<{ type: string }>).map((item) => item.type)).toEqual([
      'function_call_output',
      'function_call_output',
    ]);
  });

  it('stores a streamed response before it says it is done, and counts input tokens over the conversation', async () => {
    const stream = await client.responses.create({
      model: 'sim-pro-32k',
      input: 'Describe metering.',
      max_output_tokens: 16,
      stream: true,
    });
    let final: OpenAI.Responses.Response | undefined;
    let readAtOnce: OpenAI.Responses.Response | undefined;
    for await (const event of stream) {
      if (event.type !== 'response.incomplete' && event.type !== 'response.completed') continue;
      final = event.response;
      readAtOnce = await client.responses.retrieve(event.response.id);
    }
    expect(final).toMatchObject({ store: true });
    // The SDK adds `output_text` to what it retrieves; the rest is the event's Response.
    expect(readAtOnce).toMatchObject(final!);

    const counted = await client.responses.inputTokens.count({
      model: 'sim-pro-32k',
      previous_response_id: final!.id,
      input: 'And billing?',
    });
    const answer = readAtOnce!.output_text;
    expect(counted.input_tokens).toBe(
      countPromptTokens('chat', {
        messages: [
          { role: 'user', content: 'Describe metering.' },
          { role: 'assistant', content: answer },
          { role: 'user', content: 'And billing?' },
        ],
      }),
    );
    const next = await client.responses.create({
      model: 'sim-pro-32k',
      previous_response_id: final!.id,
      input: 'And billing?',
      max_output_tokens: 16,
    });
    expect(next.usage?.input_tokens).toBe(counted.input_tokens);
  });

  it('keeps nothing of store: false, and refuses a conversation with a response gone', async () => {
    const unstored = await client.responses.create({
      model: 'sim-pro-32k',
      input: 'Forget this.',
      max_output_tokens: 16,
      store: false,
    });
    expect(unstored).toMatchObject({ store: false });
    await rejection(client.responses.retrieve(unstored.id), OpenAI.NotFoundError);

    const first = await client.responses.create({ model: 'sim-pro-32k', input: 'One.', max_output_tokens: 16 });
    const second = await client.responses.create({
      model: 'sim-pro-32k',
      input: 'Two.',
      previous_response_id: first.id,
      max_output_tokens: 16,
    });
    await client.responses.delete(first.id);
    await harness.gateway.settled();
    const before = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    const broken = await rejection(
      client.responses.create({ model: 'sim-pro-32k', input: 'Three.', previous_response_id: second.id }),
      OpenAI.BadRequestError,
    );
    expect(broken.code).toBe('previous_response_not_found');
    expect(broken.param).toBe('previous_response_id');
    expect(broken.message).toContain(first.id);
    await harness.gateway.settled();
    const after = await harness.admin('GET', `/tenants/${tenantId}/billing`);
    expect(after.body.balance).toBe(before.body.balance);
  });
});

describe('compaction', () => {
  /** A conversation with every kind of item: the client's messages, the model's, a tool round. */
  const conversation: OpenAI.Responses.ResponseInput = [
    { role: 'developer', content: 'Be brief.' },
    { role: 'user', content: 'Plan three days in Oslo.' },
    { role: 'assistant', content: 'Day one: the fjord. Day two: the museums.' },
    { type: 'function_call', call_id: 'call_weather', name: 'get_weather', arguments: '{"city":"Oslo"}' },
    { type: 'function_call_output', call_id: 'call_weather', output: '3°C, snow' },
    { role: 'user', content: 'Add a day of skiing.' },
  ];
  const text = (value: string) => [{ type: 'input_text', text: value }];

  it('asks the model for a summary after the conversation; an answer with none in it is a 502, logged as billed', async () => {
    // The tool upstream answers with tool calls: no text to seal.
    const failure = await client.responses
      .compact({ model: 'tool-model', instructions: 'Summaries in English.', input: conversation })
      .catch((caught: unknown) => caught);
    expect(failure).toBeInstanceOf(OpenAI.InternalServerError);
    expect(failure).toMatchObject({ status: 502, code: 'compaction_failed' });
    const response = failure as InstanceType<typeof OpenAI.InternalServerError>;
    const sent = toolUpstreamRequests[0]!;
    expect(sent.messages).toEqual([
      { role: 'system', content: 'Summaries in English.' },
      // The developer's message, as the system's: many chat servers know no developer role.
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: 'Plan three days in Oslo.' }] },
      { role: 'assistant', content: 'Day one: the fjord. Day two: the museums.' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_weather', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_weather', content: '3°C, snow' },
      { role: 'user', content: [{ type: 'text', text: 'Add a day of skiing.' }] },
      { role: 'user', content: COMPACTION_PROMPT },
    ]);
    // A summary may be as long as the conversation it replaces (256 tokens at least), no longer.
    const conversationTokens = countPromptTokens('chat', { messages: sent.messages });
    expect(conversationTokens).toBeLessThan(256);
    expect(sent.max_completion_tokens).toBe(256);
    await client.responses.compact({ model: 'tool-model', input: 'word '.repeat(900) }).catch(() => undefined);
    const longer = toolUpstreamRequests[0]!;
    const longerTokens = countPromptTokens('chat', { messages: longer.messages });
    expect(longerTokens).toBeGreaterThan(900);
    expect(longer.max_completion_tokens).toBe(longerTokens);
    // The usage the upstream reported is logged (and billed): the answer was made.
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    expect(records.find((record) => record.requestId === response.headers?.get('x-request-id'))).toMatchObject({
      endpoint: 'responses_compact',
      model: 'tool-model',
      status: 502,
      errorCode: 'compaction_failed',
      promptTokens: 57,
      completionTokens: 31,
    });
  });

  it("keeps the client's messages verbatim and seals the summary, which the next request reads in their place", async () => {
    const before = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    const compacted = await client.responses.compact({ model: 'sim-pro-32k', input: conversation });
    // Billed as an answer of the model, at its price (0.8 and 2 CNY per million tokens), to the nano-yuan.
    await harness.gateway.settled();
    const after = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    expect(before - after).toBe(
      BigInt(compacted.usage.input_tokens) * 800n + BigInt(compacted.usage.output_tokens) * 2_000n,
    );
    expect(openAIErrors('CompactResource', compacted)).toEqual([]);
    expect(compacted.object).toBe('response.compaction');
    const kept = compacted.output.slice(0, -1) as Array<{ type: string; role: string; content: unknown }>;
    expect(kept.map(({ type, role, content }) => ({ type, role, content }))).toEqual([
      { type: 'message', role: 'developer', content: text('Be brief.') },
      { type: 'message', role: 'user', content: text('Plan three days in Oslo.') },
      { type: 'message', role: 'user', content: text('Add a day of skiing.') },
    ]);
    const compaction = compacted.output.at(-1) as { type: string; id: string; encrypted_content: string };
    expect(compaction.type).toBe('compaction');
    expect(compaction.id).toMatch(/^cmp_/);
    expect(compaction.encrypted_content.startsWith('tgc1.')).toBe(true);

    await client.responses.create({
      model: 'tool-model',
      input: [...(compacted.output as OpenAI.Responses.ResponseInput), { role: 'user', content: 'And a fourth day?' }],
    });
    const messages = toolUpstreamRequests[0]!.messages as Array<{ role: string; content: unknown }>;
    expect(messages.map((message) => message.role)).toEqual(['system', 'user', 'user', 'assistant', 'user']);
    // The summary the model wrote: its tokens are those the compaction billed for its output.
    const summary = messages[3]!.content as string;
    expect(summary.length).toBeGreaterThan(0);
    expect(countTextTokens(summary)).toBe(compacted.usage.output_tokens);
    expect(messages[4]).toEqual({ role: 'user', content: 'And a fourth day?' });
  });

  it('compacts a stored conversation with new input, and a conversation takes the compaction item', async () => {
    const first = await client.responses.create({ model: 'sim-pro-32k', input: 'Remember the number 7.' });
    const compacted = await client.responses.compact({
      model: 'sim-pro-32k',
      previous_response_id: first.id,
      input: 'And 8.',
    });
    expect(compacted.output.map((item) => (item as { content?: unknown }).content ?? item.type)).toEqual([
      text('Remember the number 7.'),
      text('And 8.'),
      'compaction',
    ]);
    const stored = await client.conversations.create({ items: compacted.output as OpenAI.Responses.ResponseInput });
    const next = await client.responses.create({ model: 'sim-pro-32k', conversation: stored.id, input: 'Sum them.' });
    expect(next.status).toBe('completed');
    const items = await client.conversations.items.list(stored.id, { order: 'asc' });
    expect(items.data.map((item) => item.type)).toEqual(['message', 'message', 'compaction', 'message', 'message']);

    // A compaction item in a stored response's input is read again when a later request goes on from it.
    const carried = await client.responses.create({
      model: 'sim-pro-32k',
      input: [...(compacted.output as OpenAI.Responses.ResponseInput), { role: 'user', content: 'Sum them.' }],
    });
    const later = await client.responses.create({
      model: 'sim-pro-32k',
      previous_response_id: carried.id,
      input: 'Again.',
    });
    expect(later.status).toBe('completed');
    // Listed as OpenAI lists a compaction item, in a response's input items and in a conversation's items.
    expect(openAIErrors('ResponseItemList', await rawGet(`/v1/responses/${carried.id}/input_items`))).toEqual([]);
    expect(openAIErrors('ConversationItemList', await rawGet(`/v1/conversations/${stored.id}/items`))).toEqual([]);
    // Counted with the summary the item holds: the one sealed in the store's secret, read here with it.
    const secret = await harness.gateway.store.getSetting('compaction_secret');
    const compaction = compacted.output.at(-1) as { encrypted_content: string };
    const summary = new CompactionSeal([secret!]).open(tenantId, compaction.encrypted_content, 'item');
    const kept = compacted.output.slice(0, -1) as OpenAI.Responses.ResponseInput;
    const { input_tokens: counted } = await client.responses.inputTokens.count({
      model: 'sim-pro-32k',
      input: compacted.output as OpenAI.Responses.ResponseInput,
    });
    const { input_tokens: plain } = await client.responses.inputTokens.count({
      model: 'sim-pro-32k',
      input: [...kept, { role: 'assistant', content: summary }],
    });
    expect(summary.length).toBeGreaterThan(0);
    expect(counted).toBe(plain);
  });

  it("refuses another tenant's compaction item or a changed one, naming it, and a compaction of nothing", async () => {
    const compacted = await client.responses.compact({ model: 'sim-pro-32k', input: 'Hello.' });
    const compaction = compacted.output.at(-1) as { type: 'compaction'; encrypted_content: string };
    const other = await harness.createTenantWithKey({ credit: '10' });
    const otherClient = harness.client(other.key, { maxRetries: 0 });
    const refusals = [
      otherClient.responses.create({ model: 'sim-pro-32k', input: [{ role: 'user', content: 'Hi' }, compaction] }),
      otherClient.conversations.create({ items: [compaction] }),
      client.responses.create({
        model: 'sim-pro-32k',
        input: [
          { role: 'user', content: 'Hi' },
          { ...compaction, encrypted_content: `${compaction.encrypted_content}x` },
        ],
      }),
    ];
    const params = ['input[1].encrypted_content', 'items[0].encrypted_content', 'input[1].encrypted_content'];
    for (const [index, refusal] of refusals.entries()) {
      const error = await refusal.catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect(error).toMatchObject({ code: 'invalid_encrypted_content', param: params[index] });
    }
    const empty = await client.responses.compact({ model: 'sim-pro-32k' }).catch((caught: unknown) => caught);
    expect(empty).toBeInstanceOf(OpenAI.BadRequestError);
    expect(empty).toMatchObject({ code: 'missing_required_parameter', param: 'input' });
    // Each refusal is logged as such, under its route, and charged nothing.
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId: other.tenantId, limit: 100 });
    expect(
      records
        .map(({ endpoint, status, errorCode, completionTokens }) => ({ endpoint, status, errorCode, completionTokens }))
        .sort((a, b) => a.endpoint.localeCompare(b.endpoint)),
    ).toEqual([
      { endpoint: 'conversations', status: 400, errorCode: 'invalid_encrypted_content', completionTokens: 0 },
      { endpoint: 'responses', status: 400, errorCode: 'invalid_encrypted_content', completionTokens: 0 },
    ]);
    expect(parseNano((await harness.admin('GET', `/tenants/${other.tenantId}/billing`)).body.balance)).toBe(
      parseNano('10'),
    );
  });

  it('refuses a conversation too long to leave room for its summary', async () => {
    const long = 'word '.repeat(SMALL_WINDOW);
    const { response } = await client.responses
      .compact({ model: 'small-window-model', input: long })
      .withResponse()
      .catch((caught: unknown) => ({ response: caught }));
    expect(response).toBeInstanceOf(OpenAI.BadRequestError);
    const error = response as InstanceType<typeof OpenAI.BadRequestError>;
    expect(error).toMatchObject({ code: 'context_length_exceeded', param: 'input' });
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    expect(records.find((record) => record.requestId === error.headers?.get('x-request-id'))).toMatchObject({
      endpoint: 'responses_compact',
      status: 400,
      errorCode: 'context_length_exceeded',
      completionTokens: 0,
    });
  });
});

describe('conversations', () => {
  it('creates, reads, updates and deletes a conversation and its items, in OpenAI shapes', async () => {
    const conversation = await client.conversations.create({
      items: [
        { type: 'message', role: 'developer', content: 'Answer in English.' },
        { type: 'message', role: 'user', content: 'Hello.' },
      ],
      metadata: { topic: 'demo' },
    });
    expect(openAIErrors('ConversationResource', conversation)).toEqual([]);
    expect(conversation).toMatchObject({ object: 'conversation', metadata: { topic: 'demo' } });
    expect(conversation.id).toMatch(/^conv_/);
    expect(await client.conversations.retrieve(conversation.id)).toEqual(conversation);
    const updated = await client.conversations.update(conversation.id, { metadata: { topic: 'billing' } });
    expect(updated.metadata).toEqual({ topic: 'billing' });

    const added = await client.conversations.items.create(conversation.id, {
      items: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Still there?' }] }],
    });
    expect(added.data).toHaveLength(1);
    const listed = await rawGet(`/v1/conversations/${conversation.id}/items?order=asc`);
    expect(openAIErrors('ConversationItemList', listed)).toEqual([]);
    const items = listed.data as Array<{ id: string; role: string }>;
    expect(items.map((item) => item.role)).toEqual(['developer', 'user', 'user']);
    expect(items[2]!.id).toBe(added.data[0]!.id);
    const newest = await client.conversations.items.list(conversation.id, { limit: 1 });
    expect(newest.data.map((item) => item.id)).toEqual([items[2]!.id]);
    expect(newest.has_more).toBe(true);
    expect((await client.conversations.items.retrieve(items[0]!.id, { conversation_id: conversation.id })).id).toBe(
      items[0]!.id,
    );
    const afterDelete = await client.conversations.items.delete(items[0]!.id, { conversation_id: conversation.id });
    expect(afterDelete.id).toBe(conversation.id);
    await rejection(
      client.conversations.items.retrieve(items[0]!.id, { conversation_id: conversation.id }),
      OpenAI.NotFoundError,
    );

    const deleted = await client.conversations.delete(conversation.id);
    expect(openAIErrors('DeletedConversationResource', deleted)).toEqual([]);
    expect(deleted).toEqual({ id: conversation.id, object: 'conversation.deleted', deleted: true });
    const gone = await rejection(client.conversations.retrieve(conversation.id), OpenAI.NotFoundError);
    expect(gone.code).toBe('conversation_not_found');
  });

  it('refuses items a model could not read, naming them, and changes nothing', async () => {
    const bad = await rejection(
      client.conversations.create({ items: [{ type: 'message', role: 'robot', content: 'x' } as never] }),
      OpenAI.BadRequestError,
    );
    expect(bad.param).toBe('items[0].role');
    const conversation = await client.conversations.create({});
    const badItem = await rejection(
      client.conversations.items.create(conversation.id, { items: [{ type: 'item_reference', id: 'msg_1' }] }),
      OpenAI.BadRequestError,
    );
    expect(badItem.param).toBe('items[0].type');
    expect((await client.conversations.items.list(conversation.id)).data).toEqual([]);
  });

  it('gives a response the conversation before its input, then adds its input and output to it', async () => {
    const conversation = await client.conversations.create({});
    const first = await client.responses.create({
      model: 'tool-model',
      conversation: conversation.id,
      input: 'Weather and time in Oslo?',
      tools: weatherTools,
    });
    expect(openAIErrors('Response', first)).toEqual([]);
    expect(first).toMatchObject({ conversation: { id: conversation.id } });
    const second = await client.responses.create({
      model: 'tool-model',
      conversation: { id: conversation.id },
      input: [
        { type: 'function_call_output', call_id: 'call_weather', output: '3°C, snow' },
        { type: 'function_call_output', call_id: 'call_time', output: '14:05' },
      ],
      tools: weatherTools,
    });
    expect(second).toMatchObject({ conversation: { id: conversation.id } });
    expect(toolUpstreamRequests[0]!.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Weather and time in Oslo?' }] },
      ...TOOL_ROUND_TRIP,
    ]);
    const items = await client.conversations.items.list(conversation.id, { order: 'asc' });
    expect(items.data.map((item) => item.type)).toEqual([
      'message',
      'function_call',
      'function_call',
      'function_call_output',
      'function_call_output',
      'function_call',
      'function_call',
    ]);
    // The ids are those of the responses' own items.
    expect(items.data[1]!.id).toBe(first.output[0]!.id);
  });

  it('adds a streamed response to its conversation before it says it is done', async () => {
    const conversation = await client.conversations.create({});
    const stream = await client.responses.create({
      model: 'sim-pro-32k',
      conversation: conversation.id,
      input: 'Describe metering.',
      max_output_tokens: 16,
      stream: true,
    });
    let items: OpenAI.Conversations.ConversationItem[] = [];
    let final: OpenAI.Responses.Response | undefined;
    for await (const event of stream) {
      if (event.type !== 'response.incomplete' && event.type !== 'response.completed') continue;
      final = event.response;
      items = (await client.conversations.items.list(conversation.id, { order: 'asc' })).data;
    }
    expect(items.map((item) => item.type)).toEqual(['message', 'message']);
    expect(items[1]!.id).toBe(final!.output[0]!.id);
  });

  it('truncation "auto" leaves the oldest items out of the upstream call, as few as fit; "disabled" refuses', async () => {
    const MAX_OUTPUT = 100;
    const turns = Array.from({ length: 10 }, (_, index) => ({
      type: 'message' as const,
      role: index % 2 === 0 ? ('user' as const) : ('assistant' as const),
      content: `Turn ${index}: ${'many words here '.repeat(8)}`,
    }));
    const input = 'And now?';
    const ask = (conversation: string, truncation: 'auto' | 'disabled') =>
      client.responses.create({
        model: 'small-window-model',
        conversation,
        input,
        truncation,
        max_output_tokens: MAX_OUTPUT,
      });
    const count = (conversation: string, truncation: 'auto' | 'disabled') =>
      client.responses.inputTokens
        // The SDK's type leaves out `max_output_tokens`; the gateway takes it, to leave room for the answer.
        .count({
          model: 'small-window-model',
          conversation,
          input,
          truncation,
          max_output_tokens: MAX_OUTPUT,
        } as OpenAI.Responses.InputTokenCountParams)
        .then((counted) => counted.input_tokens);
    const whole = await client.conversations.create({ items: turns });
    expect(await count(whole.id, 'disabled')).toBeGreaterThan(SMALL_WINDOW - MAX_OUTPUT);
    const truncatedCount = await count(whole.id, 'auto');
    expect(truncatedCount).toBeLessThanOrEqual(SMALL_WINDOW - MAX_OUTPUT);
    const refused = await rejection(ask(whole.id, 'disabled'), OpenAI.BadRequestError);
    expect(refused.code).toBe('context_length_exceeded');

    const response = await ask(whole.id, 'auto');
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response.truncation).toBe('auto');
    const sent = toolUpstreamRequests[0]!.messages as Array<{ role: string; content: unknown }>;
    const kept = sent.length - 1;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(turns.length);
    expect(sent.at(-1)).toEqual({ role: 'user', content: input });
    // The newest turns, in order.
    expect(sent.slice(0, -1).map((message) => JSON.stringify(message.content))).toEqual(
      turns.slice(-kept).map((turn) => expect.stringContaining(turn.content.slice(0, 8))),
    );
    // As few left out as fit: the same conversation with one more of its turns does not fit.
    const oneMore = await client.conversations.create({ items: turns.slice(-(kept + 1)) });
    expect((await rejection(ask(oneMore.id, 'disabled'), OpenAI.BadRequestError)).code).toBe('context_length_exceeded');
    // Counted as sent: the truncated request's input tokens are those of the turns it kept.
    const exact = await client.conversations.create({ items: turns.slice(-kept) });
    expect(truncatedCount).toBe(await count(exact.id, 'disabled'));
    // The conversation keeps every item: truncation shapes the upstream call only.
    const items = await client.conversations.items.list(whole.id, { limit: 100 });
    expect(items.data).toHaveLength(turns.length + 1 + response.output.length);
  });

  it('stores a response whose stream broke, and leaves it out of its conversation', async () => {
    const conversation = await client.conversations.create({ items: [{ role: 'user', content: 'Before.' }] });
    const stream = await client.responses.create({
      model: 'dying-model',
      conversation: conversation.id,
      input: 'This one breaks.',
      max_output_tokens: 50,
      stream: true,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    const failed = events.at(-1) as OpenAI.Responses.ResponseFailedEvent;
    expect(failed.type).toBe('response.failed');
    expect((await client.responses.retrieve(failed.response.id)).status).toBe('failed');
    const items = await client.conversations.items.list(conversation.id);
    expect(items.data).toHaveLength(1);
  });

  it("refuses another tenant's conversation, an unknown one, and one with previous_response_id", async () => {
    const conversation = await client.conversations.create({
      items: [{ type: 'message', role: 'user', content: 'Mine.' }],
    });
    const otherTenant = await harness.createTenantWithKey({ credit: '10' });
    const other = harness.client(otherTenant.key);
    for (const attempt of [
      () => other.conversations.retrieve(conversation.id),
      () => other.conversations.items.list(conversation.id),
      () => other.conversations.delete(conversation.id),
      () => other.conversations.items.create(conversation.id, { items: [{ role: 'user', content: 'x' }] }),
      () => other.responses.create({ model: 'sim-pro-32k', input: 'Go on.', conversation: conversation.id }),
    ]) {
      expect((await rejection(attempt(), OpenAI.NotFoundError)).code).toBe('conversation_not_found');
    }
    // Refused before anything ran: nothing charged (the tenant's credit of 10 is whole).
    await harness.gateway.settled();
    const balance = (await harness.admin('GET', `/tenants/${otherTenant.tenantId}/billing`)).body.balance;
    expect(parseNano(balance)).toBe(parseNano('10'));
    const previous = await client.responses.create({ model: 'sim-pro-32k', input: 'x', max_output_tokens: 16 });
    const both = await rejection(
      client.responses.create({
        model: 'sim-pro-32k',
        input: 'x',
        conversation: conversation.id,
        previous_response_id: previous.id,
      }),
      OpenAI.BadRequestError,
    );
    expect(both.param).toBe('conversation');
    expect((await client.conversations.items.list(conversation.id)).data).toHaveLength(1);
  });
});

/** Polls a response until its status is final; resolves with it and every status seen on the way. */
async function pollUntilDone(
  id: string,
  sdk: OpenAI = client,
): Promise<{ response: OpenAI.Responses.Response; seen: Set<string> }> {
  const seen = new Set<string>();
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; ) {
    const response = await sdk.responses.retrieve(id);
    seen.add(response.status ?? 'none');
    if (response.status !== 'queued' && response.status !== 'in_progress') return { response, seen };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`response ${id} still running after 15 s`);
}

describe('background responses', () => {
  it('answers queued at once and runs on without its client, to one logged and billed request', async () => {
    const before = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    const { data: queued, response: http } = await client.responses
      .create({ model: 'slow-model', input: 'Take your time.', max_output_tokens: 20, background: true })
      .withResponse();
    expect(openAIErrors('Response', queued)).toEqual([]);
    expect(queued).toMatchObject({ status: 'queued', background: true, output: [], store: true });
    const { response: done, seen } = await pollUntilDone(queued.id);
    expect(openAIErrors('Response', done)).toEqual([]);
    // 20 tokens at 50 a second: polled every 20 ms, it is seen running.
    expect(seen.has('in_progress')).toBe(true);
    expect(done).toMatchObject({ id: queued.id, status: 'incomplete', background: true });
    expect(done.usage?.output_tokens).toBe(20);
    expect(outputTextOf(done).length).toBeGreaterThan(0);
    const items = await client.responses.inputItems.list(queued.id);
    expect(items.data).toHaveLength(1);
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const logged = records.filter((record) => record.requestId === http.headers.get('x-request-id'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ endpoint: 'responses', status: 200, completionTokens: 20 });
    expect(logged[0]!.promptTokens).toBe(done.usage?.input_tokens);
    const after = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    const nanoPerToken = (perMillion: string) => parseNano(perMillion) / 1_000_000n;
    expect(before - after).toBe(
      BigInt(logged[0]!.promptTokens) * nanoPerToken(SLOW_MODEL_PRICE.input) +
        20n * nanoPerToken(SLOW_MODEL_PRICE.output),
    );
    // Done: it cannot be cancelled any more.
    expect((await rejection(client.responses.cancel(queued.id), OpenAI.BadRequestError)).code).toBe('invalid_request');
  });

  it('cancels a running response: its upstream call stops, nothing is billed, a second cancel says the same', async () => {
    const before = parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance);
    const { data: queued, response: http } = await client.responses
      .create({ model: 'slow-model', input: 'Go on for long.', max_output_tokens: 2000, background: true })
      .withResponse();
    for (let tries = 0; (await slowUpstream.upstream.load()).running === 0 && tries < 500; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // Going on from a response still running is refused: it has no output yet.
    const early = await rejection(
      client.responses.create({ model: 'slow-model', input: 'And?', previous_response_id: queued.id }),
      OpenAI.BadRequestError,
    );
    expect(early.code).toBe('previous_response_not_done');
    const cancelled = await client.responses.cancel(queued.id);
    expect(openAIErrors('Response', cancelled)).toEqual([]);
    expect(cancelled).toMatchObject({ id: queued.id, status: 'cancelled' });
    expect((await client.responses.retrieve(queued.id)).status).toBe('cancelled');
    expect((await client.responses.cancel(queued.id)).status).toBe('cancelled');
    let running = 1;
    for (const deadline = Date.now() + 10_000; running > 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      running = (await slowUpstream.upstream.load()).running;
    }
    expect(running).toBe(0);
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    expect(records.find((record) => record.requestId === http.headers.get('x-request-id'))).toMatchObject({
      endpoint: 'responses',
      status: 499,
      errorCode: 'cancelled',
    });
    expect(parseNano((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.balance)).toBe(before);
  });

  it('waits out a rate limit rather than failing: two background responses under a concurrency of one', async () => {
    const limited = await harness.createTenantWithKey({ credit: '10' });
    expect((await harness.admin('PUT', `/tenants/${limited.tenantId}/plan`, { concurrency: 1 })).status).toBe(200);
    const sdk = harness.client(limited.key);
    const ask = () =>
      sdk.responses
        .create({ model: 'slow-model', input: 'One at a time.', max_output_tokens: 16, background: true })
        .withResponse();
    const [first, second] = [await ask(), await ask()];
    for (const queued of [first, second]) {
      expect((await pollUntilDone(queued.data.id, sdk)).response.status).toBe('incomplete');
    }
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId: limited.tenantId, limit: 100 });
    const secondId = second.response.headers.get('x-request-id')!;
    // The second was refused at least once while the first ran, each refusal logged under an id of its own.
    const refused = records.filter((record) => record.requestId.startsWith(`${secondId}_attempt`));
    expect(refused.length).toBeGreaterThan(0);
    for (const record of refused) expect(record).toMatchObject({ status: 429, completionTokens: 0 });
    expect(records.find((record) => record.requestId === secondId)).toMatchObject({
      status: 200,
      completionTokens: 16,
    });
  });

  it('streams a background response as it runs, and sends its stream again from any sequence number', async () => {
    const stream = await client.responses.create({
      model: 'slow-model',
      input: 'Stream it.',
      max_output_tokens: 20,
      background: true,
      stream: true,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    for (const event of events) expect(openAIErrors('ResponseStreamEvent', event)).toEqual([]);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    const created = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    expect(created.type).toBe('response.created');
    expect(created.response).toMatchObject({ status: 'queued', background: true });
    expect(events[1]!.type).toBe('response.in_progress');
    const last = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(last.type).toBe('response.incomplete');
    expect(last.response.usage?.output_tokens).toBe(20);
    const deltas = events
      .filter((event) => event.type === 'response.output_text.delta')
      .map((event) => (event as OpenAI.Responses.ResponseTextDeltaEvent).delta)
      .join('');
    expect(deltas).toBe(outputTextOf(last.response));
    const id = created.response.id;
    // The SDK adds `output_text` to what it retrieves; every field of the last event's response is there as sent.
    expect(await client.responses.retrieve(id)).toMatchObject(last.response);

    const again: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.retrieve(id, { stream: true, starting_after: 4 })) {
      again.push(event);
    }
    expect(again).toEqual(events.slice(5));
    const whole: OpenAI.Responses.ResponseStreamEvent[] = [];
    const { data: replay, response: http } = await client.responses.retrieve(id, { stream: true }).withResponse();
    for await (const event of replay) whole.push(event);
    expect(whole).toEqual(events);
    // Reading a stream again is logged as a read of a stored response.
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    expect(records.find((record) => record.requestId === http.headers.get('x-request-id'))).toMatchObject({
      endpoint: 'stored_responses',
      status: 200,
    });
  });

  it('runs on when its client leaves the stream, which then reads the rest, billed once for all of it', async () => {
    const controller = new AbortController();
    const { data: stream, response: http } = await client.responses
      .create(
        { model: 'slow-model', input: 'I will be back.', max_output_tokens: 40, background: true, stream: true },
        { signal: controller.signal },
      )
      .withResponse();
    let id = '';
    let lastSeen = -1;
    let deltas = 0;
    try {
      for await (const event of stream) {
        if (event.type === 'response.created') id = event.response.id;
        lastSeen = event.sequence_number;
        if (event.type === 'response.output_text.delta' && ++deltas === 3) {
          // Events already in the SDK's buffer would still be yielded after the abort: leave the loop as well.
          controller.abort();
          break;
        }
      }
    } catch {
      // the abort
    }
    expect(deltas).toBe(3);
    const rest: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.retrieve(id, { stream: true, starting_after: lastSeen })) {
      rest.push(event);
    }
    expect(rest[0]!.sequence_number).toBe(lastSeen + 1);
    const last = rest.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(last.type).toBe('response.incomplete');
    expect(last.response.usage?.output_tokens).toBe(40);
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const logged = records.filter((record) => record.requestId === http.headers.get('x-request-id'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ status: 200, errorCode: null, completionTokens: 40 });

    // A client that leaves a stream it reads again, while the response still runs, is logged as having left.
    const running = await client.responses.create({
      model: 'slow-model',
      input: 'Take long.',
      max_output_tokens: 500,
      background: true,
      stream: true,
    });
    let runningId = '';
    for await (const event of running) {
      if (event.type === 'response.created') runningId = event.response.id;
      break;
    }
    const leaving = new AbortController();
    const { data: again, response: replay } = await client.responses
      .retrieve(runningId, { stream: true }, { signal: leaving.signal })
      .withResponse();
    try {
      for await (const _event of again) leaving.abort();
    } catch {
      // the abort
    }
    await vi.waitFor(async () => {
      await harness.gateway.settled();
      const replays = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
      expect(replays.find((record) => record.requestId === replay.headers.get('x-request-id'))).toMatchObject({
        endpoint: 'stored_responses',
        status: 200,
        errorCode: 'client_closed',
      });
    });
    await client.responses.cancel(runningId);
  });

  it('ends the stream of a background response cancelled while it streams, without a last event', async () => {
    const stream = await client.responses.create({
      model: 'slow-model',
      input: 'Cancel me midway.',
      max_output_tokens: 2000,
      background: true,
      stream: true,
    });
    const types: string[] = [];
    let id = '';
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.created') id = event.response.id;
      if (types.filter((type) => type === 'response.output_text.delta').length === 3) {
        expect((await client.responses.cancel(id)).status).toBe('cancelled');
      }
    }
    expect(types.at(-1)).toBe('response.output_text.delta');
    expect((await client.responses.retrieve(id)).status).toBe('cancelled');
  });

  it('refuses to stream again a response not streamed in the background, and a bad starting_after', async () => {
    const whole = await client.responses.create({
      model: 'sim-pro-32k',
      input: 'Not streamed.',
      max_output_tokens: 16,
      background: true,
    });
    await pollUntilDone(whole.id);
    const notStreamed = await rejection(client.responses.retrieve(whole.id, { stream: true }), OpenAI.BadRequestError);
    expect(notStreamed.param).toBe('stream');
    await rejection(client.responses.retrieve('resp_unknown', { stream: true }), OpenAI.NotFoundError);
    const bad = await fetch(`${harness.url}/v1/responses/${whole.id}?stream=true&starting_after=-3`, {
      headers: { authorization: `Bearer ${client.apiKey}` },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe('starting_after');
  });

  it('adds a background response to its conversation once it is done', async () => {
    const conversation = await client.conversations.create({ items: [{ role: 'user', content: 'Earlier.' }] });
    const queued = await client.responses.create({
      model: 'sim-pro-32k',
      conversation: conversation.id,
      input: 'Now, in the background.',
      max_output_tokens: 16,
      background: true,
    });
    const { response: done } = await pollUntilDone(queued.id);
    expect(done.conversation).toEqual({ id: conversation.id });
    const items = await client.conversations.items.list(conversation.id, { order: 'asc' });
    // The item it had, then the response's input and its output, with the response's own item ids.
    const textOf = (item: (typeof items.data)[number]) =>
      item.type === 'message' ? JSON.stringify(item.content) : item.type;
    expect(items.data.slice(0, 2).map(textOf)).toEqual([
      expect.stringContaining('Earlier.'),
      expect.stringContaining('Now, in the background.'),
    ]);
    expect(items.data.slice(2).map((item) => item.id)).toEqual(done.output.map((item) => item.id));
    expect(items.data).toHaveLength(2 + done.output.length);
  });

  it('refuses a background response that would not be stored, and one another tenant cancels', async () => {
    const unstored = await rejection(
      client.responses.create({ model: 'sim-pro-32k', input: 'x', background: true, store: false }),
      OpenAI.BadRequestError,
    );
    expect(unstored.param).toBe('background');
    const queued = await client.responses.create({
      model: 'sim-pro-32k',
      input: 'Mine.',
      max_output_tokens: 16,
      background: true,
    });
    const other = harness.client((await harness.createTenantWithKey({ credit: '1' })).key);
    expect((await rejection(other.responses.cancel(queued.id), OpenAI.NotFoundError)).code).toBe('response_not_found');
    await pollUntilDone(queued.id);
  });
});

describe('a gateway that stores no responses (responses.store: false)', () => {
  it('answers store: false, keeps nothing, and refuses previous_response_id and background', async () => {
    const gateway = await startTestGateway({ ...pricedSimulatedConfig, responses: { store: false } });
    try {
      const sdk = gateway.client((await gateway.createTenantWithKey({ credit: '10' })).key);
      const asked = await sdk.responses.create({
        model: 'sim-pro-32k',
        input: 'Keep this.',
        max_output_tokens: 16,
        store: true,
      });
      expect(asked).toMatchObject({ store: false });
      await rejection(sdk.responses.retrieve(asked.id), OpenAI.NotFoundError);
      const goOn = await rejection(
        sdk.responses.create({ model: 'sim-pro-32k', input: 'Go on.', previous_response_id: asked.id }),
        OpenAI.BadRequestError,
      );
      expect([goOn.code, goOn.param]).toEqual(['unsupported_parameter', 'previous_response_id']);
      // A background response is polled: without storing there is nothing to poll.
      const background = await rejection(
        sdk.responses.create({ model: 'sim-pro-32k', input: 'Later.', background: true }),
        OpenAI.BadRequestError,
      );
      expect([background.code, background.param]).toEqual(['invalid_value', 'background']);
    } finally {
      await gateway.close();
    }
  });
});

describe('POST /v1/responses with function tools, over a live OpenAI-compatible upstream', () => {
  const input: OpenAI.Responses.ResponseInput = [
    { role: 'developer', content: 'Use the tools.' },
    { role: 'user', content: 'Weather and time in Oslo?' },
  ];

  it('sends the upstream chat tools and messages, and answers with function_call items', async () => {
    const data = await client.responses.create({
      model: 'tool-model',
      input,
      tools: weatherTools,
      tool_choice: 'auto',
      parallel_tool_calls: true,
    });
    expect(openAIErrors('Response', data)).toEqual([]);
    const sent = toolUpstreamRequests[0]!;
    expect(sent.model).toBe('tool-model-2026');
    expect(sent.messages).toEqual([
      { role: 'system', content: 'Use the tools.' },
      { role: 'user', content: 'Weather and time in Oslo?' },
    ]);
    expect(sent.tools).toEqual([
      { type: 'function', function: { name: 'get_weather', ...weatherTools[0], type: undefined } },
      { type: 'function', function: { name: 'get_time', ...weatherTools[1], type: undefined } },
    ]);
    expect(data.status).toBe('completed');
    expect(data.model).toBe('tool-model');
    const calls = data.output.filter((item) => item.type === 'function_call');
    expect(calls.map((call) => [call.call_id, call.name, call.arguments])).toEqual([
      ['call_weather', 'get_weather', '{"city":"Oslo"}'],
      ['call_time', 'get_time', '{"zone":"CET"}'],
    ]);
    expect(data.output.some((item) => item.type === 'message')).toBe(false);
    expect(data.usage?.input_tokens).toBe(57);
    expect(data.usage?.input_tokens_details.cached_tokens).toBe(32);
    expect(data.usage?.output_tokens).toBe(31);
  });

  it('streams the calls as function_call items with their arguments', async () => {
    const stream = await client.responses.create({ model: 'tool-model', input, tools: weatherTools, stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    for (const event of events) expect(openAIErrors('ResponseStreamEvent', event)).toEqual([]);
    const done = events.filter((event) => event.type === 'response.function_call_arguments.done');
    expect(done.map((event) => [event.name, event.arguments])).toEqual([
      ['get_weather', '{"city":"Oslo"}'],
      ['get_time', '{"zone":"CET"}'],
    ]);
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.type).toBe('response.completed');
    expect(completed.response.output.map((item) => item.type)).toEqual(['function_call', 'function_call']);
    expect(completed.response.usage?.output_tokens).toBe(31);
    expect(toolUpstreamRequests[0]!.stream_options).toEqual({ include_usage: true });
  });

  it("sends the client's tool results back as chat tool messages", async () => {
    await client.responses.create({
      model: 'tool-model',
      tools: weatherTools,
      input: [
        ...input,
        { type: 'function_call', call_id: 'call_weather', name: 'get_weather', arguments: '{"city":"Oslo"}' },
        { type: 'function_call', call_id: 'call_time', name: 'get_time', arguments: '{"zone":"CET"}' },
        { type: 'function_call_output', call_id: 'call_weather', output: '3°C, snow' },
        { type: 'function_call_output', call_id: 'call_time', output: '14:05' },
      ],
    });
    const messages = toolUpstreamRequests[0]!.messages as Array<Record<string, unknown>>;
    expect(messages.slice(2)).toEqual(TOOL_ROUND_TRIP);
  });
});

describe('a batch of Responses requests', () => {
  /** Runs `lines` as one batch of Responses requests; resolves with the batch once it is over. */
  async function runBatch(lines: Record<string, unknown>[]) {
    const file = await uploadInput(client, jsonl(lines));
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/responses',
      completion_window: '24h',
    });
    return waitForBatch(client, created.id, isFinal, 15_000);
  }

  it('runs each line as its chat request and writes Response objects; a line chat cannot carry fails alone', async () => {
    const line = (customId: string, body: Record<string, unknown>) => ({
      custom_id: customId,
      method: 'POST',
      url: '/v1/responses',
      body: { model: 'sim-pro-32k', ...body },
    });
    const lines = [
      line('a', { instructions: 'Be terse.', input: 'Describe metering.', max_output_tokens: 20 }),
      line('b', { input: [{ role: 'user', content: 'Describe billing.' }], max_output_tokens: 16 }),
      line('stateful', { input: 'x', previous_response_id: 'resp_1' }),
    ];
    const batch = await runBatch(lines);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 3, completed: 2, failed: 1 });
    const output = await readJsonl(client, batch.output_file_id!);
    const byId = new Map(output.map((entry) => [entry.custom_id, entry]));
    for (const [customId, maxOutput] of [
      ['a', 20],
      ['b', 16],
    ] as const) {
      const body = byId.get(customId).response.body;
      expect(openAIErrors('Response', body)).toEqual([]);
      expect(body).toMatchObject({ object: 'response', status: 'incomplete', model: 'sim-pro-32k' });
      expect(body.usage.output_tokens).toBe(maxOutput);
      expect(countTextTokens(body.output[0].content[0].text)).toBe(maxOutput);
    }
    expect(byId.get('a').response.body.usage.input_tokens).toBe(promptTokensOf('Be terse.', 'Describe metering.'));
    const errors = await readJsonl(client, batch.error_file_id!);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ custom_id: 'stateful', error: { code: 'invalid_body' } });
    expect(errors[0].error.message).toContain('body.previous_response_id');
    await harness.gateway.settled();
    const records = await harness.gateway.store.listRequestLogs({ tenantId, limit: 1000 });
    const lineRequestIds = ['a', 'b'].map((customId) => byId.get(customId).response.request_id);
    const logged = records.filter((record) => lineRequestIds.includes(record.requestId));
    expect(logged.map((record) => record.endpoint)).toEqual(['responses', 'responses']);
  });

  it("reads the tenant's compaction items in its lines, and refuses another tenant's, naming it", async () => {
    const own = await client.responses.compact({ model: 'sim-pro-32k', input: 'Remember the number 7.' });
    const other = await harness.createTenantWithKey({ credit: '10' });
    const theirs = await harness.client(other.key).responses.compact({ model: 'sim-pro-32k', input: 'Keep this.' });
    const lines = [own.output, theirs.output].map((output, index) => ({
      custom_id: `compacted-${index}`,
      method: 'POST',
      url: '/v1/responses',
      body: { model: 'sim-pro-32k', input: [...output, { role: 'user', content: 'Go on.' }], max_output_tokens: 16 },
    }));
    const batch = await runBatch(lines);
    expect(batch.request_counts).toEqual({ total: 2, completed: 1, failed: 1 });
    const [answered] = await readJsonl(client, batch.output_file_id!);
    expect(answered).toMatchObject({ custom_id: 'compacted-0', response: { status_code: 200 } });
    // The summary was read: the prompt holds more than the two messages around it.
    const bare = await client.responses.inputTokens.count({
      model: 'sim-pro-32k',
      input: [...(own.output.slice(0, -1) as OpenAI.Responses.ResponseInput), { role: 'user', content: 'Go on.' }],
    });
    expect(answered.response.body.usage.input_tokens).toBeGreaterThan(bare.input_tokens);
    const [refused] = await readJsonl(client, batch.error_file_id!);
    expect(refused).toMatchObject({ custom_id: 'compacted-1', error: { code: 'invalid_body' } });
    expect(refused.error.message).toContain('body.input[1].encrypted_content');
  });
});

function outputTextOf(response: OpenAI.Responses.Response): string {
  return response.output
    .flatMap((item) => (item.type === 'message' ? item.content : []))
    .map((part) => (part.type === 'output_text' ? part.text : ''))
    .join('');
}
