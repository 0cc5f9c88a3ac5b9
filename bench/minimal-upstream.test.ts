import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMinimalUpstream } from './minimal-upstream.js';

const servers: Server[] = [];
const urlOf = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

async function start(options: Parameters<typeof startMinimalUpstream>[0] = {}): Promise<string> {
  const server = await startMinimalUpstream(options);
  servers.push(server);
  return urlOf(server);
}

function post(base: string, body: unknown) {
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .filter((event) => event.startsWith('data: '))
    .map((event) => event.slice(6));
}

afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

describe('minimal upstream', () => {
  let base = '';
  beforeAll(async () => {
    base = await start();
  });

  it('answers a whole request with a chat.completion and usage', async () => {
    const response = await post(base, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json');
    const body = (await response.json()) as {
      object: string;
      choices: { message: { content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0]!.finish_reason).toBe('stop');
    expect(body.choices[0]!.message.content.split(' ')).toHaveLength(20);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + body.usage.completion_tokens);
    expect(body.usage.completion_tokens).toBe(20);
  });

  it('streams 20 content chunks, a final chunk, the usage chunk when asked, then [DONE]', async () => {
    const response = await post(base, {
      model: 'm',
      messages: [],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const data = sseData(await response.text());
    expect(data).toHaveLength(20 + 1 + 1 + 1);
    expect(data.at(-1)).toBe('[DONE]');
    const chunks = data.slice(0, -1).map((line) => JSON.parse(line) as Record<string, unknown>);
    const content = chunks
      .slice(0, 20)
      .map((chunk) => (chunk.choices as { delta: { content: string } }[])[0]!.delta.content)
      .join('');
    expect(content).toBe(Array.from({ length: 20 }, () => 'tok').join(' '));
    expect((chunks[20]!.choices as { finish_reason: string }[])[0]!.finish_reason).toBe('stop');
    expect(chunks[21]!.choices).toEqual([]);
    expect(chunks[21]!.usage).toEqual({ prompt_tokens: 12, completion_tokens: 20, total_tokens: 32 });
  });

  it('sends no usage chunk unless stream_options.include_usage is true', async () => {
    for (const body of [{ stream: true }, { stream: true, stream_options: { include_usage: false } }]) {
      const data = sseData(await (await post(base, body)).text());
      expect(data).toHaveLength(22);
      expect(data.some((line) => line.includes('"usage"'))).toBe(false);
    }
  });

  it('reads a large request body whole before answering, and rejects bodies that are not JSON', async () => {
    const big = { model: 'm', messages: [{ role: 'user', content: 'x'.repeat(2_000_000) }], stream: true };
    const data = sseData(await (await post(base, big)).text());
    expect(data.at(-1)).toBe('[DONE]');
    const bad = await post(base, '{not json');
    expect(bad.status).toBe(400);
    const missing = await fetch(`${base}/v1/nothing`);
    expect(missing.status).toBe(404);
  });

  it('spaces streamed events by chunk-delay-ms and honours --chunks and --latency-ms', async () => {
    const slow = await start({ chunkDelayMs: 20, chunks: 5, latencyMs: 30 });
    const started = performance.now();
    const response = await post(slow, { stream: true });
    const reader = response.body!.getReader();
    const arrivals: number[] = [];
    let text = '';
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      arrivals.push(performance.now() - started);
      text += decoder.decode(value, { stream: true });
    }
    const data = sseData(text);
    expect(data).toHaveLength(5 + 1 + 1);
    // 7 events: the first after the 30 ms latency, six more 20 ms apart → at least 30 + 6 × 20 ms in all.
    expect(arrivals[0]!).toBeGreaterThanOrEqual(29);
    expect(arrivals.at(-1)!).toBeGreaterThanOrEqual(30 + 6 * 20 - 5);
    expect(arrivals.length).toBeGreaterThanOrEqual(4);
  });
});
