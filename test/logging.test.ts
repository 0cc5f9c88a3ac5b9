/**
 * Guarantee 7: secrets never reach logs. Every log line of a gateway at debug level, through successful, streamed,
 * failing and admin requests, is searched for the API key, the admin token and the prompt and completion text.
 */
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

const prompt = 'my-secret-prompt-text about the merger';
let harness: TestGateway;
let output = '';
let key: string;
let completion = '';
let requestId: string | null = null;
let failedStatus: number | undefined;

beforeAll(async () => {
  const destination = new PassThrough();
  destination.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  harness = await startTestGateway(undefined, {}, { logger: createLogger({ level: 'debug', destination }) });
  key = (await harness.createTenantWithKey()).key;
  const client = harness.client(key);
  const { data, response } = await client.chat.completions
    .create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: prompt }], max_tokens: 12 })
    .withResponse();
  completion = data.choices[0]?.message.content ?? '';
  requestId = response.headers.get('x-request-id');
  const stream = await client.chat.completions.create({
    model: 'sim-pro-32k',
    messages: [{ role: 'user', content: prompt }],
    max_tokens: 5,
    stream: true,
  });
  for await (const chunk of stream) completion += chunk.choices[0]?.delta.content ?? '';
  await client.chat.completions
    .create({ model: 'no-such-model', messages: [{ role: 'user', content: prompt }] })
    .catch(() => undefined);
  await fetch(`${harness.url}/v1/models`, {
    headers: { authorization: 'Bearer tg-wrong-key-wrong-key-wrong-key-wrong-key-1234' },
  });
  // A fault of the gateway's own whose message quotes the prompt, as V8's JSON.parse quotes the text it failed on.
  for (const { upstream } of harness.gateway.catalog.get('sim-pro-32k')?.deployments ?? []) {
    upstream.complete = async () => JSON.parse(prompt);
  }
  failedStatus = await client.chat.completions
    .create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: prompt }] }, { maxRetries: 0 })
    .then(
      () => 200,
      (error: { status?: number }) => error.status,
    );
  await new Promise((resolve) => setTimeout(resolve, 100));
});
afterAll(async () => harness?.close());

describe('logs', () => {
  it('record requests (so this test can see them) but no key, admin token, prompt or completion', () => {
    expect(requestId).not.toBeNull();
    expect(output).toContain(requestId!);
    expect(output).not.toContain(key);
    expect(output).not.toContain(key.slice(3, 20));
    expect(output).not.toContain(harness.adminToken);
    expect(output).not.toContain('my-secret-prompt-text');
    expect(completion.length).toBeGreaterThan(10);
    expect(output).not.toContain(completion.trim().slice(0, 20));
    expect(output).not.toContain('tg-wrong-key');
  });

  it("log a gateway fault's error without the text its message quotes", () => {
    expect(failedStatus).toBe(500);
    const lines = output
      .split('\n')
      .filter((text) => text.includes('"internal error"'))
      .map((text) => JSON.parse(text));
    expect(lines).toMatchObject([
      { err: { code: 'internal_error', cause: { type: 'SyntaxError', message: expect.stringMatching(/JSON/) } } },
    ]);
    expect(lines[0].err.cause.message).toContain('[quoted text redacted]');
    expect(lines[0].err.cause.stack).toMatch(/^\s+at .*logging\.test\.ts/m);
    expect(output).not.toContain('my-secret');
  });
});
