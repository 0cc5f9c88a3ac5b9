import { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../clock/clock.js';
import type { SimulatedUpstreamConfig } from '../../config/config-schema.js';
import { type GatewayError, InvalidRequestError, UpstreamError } from '../../errors/gateway-error.js';
import { countPromptTokens, countTextTokens } from '../../metering/token-counter.js';
import type { StreamEvent, UpstreamEndpoint, UpstreamRequest } from '../upstream.js';
import { resolveSimulatedProfile } from './replica-engine.js';
import { createSimulatedUpstream } from './simulated-upstream.js';

const STEP_1 = 3.4 + 0.055; // decode step with one running sequence, ms
const PREFILL_PER_TOKEN = 0.017; // ms

function setup(replicas = 1, profile: Parameters<typeof resolveSimulatedProfile>[0] = {}) {
  const clock = new VirtualClock(1_700_000_000_000);
  const config: SimulatedUpstreamConfig = {
    name: 'sim',
    type: 'simulated',
    replicas,
    profile: resolveSimulatedProfile(profile),
  };
  return { clock, upstream: createSimulatedUpstream(config, { clock }) };
}

function request(
  endpoint: UpstreamEndpoint,
  body: Record<string, unknown>,
  signal = new AbortController().signal,
): UpstreamRequest {
  return { endpoint, body, requestId: 'req-1', signal };
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Resolves `pending` on the virtual clock, checking it is still unsettled just before `start + ms` and done just after. */
async function settlesAfter<T>(clock: VirtualClock, pending: Promise<T>, start: number, ms: number): Promise<T> {
  let settled = false;
  const watched = pending.finally(() => {
    settled = true;
  });
  clock.advanceTo(start + ms - 0.01);
  await flush();
  expect(settled).toBe(false);
  clock.advanceTo(start + ms + 0.01);
  return watched;
}

async function collect(events: AsyncIterable<StreamEvent>, into: StreamEvent[]): Promise<void> {
  for await (const event of events) into.push(event);
}

const chatBody = {
  model: 'llama-3.1-8b',
  messages: [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Tell me about continuous batching in inference engines.' },
  ],
};
// Independent count: 3 per message + role + content, plus 3 to prime the reply.
const chatPromptTokens =
  3 +
  encode('system').length +
  encode('You are a helpful assistant.').length +
  3 +
  encode('user').length +
  encode('Tell me about continuous batching in inference engines.').length +
  3;

describe('createSimulatedUpstream', () => {
  it('answers a chat completion with the exact OpenAI shape, exact usage and engine timing', async () => {
    const { clock, upstream } = setup();
    const start = clock.now();
    const pending = upstream.complete(request('chat', { ...chatBody, max_tokens: 50 }));
    const result = await settlesAfter(clock, pending, start, chatPromptTokens * PREFILL_PER_TOKEN + 50 * STEP_1);

    expect(countPromptTokens('chat', chatBody)).toBe(chatPromptTokens);
    const body = result.body as any;
    expect(body.id).toMatch(/^chatcmpl-/);
    expect(body.object).toBe('chat.completion');
    expect(body.created).toBe(Math.floor(clock.now() / 1000));
    expect(body.model).toBe('llama-3.1-8b');
    expect(body.system_fingerprint).toEqual(expect.any(String));
    expect(body.choices).toHaveLength(1);
    const choice = body.choices[0];
    expect(choice).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    expect(choice.message).toMatchObject({ role: 'assistant', refusal: null });
    expect(countTextTokens(choice.message.content)).toBe(50);
    expect(body.usage).toEqual({
      prompt_tokens: chatPromptTokens,
      completion_tokens: 50,
      total_tokens: chatPromptTokens + 50,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: 0,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
      },
    });
    expect(result.usage).toEqual({
      input: { total: chatPromptTokens, cached: 0 },
      output: { total: 50, reasoning: 0 },
      estimated: false,
    });
  });

  it("uses the gateway's prompt count when it passes one, for usage and prefill time, instead of counting again", async () => {
    const { clock, upstream } = setup();
    const start = clock.now();
    // A count unlike the body's own: what the replica reports and times can only have come from the request.
    const promptTokens = 4_000;
    const pending = upstream.complete({ ...request('chat', { ...chatBody, max_tokens: 5 }), promptTokens });
    // Prefilling 4,000 tokens, not the body's own few dozen, before the 5 decode steps.
    const result = await settlesAfter(clock, pending, start, promptTokens * PREFILL_PER_TOKEN + 5 * STEP_1);
    expect(result.usage?.input.total).toBe(promptTokens);
    const events: StreamEvent[] = [];
    const streamed = await upstream.stream({
      ...request('chat', { ...chatBody, max_tokens: 2, stream_options: { include_usage: true } }),
      promptTokens,
    });
    const collected = collect(streamed.events, events);
    clock.runUntilIdle();
    await collected;
    const usage = events.find((event) => event.type === 'usage');
    expect(usage).toMatchObject({ usage: { input: { total: promptTokens } } });
    const embedded = upstream.complete({
      ...request('embeddings', { model: 'embed', input: ['one', 'two'] }),
      promptTokens: 7,
    });
    clock.runUntilIdle();
    expect((await embedded).usage?.input.total).toBe(7);
  });

  it('derives a deterministic 16–256 token answer that stops, and prefers max_completion_tokens', async () => {
    const { clock, upstream } = setup();
    const run = async (body: Record<string, unknown>) => {
      const pending = upstream.complete(request('chat', body));
      clock.runUntilIdle();
      return (await pending).body as any;
    };
    const first = await run(chatBody);
    const second = await run(chatBody);
    const tokens = countTextTokens(first.choices[0].message.content);
    expect(first.choices[0].finish_reason).toBe('stop');
    expect(tokens).toBe(first.usage.completion_tokens);
    expect(tokens).toBeGreaterThanOrEqual(16);
    expect(tokens).toBeLessThanOrEqual(256);
    expect(second.choices[0].message.content).toBe(first.choices[0].message.content);
    const capped = await run({ ...chatBody, max_tokens: 500, max_completion_tokens: 7 });
    expect(capped.usage.completion_tokens).toBe(7);
    expect(countTextTokens(capped.choices[0].message.content)).toBe(7);
  });

  it('answers a text completion', async () => {
    const { clock, upstream } = setup();
    const pending = upstream.complete(
      request('completions', { model: 'm', prompt: 'Once upon a time', max_tokens: 12 }),
    );
    clock.runUntilIdle();
    const body = (await pending).body as any;
    expect(body.id).toMatch(/^cmpl-/);
    expect(body.object).toBe('text_completion');
    expect(body.choices[0]).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    expect(countTextTokens(body.choices[0].text)).toBe(12);
    const promptTokens = encode('Once upon a time').length;
    expect(body.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 12, total_tokens: promptTokens + 12 });
  });

  it('streams a role chunk, one chunk per token at step times, a finish chunk and a usage event', async () => {
    const { clock, upstream } = setup();
    const start = clock.now();
    const stream = await upstream.stream(request('chat', { ...chatBody, max_tokens: 20, stream: true }));
    const events: StreamEvent[] = [];
    const done = collect(stream.events, events);
    const firstToken = start + chatPromptTokens * PREFILL_PER_TOKEN + STEP_1;
    clock.advanceTo(firstToken - 0.01);
    await flush();
    expect(events).toHaveLength(0);
    clock.advanceTo(firstToken + 0.01);
    await flush();
    expect(events).toHaveLength(2);
    clock.advanceTo(firstToken + 4 * STEP_1 + 0.01);
    await flush();
    expect(events).toHaveLength(6);
    clock.runUntilIdle();
    await done;

    expect(events).toHaveLength(1 + 20 + 1 + 1);
    const chunks = events.map((event) => JSON.parse(event.data));
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '', refusal: null });
    const ids = new Set(chunks.map((chunk) => chunk.id));
    expect(ids.size).toBe(1);
    for (const chunk of chunks) {
      expect(chunk.object).toBe('chat.completion.chunk');
      expect(chunk.model).toBe('llama-3.1-8b');
      expect('usage' in chunk === (chunk === chunks.at(-1))).toBe(true);
    }
    const tokenEvents = events.slice(1, 21);
    for (const [index, event] of tokenEvents.entries()) {
      expect(event.type).toBe('chunk');
      expect(chunks[index + 1].choices[0].delta.content).toBe(event.type === 'chunk' ? event.text : undefined);
      expect(countTextTokens(event.type === 'chunk' ? event.text : '')).toBe(1);
    }
    const text = tokenEvents.map((event) => (event.type === 'chunk' ? event.text : '')).join('');
    expect(countTextTokens(text)).toBe(20);
    expect(chunks[21].choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: 'length' });
    const usageEvent = events[22]!;
    expect(usageEvent.type).toBe('usage');
    expect(chunks[22].choices).toEqual([]);
    expect(chunks[22].usage).toMatchObject({ prompt_tokens: chatPromptTokens, completion_tokens: 20 });
    if (usageEvent.type === 'usage') expect(usageEvent.usage.output.total).toBe(20);

    // The whole answer to the same request is the same text.
    const whole = upstream.complete(request('chat', { ...chatBody, max_tokens: 20 }));
    clock.runUntilIdle();
    expect(((await whole).body as any).choices[0].message.content).toBe(text);
  });

  it('adds "usage": null to every chunk when the client asked for include_usage', async () => {
    const { clock, upstream } = setup();
    const stream = await upstream.stream(
      request('completions', { model: 'm', prompt: 'Hi', max_tokens: 3, stream_options: { include_usage: true } }),
    );
    const events: StreamEvent[] = [];
    const done = collect(stream.events, events);
    clock.runUntilIdle();
    await done;
    const chunks = events.map((event) => JSON.parse(event.data));
    expect(chunks).toHaveLength(3 + 1 + 1);
    expect(chunks[0]).toMatchObject({ object: 'text_completion', usage: null });
    expect(chunks[0].choices[0]).toMatchObject({ index: 0, finish_reason: null, logprobs: null });
    expect(chunks[3].choices[0]).toMatchObject({ text: '', finish_reason: 'length' });
    expect(chunks[4].usage).toEqual({ prompt_tokens: 1, completion_tokens: 3, total_tokens: 4 });
  });

  it('cancels the sequence when the signal aborts mid-stream', async () => {
    const { clock, upstream } = setup();
    const controller = new AbortController();
    const stream = await upstream.stream(request('chat', { ...chatBody, max_tokens: 1000 }, controller.signal));
    const events: StreamEvent[] = [];
    const done = collect(stream.events, events);
    clock.advance(50);
    await flush();
    expect(await upstream.load()).toEqual({ running: 1, waiting: 0 });
    const received = events.length;
    expect(received).toBeGreaterThan(2);
    controller.abort();
    await expect(done).rejects.toMatchObject({ name: 'AbortError' });
    clock.runUntilIdle();
    expect(await upstream.load()).toEqual({ running: 0, waiting: 0 });
    expect(upstream.engines[0]!.stats.cancelled).toBe(1);
    expect(upstream.engines[0]!.stats.generatedTokens).toBeLessThan(received + 2);
  });

  it('cancels the sequence when the consumer stops iterating', async () => {
    const { clock, upstream } = setup();
    const stream = await upstream.stream(request('chat', { ...chatBody, max_tokens: 1000 }));
    const seen: StreamEvent[] = [];
    const consumer = (async () => {
      for await (const event of stream.events) {
        seen.push(event);
        if (seen.length === 3) break;
      }
    })();
    for (let step = 0; step < 10 && seen.length < 3; step++) {
      clock.advance(STEP_1 * 5);
      await flush();
    }
    await consumer;
    clock.runUntilIdle();
    expect(upstream.engines[0]!.stats.cancelled).toBe(1);
    expect(upstream.engines[0]!.stats.completed).toBe(0);
  });

  it('rejects a whole request whose signal aborts, and one already aborted', async () => {
    const { clock, upstream } = setup();
    const controller = new AbortController();
    const pending = upstream.complete(request('chat', { ...chatBody, max_tokens: 100 }, controller.signal));
    clock.advance(20);
    controller.abort(new Error('client gone'));
    await expect(pending).rejects.toThrow('client gone');
    expect(upstream.currentLoad()).toEqual({ running: 0, waiting: 0 });
    await expect(upstream.complete(request('chat', chatBody, controller.signal))).rejects.toThrow('client gone');
  });

  it('dispatches to the least-loaded replica and sums load', async () => {
    const { clock, upstream } = setup(2, { max_batch: 1 });
    const pending = Array.from({ length: 4 }, () => upstream.complete(request('chat', { ...chatBody, max_tokens: 5 })));
    clock.advance(0);
    expect(upstream.engines.map((engine) => [engine.running, engine.waiting])).toEqual([
      [1, 1],
      [1, 1],
    ]);
    expect(await upstream.load()).toEqual({ running: 2, waiting: 2 });
    clock.runUntilIdle();
    await Promise.all(pending);
    expect(upstream.currentLoad()).toEqual({ running: 0, waiting: 0 });
  });

  it('returns deterministic unit-length embeddings, honouring dimensions and base64', async () => {
    const { clock, upstream } = setup();
    const embed = async (body: Record<string, unknown>) => {
      const pending = upstream.complete(request('embeddings', body));
      clock.runUntilIdle();
      return pending;
    };
    const result = await embed({ model: 'embed-small', input: ['The food was delicious', 'and the waiter'] });
    const body = result.body as any;
    expect(body.object).toBe('list');
    expect(body.model).toBe('embed-small');
    expect(body.data).toHaveLength(2);
    expect(body.data[1]).toMatchObject({ object: 'embedding', index: 1 });
    const promptTokens = encode('The food was delicious').length + encode('and the waiter').length;
    expect(body.usage).toEqual({ prompt_tokens: promptTokens, total_tokens: promptTokens });
    expect(result.usage?.input.total).toBe(promptTokens);
    const vector: number[] = body.data[0].embedding;
    expect(vector).toHaveLength(256);
    expect(Math.hypot(...vector)).toBeCloseTo(1, 5);
    expect(body.data[1].embedding).not.toEqual(vector);

    const again = (await embed({ model: 'e', input: 'The food was delicious', dimensions: 64 })).body as any;
    expect(again.data[0].embedding).toHaveLength(64);
    const repeat = (await embed({ model: 'e', input: 'The food was delicious', dimensions: 64 })).body as any;
    expect(repeat.data[0].embedding).toEqual(again.data[0].embedding);

    const base64 = (await embed({ model: 'e', input: 'The food was delicious', encoding_format: 'base64' }))
      .body as any;
    const bytes = Buffer.from(base64.data[0].embedding, 'base64');
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    expect(decoded).toEqual(vector);

    const ids = (await embed({ model: 'e', input: [[1, 2, 3], [4]] })).body as any;
    expect(ids.usage.prompt_tokens).toBe(4);
  });

  it('rejects requests it cannot serve with InvalidRequestError codes', async () => {
    const { upstream } = setup(1, { kv_tokens: 100 });
    const codeOf = async (endpoint: UpstreamEndpoint, body: Record<string, unknown>) => {
      try {
        await upstream.complete(request(endpoint, body));
        return 'resolved';
      } catch (error: unknown) {
        expect(error).toBeInstanceOf(InvalidRequestError);
        return [(error as GatewayError).code, (error as GatewayError).param];
      }
    };
    expect(await codeOf('chat', { ...chatBody, n: 2 })).toEqual(['unsupported_value', 'n']);
    expect(await codeOf('chat', { ...chatBody, max_tokens: 90 })).toEqual(['context_length_exceeded', 'max_tokens']);
    expect(await codeOf('chat', { ...chatBody, max_tokens: 0 })).toEqual(['invalid_value', 'max_tokens']);
    expect(await codeOf('chat', { model: 'm', messages: [] })).toEqual(['invalid_request', 'messages']);
    expect(await codeOf('chat', { messages: chatBody.messages })).toEqual(['invalid_request', 'model']);
    expect(await codeOf('completions', { model: 'm', prompt: ['a', 'b'] })).toEqual(['unsupported_value', 'prompt']);
    expect(await codeOf('completions', { model: 'm', prompt: 'word '.repeat(150) })).toEqual([
      'context_length_exceeded',
      'prompt',
    ]);
    expect(await codeOf('embeddings', { model: 'm', input: '' })).toEqual(['invalid_request', 'input']);
    expect(await codeOf('embeddings', { model: 'm', input: 'x', dimensions: 0 })).toEqual([
      'invalid_value',
      'dimensions',
    ]);
    expect(await codeOf('embeddings', { model: 'm', input: 'x', encoding_format: 'hex' })).toEqual([
      'invalid_value',
      'encoding_format',
    ]);
    await expect(upstream.stream(request('embeddings', { model: 'm', input: 'x' }))).rejects.toBeInstanceOf(
      InvalidRequestError,
    );
  });

  it('fails pending requests with UpstreamError on close', async () => {
    const { clock, upstream } = setup();
    const pending = upstream.complete(request('chat', { ...chatBody, max_tokens: 100 }));
    const stream = await upstream.stream(request('chat', { ...chatBody, max_tokens: 100 }));
    const events: StreamEvent[] = [];
    const done = collect(stream.events, events);
    clock.advance(30);
    await upstream.close();
    await expect(pending).rejects.toMatchObject({ code: 'upstream_closed' });
    await expect(done).rejects.toBeInstanceOf(UpstreamError);
    await expect(upstream.complete(request('chat', chatBody))).rejects.toMatchObject({ code: 'upstream_closed' });
  });
});

describe('engine priority', () => {
  it("queues by the request's priority under the priority policy (lower first)", async () => {
    const { clock, upstream } = setup(1, { max_batch: 1, scheduling_policy: 'priority' });
    const finished: string[] = [];
    const run = (name: string, priority: number | undefined) => {
      const call: UpstreamRequest = { ...request('chat', { ...chatBody, max_tokens: 4 }), requestId: name };
      if (priority !== undefined) call.priority = priority;
      return upstream.complete(call).then(() => finished.push(name));
    };
    // The first occupies the only slot; then batch-class work (2) queues before an online request (0).
    const all = [run('running', 0)];
    await flush();
    all.push(run('batch', 2), run('online', 0));
    await flush();
    while (finished.length < 3) {
      clock.advance(5);
      await flush();
    }
    await Promise.all(all);
    expect(finished).toEqual(['running', 'online', 'batch']);
  });
});
