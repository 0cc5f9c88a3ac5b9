import { describe, expect, it } from 'vitest';
import { openAIErrors } from '../../../test/support/openai-schema.js';
import type { SseSink } from '../../relay/sse-sink.js';
import { inputItemsOf, newResponseContext, type ResponseContext, responseFromChat } from './responses-object.js';
import type { ResponsesRequest } from './responses-request.js';
import { ResponsesStreamSink } from './responses-stream-sink.js';

/** A client's sink that keeps what it is sent; `pending` is what `write` returns (backpressure). */
class RecordingSink implements SseSink {
  text = '';
  headers: Record<string, string> | undefined;
  writes = 0;
  held = false;
  ended = false;
  closed = false;
  pending: Promise<void> | undefined;
  private readonly listeners: Array<() => void> = [];

  open(headers: Record<string, string>): void {
    this.headers = headers;
  }

  write(text: string): Promise<void> | undefined {
    this.writes++;
    this.text += text;
    return this.pending;
  }

  holdForEnd(): void {
    this.held = true;
  }

  end(): void {
    this.ended = true;
  }

  onClose(listener: () => void): void {
    this.listeners.push(listener);
  }

  disconnect(): void {
    this.closed = true;
    for (const listener of this.listeners) listener();
  }
}

/** A Responses stream event as parsed from its `data:` line. */
type StreamEvent = { type: string; sequence_number: number } & Record<string, any>;

/** The events in `text`, each checked to be `event: <type>` then `data: <json>` with the same type. */
function eventsOf(text: string): StreamEvent[] {
  expect(text.endsWith('\n\n') || text === '').toBe(true);
  return text
    .split('\n\n')
    .filter((block) => block !== '')
    .map((block) => {
      const [eventLine = '', dataLine = '', ...rest] = block.split('\n');
      expect(rest).toEqual([]);
      expect(dataLine.startsWith('data: ')).toBe(true);
      const event = JSON.parse(dataLine.slice('data: '.length)) as StreamEvent;
      expect(eventLine).toBe(`event: ${event.type}`);
      return event;
    });
}

/** The writes the relay makes for an SSE stream: one `data: …\n\n` each. */
function writesOf(recording: string): string[] {
  return recording
    .trim()
    .split('\n\n')
    .map((block) => `${block.trim()}\n\n`);
}

const REQUEST: ResponsesRequest = { model: 'gpt-4o-mini', input: 'Hi', stream: true };

/** Request fields as a client sends them: the schema's static type names only `type` on a tool. */
type RequestFields = Omit<Partial<ResponsesRequest>, 'tools'> & { tools?: Record<string, unknown>[] };

function contextFor(request: RequestFields = {}): ResponseContext {
  return newResponseContext({ ...REQUEST, ...request } as ResponsesRequest, Date.parse('2025-08-05T12:00:00Z'));
}

/** Replays `recording` through a `ResponsesStreamSink` the way the relay does: open, one write per event, end. */
function replay(recording: string, context = contextFor()) {
  const target = new RecordingSink();
  const sink = new ResponsesStreamSink(target, context);
  sink.open({ 'x-request-id': 'req_1' });
  for (const write of writesOf(recording)) sink.write(write);
  sink.holdForEnd();
  sink.end();
  const events = eventsOf(target.text);
  return { target, sink, events, types: events.map((event) => event.type), last: events.at(-1)! };
}

/** Every event valid against OpenAI's `ResponseStreamEvent`, and every response it carries against `Response`. */
function expectValid(events: readonly StreamEvent[]): void {
  for (const event of events) {
    expect({ type: event.type, errors: openAIErrors('ResponseStreamEvent', event) }).toEqual({
      type: event.type,
      errors: [],
    });
    if (event.response !== undefined) expect(openAIErrors('Response', event.response)).toEqual([]);
  }
  expect(events.map((event) => event.sequence_number)).toEqual(events.map((_event, index) => index));
}

