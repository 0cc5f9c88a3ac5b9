/**
 * `tollgate serve` stopped with SIGTERM while it serves (a rolling deploy): the requests in flight run to their end
 * within `server.shutdown_grace_ms`, with one worker or several; those still running at the end of it end with a 503
 * `server_shutting_down` (a stream with that error event), billed for what was delivered and logged; nothing is
 * dropped; a second Ctrl-C does not wait.
 * Runs the built CLI (`npm test` builds first).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import OpenAI from 'openai';
import { Client, request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../src/store/create-store.js';
import { demoKeyOf, requireBuiltCli, type Served, serve, workspace } from './support/cli-process.js';
import { dropSchema, schemaUrl, uniqueSchema } from './support/postgres-schema.js';
import { pricedSimulatedConfig, startTestGateway } from './support/test-gateway.js';

const children: ChildProcess[] = [];

beforeAll(requireBuiltCli);
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** Separate processes, started and stopped several times: more than the default 30 s on a loaded CI host. */
const TEST_TIMEOUT_MS = 120_000;

/** 20 tokens a second per stream: a 40-token answer takes 2 s, a 4,000-token one 200 s. */
const slowFleet = (server: Record<string, unknown>) => ({
  ...pricedSimulatedConfig,
  server,
  upstreams: [
    {
      name: 'sim',
      type: 'simulated',
      replicas: 1,
      profile: { t_prefill_us: 1, t_fixed_ms: 50, t_seq_ms: 0, max_batch: 64 },
    },
  ],
});

const messages = [{ role: 'user' as const, content: 'Tell me a long story.' }];

/**
 * Opens a stream and resolves once its first content has arrived, with `rest`: what the rest of it will bring (in an
 * object, so awaiting this does not await the whole stream).
 */
async function openStream(client: OpenAI, maxTokens: number) {
  const stream = await client.chat.completions.create({
    model: 'sim-pro-32k',
    messages,
    max_tokens: maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  });
  const iterator = stream[Symbol.asyncIterator]();
  let chunks = 0;
  while (chunks === 0) {
    const next = await iterator.next();
    if (next.done) throw new Error('the stream ended before its first content');
    if (next.value.choices[0]?.delta.content) chunks += 1;
  }
  const rest = (async () => {
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        if (next.value.choices[0]?.delta.content) chunks += 1;
        finish = next.value.choices[0]?.finish_reason ?? finish;
        usage = next.value.usage ?? usage;
      }
      return { chunks, finish, usage, error: undefined };
    } catch (error: unknown) {
      return { chunks, finish, usage, error };
    }
  })();
  return { rest };
}

