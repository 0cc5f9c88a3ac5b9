/**
 * Hostile input never produces a 5xx from the gateway itself, never crashes it, and changes nothing.
 */
import fc from 'fast-check';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

let harness: TestGateway;
let key: string;

beforeAll(async () => {
  harness = await startTestGateway({
    ...(await import('./support/test-gateway.js')).fastSimulatedConfig,
    server: { body_limit_bytes: 64 * 1024 },
  });
  key = (await harness.createTenantWithKey()).key;
});
afterAll(async () => harness?.close());

const routes = [
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/responses',
  '/v1/responses/input_tokens',
  '/v1/responses/compact',
  '/v1/conversations',
] as const;

async function post(route: string, body: string | Buffer, contentType = 'application/json') {
  const response = await request(`${harness.url}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': contentType },
    body,
  });
  const text = await response.body.text();
  return { status: response.statusCode, text };
}

function expectOpenAIError(result: { status: number; text: string }) {
  expect(result.status, result.text).toBeGreaterThanOrEqual(200);
  expect(result.status, result.text).toBeLessThan(500);
  if (result.status >= 400) {
    const body = JSON.parse(result.text) as { error: { message: unknown; type: unknown; code: unknown } };
    expect(typeof body.error.message).toBe('string');
    expect(typeof body.error.type).toBe('string');
  }
}

describe('fuzzed bad input', () => {
  it('random Responses input items, tools and formats', async () => {
    const loose = fc.jsonValue({ maxDepth: 3 });
    const item = fc.oneof(
      loose,
      fc.record({
        type: fc.oneof(
          fc.constantFrom('message', 'function_call', 'function_call_output', 'reasoning', 'compaction', 'x'),
          loose,
        ),
        role: fc.oneof(fc.constantFrom('user', 'assistant', 'developer', 'system', 'tool'), loose),
        content: fc.oneof(
          fc.string(),
          fc.array(
            fc.record({ type: fc.constantFrom('input_text', 'input_image', 'output_text', 'refusal'), text: loose }),
          ),
          loose,
        ),
        call_id: loose,
        name: loose,
        arguments: loose,
        output: loose,
        encrypted_content: fc.oneof(fc.constantFrom('tgc1.AAAAAAAA.AAAA', 'tgc1.'), fc.string(), loose),
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          {
            model: fc.constant('sim-pro-32k'),
            input: fc.oneof(fc.string(), fc.array(item, { maxLength: 4 })),
            tools: fc.array(
              fc.record({ type: fc.constantFrom('function', 'web_search'), name: loose, parameters: loose }),
            ),
            tool_choice: loose,
            text: fc.record({ format: loose }),
            max_output_tokens: fc.oneof(fc.integer({ min: -5, max: 64 }), loose),
            stream: fc.boolean(),
            store: fc.oneof(fc.boolean(), loose),
            previous_response_id: fc.oneof(fc.constant('resp_unknown'), loose),
            conversation: fc.oneof(fc.constant('conv_unknown'), fc.record({ id: loose }), loose),
          },
          { requiredKeys: ['model', 'input'] },
        ),
        async (body) => {
          expectOpenAIError(await post('/v1/responses', JSON.stringify(body)));
          expectOpenAIError(await post('/v1/responses/input_tokens', JSON.stringify(body)));
          const { model, input, previous_response_id } = body;
          expectOpenAIError(
            await post('/v1/responses/compact', JSON.stringify({ model, input, previous_response_id })),
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it('random ids and queries on stored responses', async () => {
    const made = await post(
      '/v1/responses',
      JSON.stringify({ model: 'sim-pro-32k', input: 'x', max_output_tokens: 16 }),
    );
    const id = (JSON.parse(made.text) as { id: string }).id;
    const text = fc.oneof(fc.string(), fc.constantFrom('', '0', '-1', '101', '1e1', 'asc', 'desc', id));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constant(id), fc.string({ minLength: 1 })),
        fc.dictionary(fc.constantFrom('limit', 'order', 'after', 'stream', 'include[]'), text),
        fc.constantFrom('GET', 'DELETE', 'GET input_items'),
        async (responseId, query, action) => {
          const path = `/v1/responses/${encodeURIComponent(responseId)}${action === 'GET input_items' ? '/input_items' : ''}`;
          const response = await request(`${harness.url}${path}?${new URLSearchParams(query)}`, {
            method: action === 'DELETE' && responseId !== id ? 'DELETE' : 'GET',
            headers: { authorization: `Bearer ${key}` },
          });
          expectOpenAIError({ status: response.statusCode, text: await response.body.text() });
        },
      ),
      { numRuns: 150 },
    );
    // Deleting was tried on other ids only: the response is still there.
    const kept = await request(`${harness.url}/v1/responses/${id}`, { headers: { authorization: `Bearer ${key}` } });
    expect(kept.statusCode).toBe(200);
    await kept.body.text();
  });

  it('random JSON values as bodies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), fc.jsonValue({ maxDepth: 4 }), async (route, value) => {
        expectOpenAIError(await post(route, JSON.stringify(value)));
      }),
      { numRuns: 150 },
    );
  });

  it('random objects shaped like requests, with wrong types in known fields', async () => {
    const field = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined));
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.record({
          model: fc.oneof(fc.constantFrom('sim-pro-32k', 'sim-embed', 'nope'), fc.jsonValue({ maxDepth: 1 })),
          messages: field,
          prompt: field,
          input: field,
          max_tokens: fc.oneof(fc.integer({ min: -5, max: 40 }), fc.jsonValue({ maxDepth: 1 })),
          stream: fc.oneof(fc.boolean(), fc.jsonValue({ maxDepth: 1 })),
          temperature: field,
          stream_options: field,
        }),
        async (route, body) => {
          expectOpenAIError(await post(route, JSON.stringify(body)));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('broken UTF-8, binary garbage and truncated JSON', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), fc.uint8Array({ maxLength: 512 }), async (route, bytes) => {
        expectOpenAIError(await post(route, Buffer.from(bytes)));
      }),
      { numRuns: 100 },
    );
    const valid = JSON.stringify({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'héllo wörld' }] });
    const bytes = Buffer.from(valid);
    for (let cut = 1; cut < bytes.length; cut += 7) {
      expectOpenAIError(await post('/v1/chat/completions', bytes.subarray(0, cut)));
    }
    const lone = Buffer.concat([
      Buffer.from('{"model":"sim-pro-32k","messages":[{"role":"user","content":"'),
      Buffer.from([0xc3, 0x28, 0xff]),
      Buffer.from('"}]}'),
    ]);
    expectOpenAIError(await post('/v1/chat/completions', lone));
  });

  it('wrong content types and huge bodies', async () => {
    const body = JSON.stringify({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }] });
    for (const contentType of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/xml',
    ]) {
      expectOpenAIError(await post('/v1/chat/completions', body, contentType));
    }
    const huge = await post(
      '/v1/chat/completions',
      JSON.stringify({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'x'.repeat(1_000_000) }] }),
    );
    expect(huge.status).toBe(413);
    const deep = await post('/v1/chat/completions', `${'['.repeat(20_000)}${']'.repeat(20_000)}`);
    expect([400, 413]).toContain(deep.status);
  });

  it('is still healthy and serving afterwards', async () => {
    expect((await request(`${harness.url}/healthz`)).statusCode).toBe(200);
    const ok = await post(
      '/v1/chat/completions',
      JSON.stringify({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }),
    );
    expect(ok.status).toBe(200);
  });
});