/** "Hello, world!" in the shape OpenAI streams it with `stream_options.include_usage` (written for this test). */
const TEXT_STREAM = `
data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":", world"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-C1Kx7qbVbtY5eXGx9mPjfVn0ZkDrS","object":"chat.completion.chunk","created":1754395200,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":1180,"completion_tokens":84,"total_tokens":1264,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":64,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
`;

/** gpt-4o-mini cut off by `max_output_tokens`. */
const LENGTH_STREAM = `
data: {"id":"chatcmpl-C1L0aPj2cE3mKqvH2xZ8sW1bN4tYd","object":"chat.completion.chunk","created":1754395260,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L0aPj2cE3mKqvH2xZ8sW1bN4tYd","object":"chat.completion.chunk","created":1754395260,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Once upon"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L0aPj2cE3mKqvH2xZ8sW1bN4tYd","object":"chat.completion.chunk","created":1754395260,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" a time"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L0aPj2cE3mKqvH2xZ8sW1bN4tYd","object":"chat.completion.chunk","created":1754395260,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}

data: {"id":"chatcmpl-C1L0aPj2cE3mKqvH2xZ8sW1bN4tYd","object":"chat.completion.chunk","created":1754395260,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":16,"total_tokens":27,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
`;

/** gpt-4o-mini saying a word, then calling get_weather twice in parallel (index 0 and 1). */
const TOOL_STREAM = String.raw`
data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Checking both."},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_Nt1s7XfWbYq0hLr3kPz2mCdA","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Paris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Qm8vR2cJxE5tWbN0aLs4yHuK","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"cation\": \"Bogotá\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-C1L2fXw9QhT3uJmE7nKpR5vA0sBcL","object":"chat.completion.chunk","created":1754395320,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":81,"completion_tokens":52,"total_tokens":133,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
`;

/** The first chunks of a stream, then the error chunk the relay writes when the upstream broke; no `[DONE]`. */
function brokenStream(error: string): string {
  return `
data: {"id":"chatcmpl-C1L5bKd3wR7yTnH1qXe9mPaZ2sVfG","object":"chat.completion.chunk","created":1754395380,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L5bKd3wR7yTnH1qXe9mPaZ2sVfG","object":"chat.completion.chunk","created":1754395380,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"The answer"},"logprobs":null,"finish_reason":null}],"usage":null}

data: ${error}
`;
}

const UPSTREAM_ERROR =
  '{"error":{"message":"The upstream stream ended unexpectedly.","type":"server_error","param":null,"code":"upstream_error"}}';
const RATE_LIMIT_ERROR =
  '{"error":{"message":"Rate limit reached for requests.","type":"requests","param":null,"code":"rate_limit_exceeded"}}';

/** A model that answered nothing at all. */
const EMPTY_STREAM = `
data: {"id":"chatcmpl-C1L7hRt2nW4xLmB8vYc0kQeJ3uPsA","object":"chat.completion.chunk","created":1754395440,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L7hRt2nW4xLmB8vYc0kQeJ3uPsA","object":"chat.completion.chunk","created":1754395440,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-C1L7hRt2nW4xLmB8vYc0kQeJ3uPsA","object":"chat.completion.chunk","created":1754395440,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
`;

/** gpt-4o-mini refusing. */
const REFUSAL_STREAM = `
data: {"id":"chatcmpl-C1L9mVq5rY1sKpD3wNx7cTbH0aZeF","object":"chat.completion.chunk","created":1754395500,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L9mVq5rY1sKpD3wNx7cTbH0aZeF","object":"chat.completion.chunk","created":1754395500,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"refusal":"I'm sorry, "},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L9mVq5rY1sKpD3wNx7cTbH0aZeF","object":"chat.completion.chunk","created":1754395500,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"refusal":"I can't help with that."},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-C1L9mVq5rY1sKpD3wNx7cTbH0aZeF","object":"chat.completion.chunk","created":1754395500,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-C1L9mVq5rY1sKpD3wNx7cTbH0aZeF","object":"chat.completion.chunk","created":1754395500,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":14,"completion_tokens":10,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]
`;

