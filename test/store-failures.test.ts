/**
 * What a client and an operator see when the store fails a read the request path needs (a key lookup, a plan), and
 * when something fails that nothing expected: a retryable 503 `store_unavailable`, counted and logged, or a 500
 * `internal_error` whose cause is in the log under the request's id.
 */
import { PassThrough } from 'node:stream';
import type OpenAI from 'openai';
import { APIError, toFile } from 'openai';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

let harness: TestGateway;
let logs = '';

beforeEach(async () => {
  logs = '';
  const destination = new PassThrough();
  destination.on('data', (chunk: Buffer) => {
    logs += chunk.toString();
  });
  harness = await startTestGateway(undefined, {}, { logger: createLogger({ level: 'info', destination }) });
});
afterEach(async () => harness?.close());

/** One short chat request through the official SDK, without retries: its status, code and request id. */
async function ask(
  key: string,
  stream = false,
): Promise<{ status: number; code: string | null | undefined; requestId: string | null }> {
  try {
    const { response } = await harness
      .client(key, { maxRetries: 0 })
      .chat.completions.create({
        model: 'sim-pro-32k',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 2,
        stream,
      })
      .withResponse();
    return { status: response.status, code: undefined, requestId: response.headers.get('x-request-id') };
  } catch (error: unknown) {
    if (!(error instanceof APIError)) throw error;
    return { status: error.status ?? 0, code: error.code, requestId: error.headers?.get('x-request-id') ?? null };
  }
}

/** The log lines (parsed) whose `msg` is `message`. */
function logLines(message: string): Array<Record<string, unknown>> {
  return logs
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === message);
}

async function failures(read: string, outcome: string): Promise<number> {
  const exposition = await (await fetch(`${harness.url}/metrics`)).text();
  const line = new RegExp(`^tollgate_store_read_failures_total\\{read="${read}",outcome="${outcome}"\\} (\\d+)$`, 'm');
  return Number(line.exec(exposition)?.[1] ?? 0);
}

const storeDown = () => Promise.reject(new Error('Connection terminated unexpectedly'));