/** Stops `served` with `signal` and resolves with its exit code and how long it took, ms. */
async function stop(served: Served, signal: NodeJS.Signals = 'SIGTERM') {
  const started = Date.now();
  const exited = once(served.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  served.child.kill(signal);
  const [code] = await exited;
  return { code, ms: Date.now() - started };
}

/** The embedded store of a workspace. */
const sqliteOf = (dir: string) => `sqlite://${path.join(dir, 'data', 'tollgate.db')}`;

/** The request log of the stopped gateway's store, and its error-level log lines (none expected). */
async function afterwards(storeUrl: string, served: Served) {
  const store = await createStore(storeUrl);
  try {
    const records = await store.listRequestLogs({ limit: 100 });
    const errors = served
      .output()
      .split('\n')
      .filter((line) => /^\{"level":(50|60)/.test(line));
    return { records, errors };
  } finally {
    await store.close();
  }
}

async function refusesNewConnections(url: string): Promise<boolean> {
  try {
    await request(`${url}/healthz`, { headersTimeout: 2_000 });
    return false;
  } catch {
    return true;
  }
}

describe('stopping a serving gateway', { timeout: TEST_TIMEOUT_MS }, () => {
  it('lets a stream and a whole request in flight finish, takes no new connection, and records both', async () => {
    const dir = workspace(slowFleet({}));
    const served = await serve(dir, children);
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
    const { rest: streamed } = await openStream(client, 40);
    const whole = client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 30 });
    await new Promise((resolve) => setTimeout(resolve, 200));

    const stopping = stop(served);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await refusesNewConnections(served.url)).toBe(true);
    const stream = await streamed;
    expect(stream.error).toBeUndefined();
    expect(stream.finish).toBe('length');
    expect(stream.usage?.completion_tokens).toBe(40);
    expect((await whole).usage?.completion_tokens).toBe(30);
    const { code } = await stopping;
    expect(code).toBe(0);

    const { records, errors } = await afterwards(sqliteOf(dir), served);
    expect(errors).toEqual([]);
    const outcomes = records.map((record) => [record.stream, record.status, record.errorCode ?? null]);
    expect(outcomes.sort()).toEqual([
      [false, 200, null],
      [true, 200, null],
    ]);
    expect(records.map((record) => record.completionTokens).sort()).toEqual([30, 40]);
  });

  /**
   * Cluster mode: PostgreSQL for the ledger, Redis for admission, wallet reservations leased across processes. And
   * PostgreSQL alone: admission in process memory, reservations written to the database one by one.
   */
  const schema = uniqueSchema('shutdown');
  const postgresOnly = uniqueSchema('shutdown_pg');
  afterAll(async () => {
    await dropSchema(schema);
    await dropSchema(postgresOnly);
  });
  const stores = [
    { name: 'the embedded store', document: {}, storeUrl: sqliteOf },
    {
      name: 'PostgreSQL alone',
      document: { store: { url: schemaUrl(postgresOnly) } },
      storeUrl: () => schemaUrl(postgresOnly),
    },
    {
      name: 'PostgreSQL and Redis',
      document: {
        store: { url: schemaUrl(schema) },
        admission: { store: 'redis', redis_url: 'redis://127.0.0.1:6379', command_timeout_ms: 5000 },
      },
      storeUrl: () => schemaUrl(schema),
    },
  ];
  it.each(stores)(
    'stops what still runs when the grace is over with a 503 that says why, billed and logged ($name)',
    async ({ document, storeUrl }) => {
      const dir = workspace({ ...slowFleet({ shutdown_grace_ms: 500 }), ...document });
      const served = await serve(dir, children);
      const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
      const { rest: streamed } = await openStream(client, 4_000);
      const whole = client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 4_000 }).then(
        () => 'answered',
        (error: unknown) => (error instanceof OpenAI.APIError ? [error.status, error.code] : String(error)),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));

      const { code, ms } = await stop(served);
      expect(code).toBe(0);
      // The grace, then a few steps with deadlines of their own: far less than the 200 s the answers would take.
      expect(ms).toBeLessThan(20_000);
      // Both end with an answer that says why, rather than a dropped connection.
      const stream = await streamed;
      expect(stream.finish).toBeNull();
      expect(stream.error).toBeInstanceOf(OpenAI.APIError);
      expect((stream.error as InstanceType<typeof OpenAI.APIError>).message).toMatch(/shutting down/);
      expect(await whole).toEqual([503, 'server_shutting_down']);

      const { records, errors } = await afterwards(storeUrl(dir), served);
      expect(errors).toEqual([]);
      const cutStream = records.find((record) => record.stream);
      const cutWhole = records.find((record) => !record.stream);
      expect([cutStream?.status, cutStream?.errorCode]).toEqual([200, 'server_shutting_down']);
      expect(cutStream?.completionTokens).toBeGreaterThanOrEqual(stream.chunks);
      expect(cutStream?.completionTokens).toBeLessThan(4_000);
      expect(cutStream?.usageEstimated).toBe(true);
      expect([cutWhole?.status, cutWhole?.errorCode]).toEqual([503, 'server_shutting_down']);
      // Billed: what the stream delivered was rated and charged, the cut whole answer was not, nothing stays reserved.
      const store = await createStore(storeUrl(dir));
      try {
        const tenantId = cutStream!.tenantId!;
        const billed = await store.sumUsageEvents({ tenantId, start: 0, end: Date.now() + 1 });
        expect(billed.count).toBe(1);
        expect(billed.amount).toBeGreaterThan(0n);
        expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      } finally {
        await store.close();
      }
    },
  );

  it('with two workers, the primary waits for each to drain before it exits', async () => {
    const dir = workspace(slowFleet({ workers: 2 }));
    const served = await serve(dir, children);
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
    const streams = await Promise.all([openStream(client, 40), openStream(client, 40)]);
    const { code } = await stop(served);
    expect(code).toBe(0);
    const results = await Promise.all(streams.map((stream) => stream.rest));
    expect(results.map((result) => [result.error, result.finish, result.usage?.completion_tokens])).toEqual([
      [undefined, 'length', 40],
      [undefined, 'length', 40],
    ]);
    const { records, errors } = await afterwards(sqliteOf(dir), served);
    expect(errors).toEqual([]);
    expect(records.map((record) => [record.status, record.completionTokens])).toEqual([
      [200, 40],
      [200, 40],
    ]);
  });

  it('exits at once on a second Ctrl-C, without waiting for the grace', async () => {
    const dir = workspace(slowFleet({ shutdown_grace_ms: 60_000 }));
    const served = await serve(dir, children);
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
    const { rest: streamed } = await openStream(client, 4_000);
    const exited = once(served.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const started = Date.now();
    served.child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 500));
    served.child.kill('SIGINT');
    const [code] = await exited;
    expect(code).toBe(1);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(served.output()).toContain('second signal: exiting without waiting');
    expect((await streamed).finish).toBeNull();
  });
});

describe('a request that arrives while the gateway drains', () => {
  it('is refused with an OpenAI 503 and Connection: close, and recorded; the stream ahead of it finishes', async () => {
    const harness = await startTestGateway(slowFleet({}));
    let closed: Promise<void> | undefined;
    // Two requests on one connection: the second reaches the gateway while the first still streams.
    const connection = new Client(harness.url, { pipelining: 2 });
    try {
      const { key, tenantId } = await harness.createTenantWithKey({ credit: '100' });
      const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const body = (extra: object) => JSON.stringify({ model: 'sim-pro-32k', messages, ...extra });
      const streamed = await connection.request({
        path: '/v1/chat/completions',
        method: 'POST',
        headers,
        body: body({ max_tokens: 20, stream: true }),
      });
      expect(streamed.statusCode).toBe(200);
      closed = harness.close();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const late = connection.request({ path: '/v1/chat/completions', method: 'POST', headers, body: body({}) });

      const text = await streamed.body.text();
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const refused = await late;
      expect(refused.statusCode).toBe(503);
      expect(refused.headers.connection).toBe('close');
      expect(refused.headers['x-request-id']).toMatch(/^req_/);
      const error = ((await refused.body.json()) as { error: { code: string; type: string } }).error;
      expect([error.type, error.code]).toEqual(['server_error', 'server_shutting_down']);
      await closed;
      const store = await createStore(`sqlite://${path.join(harness.dataDir, 'tollgate.db')}`);
      const records = await store.listRequestLogs({ limit: 10 }).finally(() => store.close());
      const outcomes = records.map((record) => [record.status, record.errorCode ?? null]);
      expect(outcomes.sort()).toEqual([
        [200, null],
        [503, 'server_shutting_down'],
      ]);
      expect(records.find((record) => record.status === 200)?.tenantId).toBe(tenantId);
    } finally {
      await connection.close();
      await (closed ?? harness.close());
    }
  });
});
