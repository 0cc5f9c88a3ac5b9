import { describe, expect, it } from 'vitest';
import { UpstreamError } from '../../errors/gateway-error.js';
import type { StreamEvent } from '../upstream.js';
import { OpenAIStreamEvents } from './openai-stream-events.js';
import type { BodyListener, StreamingBody } from './upstream-exchange.js';

/** A body holding `text`: the first `resume()` delivers it as one chunk, then the end. */
function bodyOf(text: string): StreamingBody {
  let listener: BodyListener | undefined;
  let delivered = false;
  return {
    listen: (attached) => {
      listener = attached;
    },
    pause: () => undefined,
    resume: () => {
      if (delivered || listener === undefined) return;
      delivered = true;
      listener.onData(Buffer.from(text, 'utf8'));
      listener.onEnd();
    },
    destroy: () => undefined,
  };
}

function eventsOf(text: string): OpenAIStreamEvents {
  return new OpenAIStreamEvents(bodyOf(text), 'unit', new AbortController().signal);
}

async function drain(events: AsyncIterable<StreamEvent>): Promise<{ events: StreamEvent[]; error: unknown }> {
  const received: StreamEvent[] = [];
  try {
    for await (const event of events) received.push(event);
  } catch (error: unknown) {
    return { events: received, error };
  }
  return { events: received, error: undefined };
}

const chunk = (delta: Record<string, unknown>, index = 0) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index, delta, finish_reason: null }] })}\n\n`;

describe('OpenAIStreamEvents', () => {
  it('counts content, refusal, reasoning (once), tool-call text and every choice', async () => {
    const text =
      chunk({ content: 'a', refusal: 'b' }) +
      chunk({ reasoning_content: 'think', reasoning: 'think' }) +
      chunk({ reasoning: 'more' }) +
      chunk({ tool_calls: [{ index: 0, function: { name: 'get_weather', arguments: '{"city":' } }] }) +
      `data: ${JSON.stringify({
        choices: [
          { index: 0, delta: { content: 'x' } },
          { index: 1, delta: { content: 'y' } },
        ],
      })}\n\n` +
      'data: [DONE]\n\n';
    const { events, error } = await drain(eventsOf(text));
    expect(error).toBeUndefined();
    expect(events.map((event) => (event.type === 'chunk' ? event.text : null))).toEqual([
      'ab',
      'think',
      'more',
      'get_weather{"city":',
      'xy',
    ]);
  });

  it('passes a chunk without choices and without usage on as an empty chunk (e.g. prompt filter results)', async () => {
    const filter = JSON.stringify({ choices: [], prompt_filter_results: [{ prompt_index: 0 }] });
    const { events } = await drain(eventsOf(`data: ${filter}\n\ndata: [DONE]\n\n`));
    expect(events).toEqual([{ type: 'chunk', data: filter, text: '' }]);
  });

  it('ignores named events other than error, and stops at [DONE] even if more follows', async () => {
    const { events, error } = await drain(
      eventsOf(`event: ping\ndata: {}\n\n${chunk({ content: 'k' })}data: [DONE]\n\n${chunk({ content: 'late' })}`),
    );
    expect(error).toBeUndefined();
    expect(events).toHaveLength(1);
  });

  it('throws upstream_stream_error on an `event: error`', async () => {
    const { events, error } = await drain(eventsOf(`${chunk({ content: 'k' })}event: error\ndata: overloaded\n\n`));
    expect(events).toHaveLength(1);
    expect((error as UpstreamError).code).toBe('upstream_stream_error');
  });

  it('throws upstream_malformed_response on a chunk that is not a JSON object', async () => {
    for (const data of ['{"choices": [', '[1,2]', '42']) {
      const { error } = await drain(eventsOf(`data: ${data}\n\ndata: [DONE]\n\n`));
      expect(error).toBeInstanceOf(UpstreamError);
      expect((error as UpstreamError).code).toBe('upstream_malformed_response');
    }
  });

  it('throws upstream_stream_truncated on an empty body', async () => {
    const { events, error } = await drain(eventsOf(''));
    expect(events).toEqual([]);
    expect((error as UpstreamError).code).toBe('upstream_stream_truncated');
  });

  it('ends quietly when iterated again after the end', async () => {
    const events = eventsOf(`${chunk({ content: 'k' })}data: [DONE]\n\n`);
    await drain(events);
    expect(await events.next()).toEqual({ done: true, value: undefined });
  });
});