/** The text of a response's output_text parts, joined. */
function outputText(response: Record<string, any>): string {
  return (response.output as Record<string, any>[])
    .filter((item) => item.type === 'message')
    .flatMap((item) => item.content as Record<string, any>[])
    .filter((part) => part.type === 'output_text')
    .map((part) => part.text as string)
    .join('');
}

describe('ResponsesStreamSink', () => {
  describe('a text answer', () => {
    it('writes the events in order, numbered from 0, each valid against OpenAI’s schema', () => {
      const { types, events } = replay(TEXT_STREAM);
      expect(types).toEqual([
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        'response.output_text.delta',
        'response.output_text.delta',
        'response.output_text.delta',
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.completed',
      ]);
      expectValid(events);
    });

    it('opens and closes the target, and passes the headers and the end hold on', () => {
      const { target } = replay(TEXT_STREAM);
      expect(target.headers).toEqual({ 'x-request-id': 'req_1' });
      expect(target.held).toBe(true);
      expect(target.ended).toBe(true);
    });

    it('announces one response id, in progress, before any output', () => {
      const context = contextFor();
      const { events } = replay(TEXT_STREAM, context);
      const [created, inProgress] = events;
      expect(created?.response).toMatchObject({ id: context.id, status: 'in_progress', output: [] });
      expect(inProgress?.response).toMatchObject({ id: context.id, status: 'in_progress', output: [] });
      expect(events.at(-1)?.response.id).toBe(context.id);
    });

    it('has the deltas add up to the done text and to the final response’s text', () => {
      const { events, last } = replay(TEXT_STREAM);
      const deltas = events.filter((event) => event.type === 'response.output_text.delta');
      expect(deltas.map((event) => event.delta)).toEqual(['Hello', ', world', '!']);
      const done = events.find((event) => event.type === 'response.output_text.done');
      expect(done?.text).toBe('Hello, world!');
      expect(outputText(last.response)).toBe('Hello, world!');
      const itemId = events.find((event) => event.type === 'response.output_item.added')?.item.id;
      expect(itemId).toMatch(/^msg_/);
      for (const event of events.filter((event) => 'item_id' in event)) {
        expect(event).toMatchObject({ item_id: itemId, output_index: 0, content_index: 0 });
      }
      expect(last.response.output).toEqual([
        {
          id: itemId,
          type: 'message',
          status: 'completed',
          role: 'assistant',
          content: [{ type: 'output_text', text: 'Hello, world!', annotations: [], logprobs: [] }],
        },
      ]);
    });

    it('completes with the usage of the last chunk, in the Responses shape', () => {
      const { last } = replay(TEXT_STREAM);
      expect(last.type).toBe('response.completed');
      expect(last.response.status).toBe('completed');
      expect(last.response.service_tier).toBe('default');
      expect(last.response.incomplete_details).toBeNull();
      expect(last.response.usage).toMatchObject({
        input_tokens: 1180,
        input_tokens_details: { cached_tokens: 1024 },
        output_tokens: 84,
        output_tokens_details: { reasoning_tokens: 64 },
        total_tokens: 1264,
      });
    });
  });

  it('ends a stream cut by max_output_tokens with response.incomplete and incomplete items', () => {
    const { events, types, last } = replay(LENGTH_STREAM, contextFor({ max_output_tokens: 16 }));
    expectValid(events);
    expect(types.at(-1)).toBe('response.incomplete');
    expect(types).not.toContain('response.completed');
    expect(last.response).toMatchObject({
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      max_output_tokens: 16,
      usage: { input_tokens: 11, output_tokens: 16, total_tokens: 27 },
    });
    expect(events.find((event) => event.type === 'response.output_item.done')?.item.status).toBe('incomplete');
    expect(last.response.output[0].status).toBe('incomplete');
    expect(outputText(last.response)).toBe('Once upon a time');
  });

  describe('tool calls', () => {
    it('closes the message before the first call, then streams each call as a function_call item', () => {
      const { events, types } = replay(TOOL_STREAM);
      expectValid(events);
      expect(types).toEqual([
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        'response.output_text.delta',
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.output_item.added',
        'response.function_call_arguments.delta',
        'response.function_call_arguments.delta',
        'response.output_item.added',
        'response.function_call_arguments.delta',
        'response.function_call_arguments.delta',
        'response.function_call_arguments.done',
        'response.output_item.done',
        'response.function_call_arguments.done',
        'response.output_item.done',
        'response.completed',
      ]);
    });

    it('gives each call its call id, name and whole arguments', () => {
      const { events, last } = replay(TOOL_STREAM);
      const added = events.filter(
        (event) => event.type === 'response.output_item.added' && event.item.type === 'function_call',
      );
      expect(added.map((event) => [event.output_index, event.item.call_id, event.item.name])).toEqual([
        [1, 'call_Nt1s7XfWbYq0hLr3kPz2mCdA', 'get_weather'],
        [2, 'call_Qm8vR2cJxE5tWbN0aLs4yHuK', 'get_weather'],
      ]);
      const [paris, bogota] = added.map((event) => event.item.id as string);
      expect(paris).toMatch(/^fc_/);
      expect(bogota).not.toBe(paris);

      const deltasOf = (itemId: string | undefined) =>
        events
          .filter((event) => event.type === 'response.function_call_arguments.delta' && event.item_id === itemId)
          .map((event) => event.delta)
          .join('');
      expect(deltasOf(paris)).toBe('{"location": "Paris"}');
      expect(deltasOf(bogota)).toBe('{"location": "Bogotá"}');
      expect(
        events
          .filter((event) => event.type === 'response.function_call_arguments.done')
          .map((event) => [event.item_id, event.output_index, event.name, event.arguments]),
      ).toEqual([
        [paris, 1, 'get_weather', '{"location": "Paris"}'],
        [bogota, 2, 'get_weather', '{"location": "Bogotá"}'],
      ]);

      expect(last.response.status).toBe('completed');
      expect(last.response.output).toEqual([
        expect.objectContaining({ type: 'message', status: 'completed' }),
        {
          id: paris,
          type: 'function_call',
          status: 'completed',
          call_id: 'call_Nt1s7XfWbYq0hLr3kPz2mCdA',
          name: 'get_weather',
          arguments: '{"location": "Paris"}',
        },
        {
          id: bogota,
          type: 'function_call',
          status: 'completed',
          call_id: 'call_Qm8vR2cJxE5tWbN0aLs4yHuK',
          name: 'get_weather',
          arguments: '{"location": "Bogotá"}',
        },
      ]);
      expect(outputText(last.response)).toBe('Checking both.');
    });

    it('answers a request with tools with the tools echoed', () => {
      const tools = [
        {
          type: 'function',
          name: 'get_weather',
          parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
        },
      ];
      const { events, last } = replay(TOOL_STREAM, contextFor({ tools, tool_choice: 'auto' }));
      expectValid(events);
      expect(last.response.tools).toEqual([expect.objectContaining({ type: 'function', name: 'get_weather' })]);
    });
  });

  describe('an error mid-stream', () => {
    it('fails the response with server_error, and writes nothing after it', () => {
      const target = new RecordingSink();
      const sink = new ResponsesStreamSink(target, contextFor());
      sink.open({});
      for (const write of writesOf(brokenStream(UPSTREAM_ERROR))) sink.write(write);
      const written = target.text;
      const events = eventsOf(written);
      expectValid(events);
      expect(events.map((event) => event.type)).toEqual([
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        'response.output_text.delta',
        'response.failed',
      ]);
      expect(events.at(-1)?.response).toMatchObject({
        status: 'failed',
        error: { code: 'server_error', message: 'The upstream stream ended unexpectedly.' },
      });

      expect(sink.write(writesOf(TEXT_STREAM)[1]!)).toBeUndefined();
      expect(sink.write('data: [DONE]\n\n')).toBeUndefined();
      sink.end();
      expect(target.text).toBe(written);
      expect(target.ended).toBe(true);
    });

    it('keeps rate_limit_exceeded as the code', () => {
      const { events, last } = replay(brokenStream(RATE_LIMIT_ERROR));
      expectValid(events);
      expect(last.type).toBe('response.failed');
      expect(last.response.error.code).toBe('rate_limit_exceeded');
    });

    it('fails a stream that broke before any output', () => {
      const { events, types, last } = replay(`data: ${UPSTREAM_ERROR}`);
      expectValid(events);
      expect(types).toEqual(['response.created', 'response.in_progress', 'response.failed']);
      expect(last.response).toMatchObject({ status: 'failed', output: [], error: { code: 'server_error' } });
    });
  });

  it('makes an empty answer one message with an empty output_text', () => {
    const { events, types, last } = replay(EMPTY_STREAM);
    expectValid(events);
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(events.find((event) => event.type === 'response.output_text.done')?.text).toBe('');
    expect(last.response.output).toEqual([
      expect.objectContaining({
        type: 'message',
        status: 'completed',
        content: [{ type: 'output_text', text: '', annotations: [], logprobs: [] }],
      }),
    ]);
  });

  it('streams a refusal as refusal events and a refusal part', () => {
    const { events, types, last } = replay(REFUSAL_STREAM);
    expectValid(events);
    expect(types.filter((type) => type.startsWith('response.refusal'))).toEqual([
      'response.refusal.delta',
      'response.refusal.delta',
      'response.refusal.done',
    ]);
    expect(events.find((event) => event.type === 'response.refusal.done')?.refusal).toBe(
      "I'm sorry, I can't help with that.",
    );
    expect(last.response.output[0].content).toEqual([
      { type: 'refusal', refusal: "I'm sorry, I can't help with that." },
    ]);
  });

  describe('backpressure', () => {
    it("returns the target's promise from a write that wrote events", async () => {
      const target = new RecordingSink();
      const sink = new ResponsesStreamSink(target, contextFor());
      sink.open({});
      let drain: () => void = () => {};
      const full = new Promise<void>((resolve) => {
        drain = resolve;
      });
      target.pending = full;
      const [, hello] = writesOf(TEXT_STREAM);
      expect(sink.write(hello!)).toBe(full);
      drain();
      await full;
    });

    it('writes nothing to the target for a chunk that makes no event', () => {
      const target = new RecordingSink();
      const sink = new ResponsesStreamSink(target, contextFor());
      sink.open({});
      target.pending = new Promise<void>(() => {});
      const writes = target.writes;
      const [roleOnly] = writesOf(TEXT_STREAM);
      expect(sink.write(roleOnly!)).toBeUndefined();
      expect(target.writes).toBe(writes);
    });
  });

  it('hands the final response to onFinal, and writes its event only once that has resolved', async () => {
    const target = new RecordingSink();
    let stored: Record<string, unknown> | undefined;
    let release!: () => void;
    const sink = new ResponsesStreamSink(target, { ...contextFor(), store: true }, (response) => {
      stored = response;
      return new Promise<void>((resolve) => {
        release = resolve;
      });
    });
    sink.open({});
    const writes = writesOf(TEXT_STREAM);
    for (const write of writes.slice(0, -1)) expect(sink.write(write)).toBeUndefined();
    expect(stored).toBeUndefined();
    const last = sink.write(writes.at(-1)!);
    expect(last).toBeInstanceOf(Promise);
    expect(stored).toMatchObject({ status: 'completed', store: true });
    expect(target.text).not.toContain('response.completed');
    release();
    await last;
    const completed = eventsOf(target.text).at(-1)!;
    expect(completed.type).toBe('response.completed');
    expect(completed.response).toEqual(stored);
  });

  it("follows the target's closed state and passes close listeners to it", () => {
    const target = new RecordingSink();
    const sink = new ResponsesStreamSink(target, contextFor());
    let closes = 0;
    sink.onClose(() => closes++);
    expect(sink.closed).toBe(false);
    target.disconnect();
    expect(sink.closed).toBe(true);
    expect(closes).toBe(1);
  });
});