describe('store failures on the request path', () => {
  it('answer a retryable 503 store_unavailable when the key cannot be looked up, counted and logged', async () => {
    const { key } = await harness.createTenantWithKey();
    const store = harness.gateway.store;
    const findKeyByHash = store.findKeyByHash;
    store.findKeyByHash = storeDown;
    expect(await ask(key)).toMatchObject({ status: 503, code: 'store_unavailable' });
    expect(await failures('key', 'refused')).toBe(1);
    expect(logLines('the store failed a request-path read: requests are refused with 503')).toMatchObject([
      { level: 40, read: 'key', outcome: 'refused', err: { message: 'Connection terminated unexpectedly' } },
    ]);
    store.findKeyByHash = findKeyByHash;
    expect(await ask(key)).toMatchObject({ status: 200 });
  });

  it('answer a retryable 503 store_unavailable when a plan was never read, counted', async () => {
    const { key } = await harness.createTenantWithKey();
    const store = harness.gateway.store;
    const getSetting = store.getSetting;
    store.getSetting = storeDown;
    expect(await ask(key)).toMatchObject({ status: 503, code: 'store_unavailable' });
    // The tenant's plan and the key's limits are read together: both failed.
    expect(await failures('plan', 'refused')).toBe(2);
    store.getSetting = getSetting;
    expect(await ask(key)).toMatchObject({ status: 200 });
  });

  it('answer a retryable 503 store_unavailable, logged with its cause, when an admin route finds the store down', async () => {
    const store = harness.gateway.store;
    const listTenants = store.listTenants;
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    store.listTenants = () => Promise.reject(reset);
    const response = await fetch(`${harness.url}/admin/v1/tenants`, {
      headers: { authorization: `Bearer ${harness.adminToken}` },
    });
    expect(response.status).toBe(503);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('store_unavailable');
    expect(logLines('store unavailable')).toMatchObject([
      { level: 40, requestId: response.headers.get('x-request-id'), err: { code: 'ECONNRESET' } },
    ]);
    expect(logLines('internal error')).toEqual([]);
    store.listTenants = listTenants;
    expect((await harness.admin('GET', '/tenants')).status).toBe(200);
  });

  it('log an unexpected failure with its cause under the request id, and answer 500 internal_error', async () => {
    const { key } = await harness.createTenantWithKey();
    harness.gateway.billing.reserve = () => Promise.reject(new TypeError('a bug nobody expected'));
    const whole = await ask(key);
    const streamed = await ask(key, true);
    for (const answer of [whole, streamed]) {
      expect(answer).toMatchObject({ status: 500, code: 'internal_error' });
      expect(answer.requestId).toMatch(/^req_/);
    }
    const cause = { type: 'TypeError', message: 'a bug nobody expected' };
    expect(logLines('internal error')).toMatchObject([
      { level: 50, requestId: whole.requestId, err: cause },
      { level: 50, requestId: streamed.requestId, err: cause },
    ]);
  });

  it('log a failure of its own after a stream opened under the request id, and end the stream with internal_error', async () => {
    const { key } = await harness.createTenantWithKey();
    for (const { upstream } of harness.gateway.catalog.get('sim-pro-32k')?.deployments ?? []) {
      const stream = upstream.stream.bind(upstream);
      upstream.stream = async (request) => {
        const opened = await stream(request);
        return { events: failingAfterFirst(opened.events, new TypeError('a bug nobody expected')) };
      };
    }
    const { data, response } = await harness
      .client(key, { maxRetries: 0 })
      .chat.completions.create({
        model: 'sim-pro-32k',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 8,
        stream: true,
      })
      .withResponse();
    let chunks = 0;
    let caught: unknown;
    try {
      for await (const _chunk of data) chunks++;
    } catch (error: unknown) {
      caught = error;
    }
    expect(response.status).toBe(200);
    expect(chunks).toBe(1);
    expect(caught).toBeInstanceOf(APIError);
    expect((caught as APIError).code).toBe('internal_error');
    expect(logLines('internal error')).toMatchObject([
      {
        level: 50,
        requestId: response.headers.get('x-request-id'),
        deployment: 'sim/pro-32k',
        err: { type: 'TypeError', message: 'a bug nobody expected' },
      },
    ]);
    // The upstream did nothing wrong: no upstream error is counted against it.
    const exposition = await (await fetch(`${harness.url}/metrics`)).text();
    expect(exposition).not.toMatch(/^tollgate_upstream_errors_total\{.*internal_error.*\} [1-9]/m);
  });

  it('log an unexpected failure of a batch line with its batch, and fail the line', async () => {
    const { key } = await harness.createTenantWithKey();
    harness.gateway.billing.reserve = () => Promise.reject(new TypeError('a bug nobody expected'));
    const client = harness.client(key);
    const batch = await oneLineBatch(client);
    await vi.waitFor(() => expect(logLines('internal error').length).toBeGreaterThan(0), { timeout: 10_000 });
    expect(logLines('internal error')[0]).toMatchObject({
      level: 50,
      batch: batch.id,
      err: { type: 'TypeError', message: 'a bug nobody expected' },
    });
    await vi.waitFor(
      async () =>
        expect((await client.batches.retrieve(batch.id)).request_counts).toEqual({ total: 1, completed: 0, failed: 1 }),
      { timeout: 10_000 },
    );
  });

  it('retry a batch line the store could not serve, and complete it', async () => {
    const { key } = await harness.createTenantWithKey();
    const billing = harness.gateway.billing;
    const reserve = billing.reserve;
    billing.reserve = () => {
      billing.reserve = reserve;
      return Promise.reject(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    };
    const client = harness.client(key);
    const batch = await oneLineBatch(client);
    await vi.waitFor(async () => expect((await client.batches.retrieve(batch.id)).status).toBe('completed'), {
      timeout: 10_000,
    });
    expect(billing.reserve).toBe(reserve);
    expect((await client.batches.retrieve(batch.id)).request_counts).toEqual({ total: 1, completed: 1, failed: 0 });
  });
});

/** A batch of one short chat line. */
async function oneLineBatch(client: OpenAI): Promise<OpenAI.Batches.Batch> {
  const line = { model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
  const input = `${JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: line })}\n`;
  const file = await client.files.create({ file: await toFile(Buffer.from(input), 'in.jsonl'), purpose: 'batch' });
  return client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
}

/** The events of `events` up to the first, then `error` thrown. */
async function* failingAfterFirst<T>(events: AsyncIterable<T>, error: Error): AsyncIterable<T> {
  for await (const event of events) {
    yield event;
    throw error;
  }
}
