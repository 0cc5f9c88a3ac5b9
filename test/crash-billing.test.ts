/**
 * Guarantee 3 under `kill -9`: a load of streaming requests through the official SDK, the gateway killed mid-load,
 * restarted; then the ledger is reconciled against the tokens the clients actually received. Completed requests are
 * billed exactly once; interrupted streams are billed at most what was delivered and at least the last checkpoint.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spoolDirectory } from '../src/app/left-settlements.js';
import { countTextTokens } from '../src/metering/token-counter.js';
import { createStore } from '../src/store/create-store.js';
import {
  completeThenKill,
  demoKeyOf,
  killHard,
  requireBuiltCli,
  serve,
  shortQuestions,
  workspace,
} from './support/cli-process.js';
import { startPostgresRelay } from './support/postgres-relay.js';
import { dropSchema, schemaUrl, uniqueSchema } from './support/postgres-schema.js';
import { fastSimulatedConfig, pricedSimulatedConfig, slowPricedSimulatedConfig } from './support/test-gateway.js';

const children: ChildProcess[] = [];
beforeAll(requireBuiltCli);
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** 100 tokens/s per stream: slow enough that streams are mid-way when the gateway dies. */
const slowFleet = slowPricedSimulatedConfig;
const tokensPerSecond = 100;

/** Each test starts `serve` twice and kills it once; on a loaded CI host that takes more than the default 30 s. */
const TEST_TIMEOUT_MS = 120_000;

describe('kill -9 mid-load', { timeout: TEST_TIMEOUT_MS }, () => {
  it('bills completed requests exactly and interrupted streams within [last checkpoint, delivered]', async () => {
    const dir = workspace(slowFleet);
    const first = await serve(dir, children);
    const client = new OpenAI({ baseURL: `${first.url}/v1`, apiKey: demoKeyOf(first.banner), maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: 'Tell me a long story.' }];

    const completed: string[] = [];
    for (let index = 0; index < 3; index++) {
      const { response } = await client.chat.completions
        .create({ model: 'sim-pro-32k', messages, max_tokens: 5 })
        .withResponse();
      completed.push(response.headers.get('x-request-id')!);
    }

    const streams = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const { data, response } = await client.chat.completions
          .create({ model: 'sim-pro-32k', messages, max_tokens: 2000, stream: true })
          .withResponse();
        const state = { requestId: response.headers.get('x-request-id')!, text: '', done: Promise.resolve() };
        state.done = (async () => {
          try {
            for await (const chunk of data) state.text += chunk.choices[0]?.delta.content ?? '';
          } catch {
            // the gateway died
          }
        })();
        return state;
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const killed = killHard(first.child);
    await Promise.all(streams.map((stream) => stream.done));
    await killed;

    // The restart bills the checkpoints of the dead process and clears its reservations.
    await serve(dir, children);
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    try {
      const events = await store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 10_000 });
      const byId = new Map(events.map((event) => [event.requestId, event]));
      for (const requestId of completed) {
        expect(byId.get(requestId)).toMatchObject({ outputTokens: 5, estimated: false });
      }
      for (const stream of streams) {
        const delivered = countTextTokens(stream.text);
        const event = byId.get(stream.requestId);
        expect(event, `stream ${stream.requestId} was not billed`).toBeDefined();
        expect(delivered).toBeGreaterThan(0);
        expect(event!.outputTokens).toBeLessThanOrEqual(delivered);
        // The last checkpoint is at most one interval (plus scheduling slack) behind what was delivered.
        expect(event!.outputTokens).toBeGreaterThanOrEqual(delivered - 2 * tokensPerSecond);
      }
      expect(events.length).toBe(completed.length + streams.length);
      const tenantId = events[0]!.tenantId;
      const wallet = await store.getWallet(tenantId);
      const spent = events.reduce((sum, event) => sum + event.amount, 0n);
      expect(wallet?.reserved).toBe(0n);
      expect(wallet?.balance).toBe(10_000_000_000n - spent);
    } finally {
      await store.close();
    }
  });
});

describe('kill -9 on PostgreSQL', { timeout: TEST_TIMEOUT_MS }, () => {
  const schema = uniqueSchema('crash_pg');
  afterAll(async () => dropSchema(schema));

  it('keeps the row and the usage event of every completed request, each billed once', async () => {
    const dir = workspace({ ...pricedSimulatedConfig, store: { url: schemaUrl(schema) } });
    const ids = await completeThenKill(await serve(dir, children), 40);

    const store = await createStore(schemaUrl(schema));
    try {
      const logged = new Set((await store.listRequestLogs({ limit: 1000 })).map((record) => record.requestId));
      expect(ids.filter((id) => !logged.has(id))).toEqual([]);
      const events = await store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 1000 });
      const billed = events.filter((event) => ids.includes(event.requestId));
      expect(billed.map((event) => event.requestId).sort()).toEqual([...ids].sort());
      expect(billed.every((event) => event.outputTokens === 3 && event.amount > 0n)).toBe(true);
      const wallet = await store.getWallet(billed[0]!.tenantId);
      const spent = events.reduce((sum, event) => sum + event.amount, 0n);
      expect(wallet?.balance).toBe(10_000_000_000n - spent);
    } finally {
      await store.close();
    }
  });
});

describe('kill -9 while PostgreSQL is unreachable', { timeout: TEST_TIMEOUT_MS }, () => {
  const schema = uniqueSchema('crash_outage');
  afterAll(async () => dropSchema(schema));

  it('keeps every completed request in the local spool and settles it into PostgreSQL at the next start', async () => {
    const relay = await startPostgresRelay();
    try {
      const url = relay.through(schemaUrl(schema));
      const dir = workspace({ ...fastSimulatedConfig, store: { url } });
      const first = await serve(dir, children);
      // No retries: a gateway that died when PostgreSQL reset the connection a settlement held fails here.
      const ask = shortQuestions(first);
      const before = [await ask(0), await ask(1)];
      relay.cut();
      const during: string[] = [];
      for (let index = 0; index < 3; index++) during.push(...(await Promise.all([2, 3, 4, 5].map(ask))));
      // Answered while PostgreSQL was gone: each answer waited for its settlement to reach the spool on disk.
      const spooled = readdirSync(spoolDirectory(path.join(dir, 'data'))).filter((name) => name.endsWith('.ndjson'));
      expect(spooled.length).toBeGreaterThan(0);
      const metrics = await (await fetch(`${first.url}/metrics`)).text();
      expect(metrics).toContain(`tollgate_request_log_spooled_total ${during.length}`);
      expect(metrics).toContain(`tollgate_request_log_spool_pending ${during.length}`);
      await killHard(first.child);

      relay.restore();
      await serve(dir, children);
      expect(readdirSync(spoolDirectory(path.join(dir, 'data')))).toEqual([]);
      const store = await createStore(schemaUrl(schema));
      try {
        const logged = await store.listRequestLogs({ limit: 1000 });
        expect(logged.map((record) => record.requestId).sort()).toEqual([...before, ...during].sort());
        // The spooled rows are the requests as answered, not just their ids.
        const spooledRows = logged.filter((record) => during.includes(record.requestId));
        expect(spooledRows.every((record) => record.status === 200 && record.completionTokens === 3)).toBe(true);
      } finally {
        await store.close();
      }
    } finally {
      await relay.close();
    }
  });
});