describe('ResponsesStreamSink: other servers and broken streams', () => {
  it("keeps calls that all arrive at index 0 apart by their ids (as Gemini's OpenAI-compatible endpoint sends them)", () => {
    const chunk = (id: string, name: string, args: string, finish: string | null) =>
      `data: ${JSON.stringify({
        id: 'c',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'gemini-2.5-flash',
        choices: [
          {
            index: 0,
            delta: {
              role: 'assistant',
              tool_calls: [{ index: 0, id, type: 'function', function: { name, arguments: args } }],
            },
            finish_reason: finish,
          },
        ],
      })}`;
    const { events, last } = replay(
      [
        chunk('function-call-1', 'get_weather', '{"city":"Paris"}', null),
        chunk('function-call-2', 'get_time', '{"tz":"UTC"}', 'tool_calls'),
        'data: [DONE]',
      ].join('\n\n'),
    );
    expectValid(events);
    const output = (last.response as { output: Array<Record<string, unknown>> }).output;
    expect(output.map((item) => [item.call_id, item.name, item.arguments, item.status])).toEqual([
      ['function-call-1', 'get_weather', '{"city":"Paris"}', 'completed'],
      ['function-call-2', 'get_time', '{"tz":"UTC"}', 'completed'],
    ]);
  });

  it('keeps what was streamed before a failure in the failed response, the cut item incomplete', () => {
    const { events, last } = replay(
      [
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"The answer"},"finish_reason":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\\"a\\":"}}]},"finish_reason":null}]}',
        'data: {"error":{"message":"Upstream broke off.","type":"server_error","param":null,"code":"upstream_error"}}',
      ].join('\n\n'),
    );
    expectValid(events);
    expect(last.type).toBe('response.failed');
    const output = (last.response as { output: Array<Record<string, unknown>> }).output;
    // The message was done when the call began; the call was cut.
    expect(output[0]).toMatchObject({ type: 'message', status: 'completed' });
    expect(output[0]!.content).toEqual([expect.objectContaining({ type: 'output_text', text: 'The answer' })]);
    expect(output[1]).toMatchObject({ type: 'function_call', status: 'incomplete', arguments: '{"a":' });

    const cutText = replay(
      [
        'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Half"},"finish_reason":null}]}',
        'data: {"error":{"message":"Upstream broke off.","type":"server_error","param":null,"code":"upstream_error"}}',
      ].join('\n\n'),
    );
    expectValid(cutText.events);
    const cutOutput = (cutText.last.response as { output: Array<Record<string, unknown>> }).output;
    expect(cutOutput).toEqual([
      expect.objectContaining({
        type: 'message',
        status: 'incomplete',
        content: [expect.objectContaining({ text: 'Half' })],
      }),
    ]);
  });
});

describe('ResponsesStreamSink: reasoning', () => {
  it('streams reasoning_content (DeepSeek, vLLM) as a reasoning item before the message', () => {
    const delta = (fields: Record<string, unknown>, finish: string | null = null) =>
      `data: ${JSON.stringify({
        id: 'r',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'deepseek-reasoner',
        choices: [{ index: 0, delta: fields, finish_reason: finish }],
      })}`;
    const { events, types, last } = replay(
      [
        delta({ role: 'assistant', content: null, reasoning_content: 'Two plus ' }),
        delta({ reasoning_content: 'two is four.' }),
        delta({ content: 'Four.' }),
        delta({}, 'stop'),
        'data: [DONE]',
      ].join('\n\n'),
    );
    expectValid(events);
    expect(types.slice(2, 9)).toEqual([
      'response.output_item.added',
      'response.content_part.added',
      'response.reasoning_text.delta',
      'response.reasoning_text.delta',
      'response.reasoning_text.done',
      'response.content_part.done',
      'response.output_item.done',
    ]);
    const output = (last.response as { output: Array<Record<string, unknown>> }).output;
    expect(output.map((item) => item.type)).toEqual(['reasoning', 'message']);
    expect(output[0]).toMatchObject({
      status: 'completed',
      content: [{ type: 'reasoning_text', text: 'Two plus two is four.' }],
    });
    expect(output[1]!.content).toEqual([expect.objectContaining({ type: 'output_text', text: 'Four.' })]);
  });

  it('ends an answer of reasoning alone with an empty message, as a whole answer has', () => {
    const { events, last } = replay(
      [
        'data: {"id":"r","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"reasoning":"Thinking."},"finish_reason":"length"}]}',
        'data: [DONE]',
      ].join('\n\n'),
    );
    expectValid(events);
    const output = (last.response as { output: Array<Record<string, unknown>> }).output;
    expect(output.map((item) => [item.type, item.status])).toEqual([
      ['reasoning', 'incomplete'],
      ['message', 'incomplete'],
    ]);
  });
});

/** A chat completion in OpenAI's shape with one choice: `message`, its finish reason, usage and other fields. */
function chatCompletion(
  message: Record<string, unknown>,
  finishReason: string,
  usage: Record<string, unknown>,
  fields: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    id: 'chatcmpl-test',
    object: 'chat.completion',
    created: 1_754_395_560,
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', ...message }, logprobs: null, finish_reason: finishReason }],
    usage,
    ...fields,
  };
}

describe('responseFromChat', () => {
  const context = contextFor({ stream: false });

  it('makes a text answer one completed message', () => {
    const completion = chatCompletion(
      { content: 'Hello! How can I help?', refusal: null, annotations: [] },
      'stop',
      {
        prompt_tokens: 9,
        completion_tokens: 7,
        total_tokens: 16,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
      },
      { service_tier: 'default', system_fingerprint: 'fp_34a54ae93c' },
    );
    const response = responseFromChat(context, completion);
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response).toMatchObject({
      id: context.id,
      object: 'response',
      created_at: context.createdAt,
      status: 'completed',
      model: 'gpt-4o-mini',
      service_tier: 'default',
      store: false,
      usage: { input_tokens: 9, output_tokens: 7, total_tokens: 16 },
    });
    expect(response.output).toEqual([
      {
        id: expect.stringMatching(/^msg_/),
        type: 'message',
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: 'Hello! How can I help?', annotations: [], logprobs: [] }],
      },
    ]);
  });

  it('makes a refusal a refusal part', () => {
    const completion = chatCompletion({ content: null, refusal: "I'm sorry, I can't help with that." }, 'stop', {
      prompt_tokens: 14,
      completion_tokens: 10,
      total_tokens: 24,
    });
    const response = responseFromChat(context, completion);
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response.output).toEqual([
      expect.objectContaining({
        type: 'message',
        content: [{ type: 'refusal', refusal: "I'm sorry, I can't help with that." }],
      }),
    ]);
  });

  it('makes tool calls function_call items, with no message when the content is null', () => {
    const call = (id: string, location: string) => ({
      id,
      type: 'function',
      function: { name: 'get_weather', arguments: JSON.stringify({ location }) },
    });
    const completion = chatCompletion(
      {
        content: null,
        tool_calls: [call('call_Nt1s7XfWbYq0hLr3kPz2mCdA', 'Paris'), call('call_Qm8vR2cJxE5tWbN0aLs4yHuK', 'Bogotá')],
        refusal: null,
      },
      'tool_calls',
      { prompt_tokens: 81, completion_tokens: 48, total_tokens: 129 },
      { service_tier: 'default' },
    );
    const response = responseFromChat(contextFor({ tools: [{ type: 'function', name: 'get_weather' }] }), completion);
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response.status).toBe('completed');
    expect(response.output).toEqual([
      {
        id: expect.stringMatching(/^fc_/),
        type: 'function_call',
        status: 'completed',
        call_id: 'call_Nt1s7XfWbYq0hLr3kPz2mCdA',
        name: 'get_weather',
        arguments: '{"location":"Paris"}',
      },
      {
        id: expect.stringMatching(/^fc_/),
        type: 'function_call',
        status: 'completed',
        call_id: 'call_Qm8vR2cJxE5tWbN0aLs4yHuK',
        name: 'get_weather',
        arguments: '{"location":"Bogotá"}',
      },
    ]);
  });

  it('makes finish_reason length an incomplete response with reason max_output_tokens', () => {
    const completion = chatCompletion({ content: 'Once upon a time', refusal: null }, 'length', {
      prompt_tokens: 11,
      completion_tokens: 16,
      total_tokens: 27,
    });
    const response = responseFromChat(contextFor({ max_output_tokens: 16 }), completion);
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response).toMatchObject({
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      output: [{ type: 'message', status: 'incomplete' }],
    });
  });

  it('maps usage with details: cached input and reasoning output', () => {
    const completion = chatCompletion(
      { content: '42', refusal: null },
      'stop',
      {
        prompt_tokens: 1180,
        completion_tokens: 84,
        total_tokens: 1264,
        prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 64, audio_tokens: 0 },
      },
      { model: 'o4-mini-2025-04-16' },
    );
    const response = responseFromChat(contextFor({ model: 'o4-mini', reasoning: { effort: 'low' } }), completion);
    expect(openAIErrors('Response', response)).toEqual([]);
    expect(response.usage).toMatchObject({
      input_tokens: 1180,
      input_tokens_details: { cached_tokens: 1024 },
      output_tokens: 84,
      output_tokens_details: { reasoning_tokens: 64 },
      total_tokens: 1264,
    });
    expect(response.reasoning).toEqual({ effort: 'low', summary: null });
  });
});

describe('responseFromChat: reasoning', () => {
  it('puts reasoning_content in a reasoning item before the message', () => {
    const response = responseFromChat(
      contextFor({ stream: false }),
      chatCompletion({ content: 'Four.', reasoning_content: 'Two plus two is four.' }, 'stop', {
        prompt_tokens: 9,
        completion_tokens: 12,
        total_tokens: 21,
      }),
    );
    expect(openAIErrors('Response', response)).toEqual([]);
    const output = response.output as Array<Record<string, unknown>>;
    expect(output.map((item) => item.type)).toEqual(['reasoning', 'message']);
    expect(output[0]).toMatchObject({ content: [{ type: 'reasoning_text', text: 'Two plus two is four.' }] });
  });
});

describe('inputItemsOf', () => {
  it('gives every input item an id and a status, and message text its part, as input_items lists them', () => {
    const items = inputItemsOf({
      input: [
        { role: 'developer', content: 'Be terse.' },
        { id: 'msg_mine', type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hi' }] },
        { role: 'assistant', content: 'Hello.' },
        { type: 'function_call', call_id: 'call_1', name: 'f', arguments: '{}' },
        { type: 'function_call_output', call_id: 'call_1', output: 'ok' },
      ],
    });
    expect(items.map((item) => String(item.id).replace(/_[0-9a-f]{48}$/, '_…'))).toEqual([
      'msg_…',
      'msg_mine',
      'msg_…',
      'fc_…',
      'fco_…',
    ]);
    expect(items.map((item) => [item.type, item.status])).toEqual([
      ['message', 'completed'],
      ['message', 'completed'],
      ['message', 'completed'],
      ['function_call', 'completed'],
      ['function_call_output', 'completed'],
    ]);
    expect(items[0]!.content).toEqual([{ type: 'input_text', text: 'Be terse.' }]);
    expect(items[2]!.content).toEqual([{ type: 'output_text', text: 'Hello.', annotations: [], logprobs: [] }]);
    expect(inputItemsOf({ input: 'Hi' })).toEqual([
      {
        id: expect.stringMatching(/^msg_/),
        type: 'message',
        role: 'user',
        status: 'completed',
        content: [{ type: 'input_text', text: 'Hi' }],
      },
    ]);
  });
});
