/**
 * Cluster mode with real processes: several `tollgate serve` processes sharing PostgreSQL and Redis enforce one
 * tenant limit together; when Redis dies, fail-closed refuses with 503 and fail-open keeps serving with per-process
 * limits — and the ledger records every request that ran either way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { countPromptTokens } from '../src/metering/token-counter.js';
import { createStore } from '../src/store/create-store.js';
import {
  adminApi,
  demoKeyOf,
  expectRevokedOnEveryWorkerAtOnce,
  KEY_CACHE_TTL_MS,
  requireBuiltCli,
  runCli,
  serve,
  workspace,
} from './support/cli-process.js';
import { clearOfMonthEnd } from './support/month-boundary.js';
import { startPostgresRelay } from './support/postgres-relay.js';
import { dropSchema, schemaUrl, uniqueSchema } from './support/postgres-schema.js';
import { pricedSimulatedConfig, slowPricedSimulatedConfig } from './support/test-gateway.js';
import { startWebhookReceiver } from './support/webhook-receiver.js';

const children: ChildProcess[] = [];
beforeAll(requireBuiltCli);
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

const pgUrl = schemaUrl;
const messages = [{ role: 'user', content: 'cluster' }];

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  children.push(redis);
  for (let attempt = 0; attempt < 50; attempt++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) return redis;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('redis-server did not start');
}

/** POSTs `body` to the admin API of the gateway at `url`; the parsed answer (a tenant or a key). */
function adminPoster(url: string, adminToken: string) {
  return async (path: string, body: unknown) =>
    (await (
      await fetch(`${url}/admin/v1${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    ).json()) as { id: string; key: string };
}

async function chat(url: string, key: string) {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-pro-32k', messages, max_tokens: 2 }),
  });
  const body = (await response.json()) as { error?: { code: string; message: string } };
  return { status: response.status, code: body.error?.code, message: body.error?.message };
}

/**
 * A streamed chat request read to its end: its status and error code, and whether a 200 ended with `[DONE]` (a
 * stream cut short would not).
 */
async function chatStream(url: string, key: string) {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-pro-32k', messages, max_tokens: 2, stream: true }),
  });
  const text = await response.text();
  if (response.status === 200) return { status: 200, done: text.trimEnd().endsWith('data: [DONE]') };
  const body = JSON.parse(text) as { error?: { code: string; message: string } };
  return { status: response.status, code: body.error?.code, message: body.error?.message };
}

/** The error-level log lines the processes printed: what a failing assertion about their answers shows. */
function errorLogs(processes: Array<{ output: () => string }>): string {
  const lines = processes.flatMap((served) => served.output().split('\n'));
  return lines.filter((line) => /"level":(50|60)/.test(line)).join('\n');
}

/**
 * Each test starts two or three gateway processes and waits for what they tell each other: on a loaded host, more
 * than the default 30 s per test.
 */
const TEST_TIMEOUT_MS = 120_000;

/** How long to wait for something another process does asynchronously (a ledger commit, a pub/sub message). */
const eventually = { timeout: 10_000, interval: 20 };

/**
 * The shared Redis of cluster mode. A generous command timeout: a loaded host's slow event loop is not a Redis outage
 * (these tests are not about one).
 */
const withRedis = { store: 'redis', redis_url: 'redis://127.0.0.1:6379', command_timeout_ms: 5000 };
/** No Redis: the processes share PostgreSQL only, and hear each other over LISTEN/NOTIFY. */
const postgresOnly = { store: 'memory' };
type Sharing = typeof withRedis | typeof postgresOnly;

/**
 * Two `serve` processes in cluster mode on `storeUrl` (and the shared Redis unless `admission` is `postgresOnly`),
 * with a new tenant that has a key and 100 CNY; `admin` calls the first process's admin API (`adminToken` is every
 * process's).
 */
async function twoProcessesWithTenant(
  document: Record<string, unknown>,
  storeUrl: string,
  name: string,
  admission: Sharing = withRedis,
) {
  const dir = workspace({ ...document, store: { url: storeUrl }, admission });
  const first = await serve(dir, children);
  const second = await serve(dir, children);
  const adminToken = /Admin token: (\S+)/.exec(first.banner)![1]!;
  const call = adminApi(first.url, adminToken);
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await call(method, path, body);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const tenantId = (await admin('POST', '/tenants', { name: `${name}-${Date.now()}` })).body.id as string;
  const key = (await admin('POST', `/tenants/${tenantId}/keys`, {})).body.key as string;
  expect((await admin('POST', `/tenants/${tenantId}/credits`, { amount: '100', currency: 'CNY' })).status).toBe(201);
  return { first, second, admin, adminToken, tenantId, key };
}

/**
 * Waits until the budgets set so far through `admin` have reached the process at `url`, without a request of the
 * tenants under test (which would change their spend): gives a new probe tenant a hard budget too small for any
 * request, after those budgets, and asks with the probe's key until it is refused. A reload that brings the probe's
 * budget reads every budget stored before it.
 */
async function budgetsReached(
  admin: Awaited<ReturnType<typeof twoProcessesWithTenant>>['admin'],
  url: string,
): Promise<void> {
  const probeId = (await admin('POST', '/tenants', { name: `probe-${Date.now()}` })).body.id as string;
  const probeKey = (await admin('POST', `/tenants/${probeId}/keys`, {})).body.key as string;
  expect((await admin('POST', `/tenants/${probeId}/credits`, { amount: '100', currency: 'CNY' })).status).toBe(201);
  const set = await admin('PUT', `/tenants/${probeId}/billing`, {
    mode: 'prepaid',
    budget: { monthly_limit: '0.000000001', enforcement: 'hard' },
  });
  expect(set.status).toBe(200);
  await vi.waitFor(
    async () => expect(await chat(url, probeKey)).toMatchObject({ status: 429, code: 'insufficient_quota' }),
    eventually,
  );
}

/**
 * A price version and a hard budget set through the first process take effect in the second at once (over the bus,
 * not at the 30 s refresh), and so does a key revoked through it (not at the cache TTL).
 */
async function announcesChangesAtOnce(storeUrl: string, admission: Sharing): Promise<void> {
  const { first, second, admin, adminToken, tenantId, key } = await twoProcessesWithTenant(
    pricedSimulatedConfig,
    storeUrl,
    'announce',
    admission,
  );

  // A version posted to the first process prices the second process's requests once it takes effect.
  const effectiveFrom = Date.now() + 1500;
  const posted = await admin('POST', '/prices', {
    id: 'v-announced',
    effective_from: new Date(effectiveFrom).toISOString(),
    models: {
      ...pricedSimulatedConfig.pricing.versions[0]!.models,
      'sim-pro-32k': { input: '1000', output: '1000' },
    },
  });
  expect(posted.status).toBe(201);
  // The second process has the version (read-only: its price book as the admin API shows it)...
  await vi.waitFor(async () => {
    const response = await fetch(`${second.url}/admin/v1/prices`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const book = (await response.json()) as { in_force: Array<{ id: string }>; scheduled: Array<{ id: string }> };
    // Scheduled until it takes effect, then in force.
    const versions = [...book.in_force, ...book.scheduled];
    expect(versions.map((version) => version.id)).toContain('v-announced');
  }, eventually);
  // ...and it is in effect.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, effectiveFrom - Date.now()) + 100));
  expect((await chat(second.url, key)).status).toBe(200);
  const store = await createStore(storeUrl);
  try {
    const listed = () => store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 10 });
    await vi.waitFor(async () => expect((await listed()).length).toBeGreaterThanOrEqual(1), eventually);
    const events = await listed();
    expect(events.map((event) => event.priceVersion)).toEqual(['v-announced']);
  } finally {
    await store.close();
  }

  // A hard budget set through the first process refuses in the second at once (not after a refresh).
  const budget = await admin('PUT', `/tenants/${tenantId}/billing`, {
    mode: 'prepaid',
    budget: { monthly_limit: '0.000000001', enforcement: 'hard' },
  });
  expect(budget.status).toBe(200);
  // Within the deadline, far below the 30 s refresh that would bring it otherwise.
  await budgetsReached(admin, second.url);
  expect(await chat(second.url, key)).toMatchObject({ status: 429, code: 'insufficient_quota' });

  // A key revoked through the first process stops working in the second at once (not when its cache entry expires).
  await expectRevocationHeardAtOnce(first.url, adminToken, tenantId, [second.url]);
}

/**
 * Creates a key of `tenantId` through the process at `adminUrl`, has each process at `urls` cache it, revokes it
 * through the first, and expects every one to refuse it before its cache entry could have gone stale: the bus told
 * them, not the cache TTL.
 */
async function expectRevocationHeardAtOnce(adminUrl: string, adminToken: string, tenantId: string, urls: string[]) {
  const admin = adminApi(adminUrl, adminToken);
  const created = (await (await admin('POST', `/tenants/${tenantId}/keys`, {})).json()) as {
    id: string;
    key: string;
  };
  const models = (url: string) => fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${created.key}` } });
  // The processes cache the key from here on, until this time + KEY_CACHE_TTL_MS at the earliest.
  const cachedFrom = Date.now();
  for (const url of urls) expect((await models(url)).status).toBe(200);
  expect((await admin('DELETE', `/keys/${created.id}`)).status).toBe(200);
  // Read-only requests until the revocation has arrived, however slowly the loaded host delivers it...
  for (const url of urls) await vi.waitFor(async () => expect((await models(url)).status).toBe(401), eventually);
  // ...yet before any cache entry went stale.
  expect(Date.now() - cachedFrom).toBeLessThan(KEY_CACHE_TTL_MS);
}

/** Sum of a counter's series with `labels` in a Prometheus text exposition (0 when it has none yet). */
function counterValue(exposition: string, name: string, labels: string): number {
  let total = 0;
  for (const line of exposition.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(labels)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/**
 * The first process leases 9 requests' worth of a 20-request wallet for its one request; the second spends the rest,
 * and is refused only when the first has given its unused lease back (asked over the bus): the wallet is spent to
 * its last request.
 */
async function spendsWalletToLastRequest(admission: Sharing): Promise<void> {
  // A schema of its own: another test of this suite posts a new price for the model.
  const leaseSchema = uniqueSchema('cluster_leases');
  try {
    const { first, second, admin } = await twoProcessesWithTenant(
      // A loaded machine may take longer than the default 250 ms to answer a lease-return round.
      { ...pricedSimulatedConfig, billing: { lease_return_timeout_ms: 10_000 } },
      pgUrl(leaseSchema),
      'leases',
      admission,
    );
    const quote = BigInt(countPromptTokens('chat', { messages })) * 800n + 2n * 2000n; // sim-pro-32k, max_tokens 2
    const tenantId = (await admin('POST', '/tenants', { name: `leases-${Date.now()}` })).body.id as string;
    const key = (await admin('POST', `/tenants/${tenantId}/keys`, {})).body.key as string;
    const credit = (Number(quote * 20n) / 1e9).toFixed(9);
    expect((await admin('POST', `/tenants/${tenantId}/credits`, { amount: credit, currency: 'CNY' })).status).toBe(201);
    // The first process leases 9 requests' worth for its one request and keeps 8 unused for a while.
    expect(await chat(first.url, key)).toMatchObject({ status: 200 });
    // The second spends the wallet, faster than the first gives its lease back on its own (every 250 ms).
    let passed = 1;
    let last = await chat(second.url, key);
    while (last.status === 200 && passed < 40) {
      passed += 1;
      last = await chat(second.url, key);
    }
    expect(last).toMatchObject({ status: 429, code: 'insufficient_quota' });
    // Refused only once the wallet could not cover another request: the first's unused lease came back first.
    expect(passed).toBe(20);
    // The second process's 19 requests reserved from leases: a few store writes, none for a request of its own.
    const exposition = await (await fetch(`${second.url}/metrics`)).text();
    const writes = (kind: string) => counterValue(exposition, 'tollgate_wallet_reservation_writes_total', kind);
    expect(writes('kind="lease"')).toBeGreaterThanOrEqual(1);
    expect(writes('kind="request"')).toBe(0);
    const balance = await admin('GET', `/tenants/${tenantId}/balance`);
    expect(balance.body).toMatchObject({ balance: '0', reserved: '0' });
  } finally {
    await dropSchema(leaseSchema);
  }
}

/**
 * Two processes under load (8 clients, half of them streaming) on PostgreSQL through a relay, and a private Redis
 * when `sharesRedis`: twice every PostgreSQL connection is reset (and new ones refused for 200 ms), and Redis drops
 * every client. Every answer is a 200 (a stream's whole) or a retryable 503, no process dies, and the ledger bills
 * every answer exactly once.
 */
async function billsEveryAnswerOnceThroughOutages(sharesRedis: boolean): Promise<void> {
  const relay = await startPostgresRelay();
  const redisPort = sharesRedis ? await freePort() : undefined;
  if (redisPort !== undefined) await startRedis(redisPort);
  const probe = redisPort === undefined ? undefined : new Redis(redisPort, '127.0.0.1');
  const chaosSchema = uniqueSchema('cluster_chaos');
  try {
    const dir = workspace({
      ...pricedSimulatedConfig,
      store: { url: relay.through(pgUrl(chaosSchema)) },
      admission:
        redisPort === undefined
          ? postgresOnly
          : { store: 'redis', redis_url: `redis://127.0.0.1:${redisPort}`, command_timeout_ms: 5000 },
      billing: { reservation_owner_timeout_ms: 1500 },
    });
    const first = await serve(dir, children);
    const second = await serve(dir, children);
    const key = demoKeyOf(first.banner);
    const answers: Array<{ status: number; code?: string; done?: boolean }> = [];
    const failures: unknown[] = [];
    let loading = true;
    // Each process gets two clients asking whole answers and two streaming theirs.
    const loops = Array.from({ length: 8 }, async (_, index) => {
      const url = index % 2 === 0 ? first.url : second.url;
      const ask = index % 4 < 2 ? chat : chatStream;
      while (loading) {
        try {
          answers.push(await ask(url, key));
        } catch (error: unknown) {
          // A connection refused or reset: the gateway process died.
          failures.push(error);
          return;
        }
      }
    });
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    for (let round = 0; round < 2; round++) {
      await pause(400);
      // A PostgreSQL restart: every connection reset (without Redis, the LISTEN connections of the invalidation
      // and lease-return channels too), new ones refused for a while.
      relay.cut();
      await pause(200);
      relay.restore();
      await pause(400);
      // Redis drops every client, the subscribers of the invalidation and lease-return channels included.
      await probe?.call('client', 'kill', 'type', 'normal');
      await probe?.call('client', 'kill', 'type', 'pubsub');
    }
    await pause(400);
    loading = false;
    await Promise.all(loops);
    expect(failures).toEqual([]);
    expect([first.child.exitCode, second.child.exitCode]).toEqual([null, null]);
    // An answer is a 200, or a retryable 503 while a store reconnects: Redis for admission (the default fails
    // closed), PostgreSQL for a wallet reservation, a key lookup or a plan this process never read. Never a 500, and
    // never a wallet refused as empty.
    const served = answers.filter((answer) => answer.status === 200).length;
    const unavailable = ['admission_store_unavailable', 'billing_store_unavailable', 'store_unavailable'];
    const other = answers.filter((answer) => answer.status !== 200 && !unavailable.includes(answer.code ?? ''));
    expect(other, errorLogs([first, second])).toEqual([]);
    // Every stream that started ended whole.
    expect(answers.filter((answer) => answer.done === false)).toEqual([]);
    expect(answers.filter((answer) => answer.done === true).length).toBeGreaterThan(10);
    expect(answers.filter((answer) => answer.status === 503).length).toBe(answers.length - served);
    // Each billing refusal is counted by the process that answered it.
    const counted = async (url: string) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      return Number(/^tollgate_billing_store_unavailable_total (\d+)$/m.exec(text)?.[1]);
    };
    const billingRefusals = answers.filter((answer) => answer.code === 'billing_store_unavailable').length;
    expect((await counted(first.url)) + (await counted(second.url))).toBe(billingRefusals);
    expect(served).toBeGreaterThan(20);

    // A billing read settles both processes and has them give back their leases. A store call on a hold whose
    // connection broke may have committed or not: its owner was retired then, and is swept after its timeout.
    const reserved = async () => {
      const response = await fetch(`${second.url}/v1/billing/balance`, {
        headers: { authorization: `Bearer ${key}` },
      });
      return ((await response.json()) as { reserved: string }).reserved;
    };
    await vi.waitFor(async () => expect(await reserved()).toBe('0'), eventually);
    const store = await createStore(pgUrl(chaosSchema));
    try {
      const events = await store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 100_000 });
      expect(events).toHaveLength(served);
      expect(new Set(events.map((event) => event.requestId)).size).toBe(served);
      const wallet = await store.getWallet(events[0]!.tenantId);
      const spent = events.reduce((sum, event) => sum + event.amount, 0n);
      expect(wallet).toMatchObject({ balance: 10_000_000_000n - spent, reserved: 0n });
    } finally {
      await store.close();
    }

    // The buses between the processes lost their connections and listen again: a key revoked through one stops
    // working in the other at once.
    const adminToken = /Admin token: (\S+)/.exec(first.banner)![1]!;
    const tenantId = (
      (await (
        await fetch(`${first.url}/admin/v1/tenants`, { headers: { authorization: `Bearer ${adminToken}` } })
      ).json()) as { data: Array<{ id: string; name: string }> }
    ).data.find((tenant) => tenant.name === 'demo')!.id;
    await expectRevocationHeardAtOnce(first.url, adminToken, tenantId, [second.url]);
    if (!sharesRedis) {
      // Without Redis, the relay's resets reached the buses' LISTEN connections: each process counted its losses.
      for (const url of [first.url, second.url]) {
        const exposition = await (await fetch(`${url}/metrics`)).text();
        expect(
          counterValue(exposition, 'tollgate_invalidation_bus_failures_total', 'bus="postgres"'),
        ).toBeGreaterThanOrEqual(1);
      }
    }
  } finally {
    probe?.disconnect();
    await relay.close();
    await dropSchema(chaosSchema);
  }
}

describe('cluster mode on PostgreSQL alone: no Redis, processes hear each other over LISTEN/NOTIFY', {
  timeout: TEST_TIMEOUT_MS,
}, () => {
  const schema = uniqueSchema('cluster_pg');
  afterAll(async () => dropSchema(schema));

  it('announces price versions, budgets and key revocations made through one process to the other at once', async () => {
    await announcesChangesAtOnce(pgUrl(schema), postgresOnly);
  });

  it('leases wallet funds, and has the other process give back its unused lease before refusing', async () => {
    await spendsWalletToLastRequest(postgresOnly);
  });

  it('keeps serving and bills every answer once while PostgreSQL drops every connection under load', async () => {
    await billsEveryAnswerOnceThroughOutages(false);
  });

  it('has running gateways apply at once a key revoked and a plan set by the command line in the store', async () => {
    const dir = workspace({ ...pricedSimulatedConfig, store: { url: pgUrl(schema) }, admission: postgresOnly });
    const gateway = await serve(dir, children);
    const adminToken = /Admin token: (\S+)/.exec(gateway.banner)![1]!;
    const admin = adminPoster(gateway.url, adminToken);
    const tenant = await admin('/tenants', { name: `cli-${Date.now()}` });
    const revoked = await admin(`/tenants/${tenant.id}/keys`, {});
    const kept = await admin(`/tenants/${tenant.id}/keys`, {});
    await admin(`/tenants/${tenant.id}/credits`, { amount: '100', currency: 'CNY' });
    const models = (key: string) => fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    // The gateway caches the key and the tenant's plan (no limit) from here on, for KEY_CACHE_TTL_MS at least.
    const cachedFrom = Date.now();
    expect((await models(revoked.key)).status).toBe(200);
    expect((await chat(gateway.url, kept.key)).status).toBe(200);

    expect(runCli(dir, ['keys', 'revoke', revoked.id]).status).toBe(0);
    expect((await models(revoked.key)).status).toBe(401);
    expect(runCli(dir, ['plans', 'set', '--tenant', tenant.id, '--rpm', '1']).status).toBe(0);
    // The cached plan had no limit: under it both would pass. Under the new one, one a minute.
    expect(await chat(gateway.url, kept.key)).toMatchObject({ status: 200 });
    expect(await chat(gateway.url, kept.key)).toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
    expect(Date.now() - cachedFrom).toBeLessThan(KEY_CACHE_TTL_MS);
  });

  it('reads and goes on from a stored response, and a conversation, through any process, at once', async () => {
    const document = { ...pricedSimulatedConfig, store: { url: pgUrl(schema) }, admission: postgresOnly };
    const [one, two] = [await serve(workspace(document), children), await serve(workspace(document), children)];
    const adminToken = /Admin token: (\S+)/.exec(one.banner)![1]!;
    const admin = adminPoster(one.url, adminToken);
    const tenant = await admin('/tenants', { name: `responses-${Date.now()}` });
    const { key } = await admin(`/tenants/${tenant.id}/keys`, {});
    await admin(`/tenants/${tenant.id}/credits`, { amount: '100', currency: 'CNY' });
    const [viaOne, viaTwo] = [one, two].map((served) => new OpenAI({ apiKey: key, baseURL: `${served.url}/v1` }));

    const first = await viaOne!.responses.create({ model: 'sim-pro-32k', input: 'One.', max_output_tokens: 16 });
    expect((await viaTwo!.responses.retrieve(first.id)).output).toEqual(first.output);
    // A stream finished through one process is continued through the other as soon as its last event arrives.
    const stream = await viaTwo!.responses.create({
      model: 'sim-pro-32k',
      input: 'Two.',
      previous_response_id: first.id,
      max_output_tokens: 16,
      stream: true,
    });
    let continued: OpenAI.Responses.Response | undefined;
    let streamedId: string | undefined;
    for await (const event of stream) {
      if (event.type !== 'response.incomplete' && event.type !== 'response.completed') continue;
      streamedId = event.response.id;
      continued = await viaOne!.responses.create({
        model: 'sim-pro-32k',
        input: 'Three.',
        previous_response_id: event.response.id,
        max_output_tokens: 16,
      });
    }
    expect(continued!.previous_response_id).toBe(streamedId);
    const inputItems = await viaOne!.responses.inputItems.list(continued!.id);
    expect(inputItems.data.map((item) => item.type === 'message' && item.content)).toEqual([
      [{ type: 'input_text', text: 'Three.' }],
    ]);
    // Its input is the whole conversation: three user turns and two answers of 16 tokens each.
    expect(continued!.usage!.input_tokens).toBeGreaterThan(32);

    // A conversation made through one process takes a response made through the other.
    const conversation = await viaOne!.conversations.create({ items: [{ role: 'user', content: 'Four.' }] });
    const inConversation = await viaTwo!.responses.create({
      model: 'sim-pro-32k',
      conversation: conversation.id,
      input: 'Five.',
      max_output_tokens: 16,
    });
    const items = (await viaOne!.conversations.items.list(conversation.id, { order: 'asc' })).data;
    expect(items.map((item) => item.id).at(-1)).toBe(inConversation.output[0]!.id);
    expect(items).toHaveLength(3);
  });

  it('streams a background response through another process, and stops one cancelled there at its next heartbeat', async () => {
    // 10 ms a token: 2,000 tokens would take 20 s; the run's process beats every 2 s.
    const document = { ...slowPricedSimulatedConfig, store: { url: pgUrl(schema) }, admission: postgresOnly };
    const [one, two] = [await serve(workspace(document), children), await serve(workspace(document), children)];
    const admin = adminPoster(one.url, /Admin token: (\S+)/.exec(one.banner)![1]!);
    const tenant = await admin('/tenants', { name: `background-${Date.now()}` });
    const { key } = await admin(`/tenants/${tenant.id}/keys`, {});
    await admin(`/tenants/${tenant.id}/credits`, { amount: '100', currency: 'CNY' });
    const [viaOne, viaTwo] = [one, two].map((served) => new OpenAI({ apiKey: key, baseURL: `${served.url}/v1` }));
    const cancelledRuns = async () => {
      const exposition = await (await fetch(`${one.url}/metrics`)).text();
      const line = exposition
        .split('\n')
        .find((row) => row.startsWith('tollgate_requests_total{') && row.includes('status="499"'));
      return line === undefined ? 0 : Number(line.split(' ').at(-1));
    };

    // A streamed one made through one process is read, as it is made, through the other.
    const { data: streamed, response: streamedHttp } = await viaOne!.responses
      .create({
        model: 'sim-pro-32k',
        input: 'Stream it through the other one.',
        max_output_tokens: 40,
        background: true,
        stream: true,
      })
      .withResponse();
    let streamedId = '';
    for await (const event of streamed) {
      if (event.type === 'response.created') streamedId = event.response.id;
      // Leaving: the run goes on.
      break;
    }
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await viaTwo!.responses.retrieve(streamedId, { stream: true })) events.push(event);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, index) => index));
    const last = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(last.type).toBe('response.incomplete');
    expect(last.response.usage?.output_tokens).toBe(40);

    const queued = await viaOne!.responses.create({
      model: 'sim-pro-32k',
      input: 'A long one, please.',
      max_output_tokens: 2_000,
      background: true,
    });
    for (let tries = 0; (await viaTwo!.responses.retrieve(queued.id)).status !== 'in_progress' && tries < 100; ) {
      tries++;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const cancelledAt = Date.now();
    expect((await viaTwo!.responses.cancel(queued.id)).status).toBe('cancelled');
    while ((await cancelledRuns()) === 0 && Date.now() - cancelledAt < 15_000) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await cancelledRuns()).toBe(1);
    // Two heartbeats at most, on a loaded host; the whole answer would have taken 20 s.
    expect(Date.now() - cancelledAt).toBeLessThan(10_000);
    expect((await viaOne!.responses.retrieve(queued.id)).status).toBe('cancelled');
    // Aborted, the whole answer is billed nothing: the ledger holds one charge, the streamed answer's, for what its
    // last event reported, and no reservation is left. (Its amount is not checked to the nano: the price is whatever
    // version an earlier test on this schema set.)
    const usage = last.response.usage!;
    const store = await createStore(pgUrl(schema));
    try {
      await vi.waitFor(async () => {
        const balance = await fetch(`${one.url}/v1/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
        expect(((await balance.json()) as { reserved: string }).reserved).toBe('0');
        const events = await store.listUsageEvents({ tenantId: tenant.id, start: 0, end: Date.now() + 1 });
        expect(events.map((event) => [event.requestId, event.inputTokens, event.outputTokens])).toEqual([
          [streamedHttp.headers.get('x-request-id'), usage.input_tokens, 40],
        ]);
        expect(events[0]!.amount).toBeGreaterThan(0n);
      }, eventually);
    } finally {
      await store.close();
    }
  });

  it("reaches every worker of another host's multi-worker process with a revocation", async () => {
    const single = await serve(
      workspace({ ...pricedSimulatedConfig, store: { url: pgUrl(schema) }, admission: postgresOnly }),
      children,
    );
    const workers = await serve(
      workspace({
        ...pricedSimulatedConfig,
        store: { url: pgUrl(schema) },
        admission: postgresOnly,
        server: { workers: 2 },
      }),
      children,
    );
    const adminToken = /Admin token: (\S+)/.exec(single.banner)![1]!;
    await expectRevokedOnEveryWorkerAtOnce(single.url, adminToken, workers.url);
  });
});

describe('cluster mode', { timeout: TEST_TIMEOUT_MS }, () => {
  const schema = uniqueSchema('cluster');
  afterAll(async () => dropSchema(schema));

  it('three gateway processes on one Redis hold a shared RPM limit', async () => {
    const document = {
      ...pricedSimulatedConfig,
      store: { url: pgUrl(schema) },
      // A generous command timeout: 300 concurrent requests on a loaded host must not look like a Redis outage
      // (fail-closed would refuse them with 503); this test is about the shared limit.
      admission: { store: 'redis', redis_url: 'redis://127.0.0.1:6379', command_timeout_ms: 5000 },
    };
    const dir = workspace(document);
    const first = await serve(dir, children);
    const key = demoKeyOf(first.banner);
    const others = await Promise.all([serve(dir, children), serve(dir, children)]);
    const urls = [first.url, ...others.map((other) => other.url)];
    const adminToken = /Admin token: (\S+)/.exec(first.banner)![1]!;
    const tenants = (await (
      await fetch(`${first.url}/admin/v1/tenants`, { headers: { authorization: `Bearer ${adminToken}` } })
    ).json()) as {
      data: Array<{ id: string; name: string }>;
    };
    const tenantId = tenants.data.find((tenant) => tenant.name === 'demo')!.id;
    const limit = 120;
    const plan = await fetch(`${first.url}/admin/v1/tenants/${tenantId}/plan`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rpm: limit }),
    });
    expect(plan.status).toBe(200);

    const results = await Promise.all(Array.from({ length: 300 }, (_, index) => chat(urls[index % urls.length]!, key)));
    const passed = results.filter((result) => result.status === 200).length;
    const unexpected = results.filter((result) => result.status !== 200 && result.code !== 'rate_limit_exceeded');
    expect(unexpected, JSON.stringify(unexpected)).toEqual([]);
    expect(passed).toBeLessThanOrEqual(limit);
    expect(passed).toBeGreaterThanOrEqual(Math.floor(limit * 0.99));
    const store = await createStore(pgUrl(schema));
    try {
      const listed = () => store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 1000 });
      await vi.waitFor(async () => expect((await listed()).length).toBeGreaterThanOrEqual(passed), eventually);
      const events = await listed();
      expect(events.length).toBe(passed);
    } finally {
      await store.close();
    }

    // A key revoked through one process stops working in the others at once (Redis pub/sub, not the cache TTL).
    await expectRevocationHeardAtOnce(first.url, adminToken, tenantId, urls.slice(1));
  });

  it('follows the configured policy when Redis dies, and the ledger loses nothing', async () => {
    const port = await freePort();
    const redis = await startRedis(port);
    const gateways = [];
    for (const policy of ['closed', 'open'] as const) {
      const dir = workspace({
        ...pricedSimulatedConfig,
        default_plan: { rpm: 1000 },
        admission: { store: 'redis', redis_url: `redis://127.0.0.1:${port}`, failure_policy: policy },
      });
      const started = await serve(dir, children);
      gateways.push({ policy, dir, url: started.url, key: demoKeyOf(started.banner) });
    }
    for (const gateway of gateways) expect((await chat(gateway.url, gateway.key)).status).toBe(200);
    redis.kill('SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const closed = await chat(gateways[0]!.url, gateways[0]!.key);
    expect(closed.status).toBe(503);
    expect(closed.code).toBe('admission_store_unavailable');
    const open = await chat(gateways[1]!.url, gateways[1]!.key);
    expect(open.status).toBe(200);
    for (const gateway of gateways) {
      const store = await createStore(`sqlite://${gateway.dir}/data/tollgate.db`);
      try {
        // Read from outside the gateway: its commits follow the journaled responses, so wait for them.
        const expected = gateway.policy === 'closed' ? 1 : 2;
        const listed = () => store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 100 });
        await vi.waitFor(async () => expect((await listed()).length).toBeGreaterThanOrEqual(expected), eventually);
        expect((await listed()).length).toBe(expected);
      } finally {
        await store.close();
      }
    }
  });
  it('announces price versions and budgets set through one process to the others at once', async () => {
    await announcesChangesAtOnce(pgUrl(schema), withRedis);
  });
  it("releases a killed process's wallet reservations through the surviving one, with no restart", async () => {
    // 100 tokens/s: a 300-token answer takes 3 s. A process silent for 1.5 s is swept by the other.
    const { first, second, key } = await twoProcessesWithTenant(
      { ...slowPricedSimulatedConfig, billing: { reservation_owner_timeout_ms: 1_500 } },
      pgUrl(schema),
      'owners',
    );
    const reserved = async () => {
      const response = await fetch(`${second.url}/v1/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
      return Number(((await response.json()) as { reserved: string }).reserved);
    };
    const inFlight = Array.from({ length: 3 }, (_, index) =>
      fetch(`${first.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'sim-pro-32k',
          messages: [{ role: 'user', content: `story ${index}` }],
          max_tokens: 300,
        }),
      }).catch(() => undefined),
    );
    await vi.waitFor(async () => expect(await reserved()).toBeGreaterThan(0), eventually);
    first.child.kill('SIGKILL');
    await Promise.all(inFlight);
    // Before reservations had owners they stayed reserved on PostgreSQL for good.
    await vi.waitFor(async () => expect(await reserved()).toBe(0), eventually);
    expect((await chat(second.url, key)).status).toBe(200);
  });

  it('has the other process give back its unused wallet lease before refusing: a wallet is spent to its last request', async () => {
    await spendsWalletToLastRequest(withRedis);
  });

  it('holds a hard budget across processes: 60 concurrent requests through two processes, a budget for 10', async () => {
    const quote = BigInt(countPromptTokens('chat', { messages })) * 800n + 2n * 2000n; // sim-pro-32k, max_tokens 2
    const limit = quote * 10n + quote / 2n;
    const budgetSchema = uniqueSchema('cluster_budget');
    const { first, second, admin, tenantId, key } = await twoProcessesWithTenant(
      pricedSimulatedConfig,
      pgUrl(budgetSchema),
      'budget',
    );
    try {
      const set = await admin('PUT', `/tenants/${tenantId}/billing`, {
        mode: 'prepaid',
        budget: {
          monthly_limit: `${limit / 10n ** 9n}.${(limit % 10n ** 9n).toString().padStart(9, '0')}`,
          enforcement: 'hard',
        },
      });
      expect(set.status).toBe(200);
      await budgetsReached(admin, second.url); // the budget reaches the second process
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, index) => chat(index % 2 === 0 ? first.url : second.url, key)),
      );
      const passed = results.filter((result) => result.status === 200).length;
      const refused = results.filter((result) => result.status === 429 && result.code === 'insufficient_quota');
      // Each process alone would let 10 through: 20 in all without shared holds.
      expect(passed).toBeLessThanOrEqual(10);
      expect(passed).toBeGreaterThan(0);
      expect(passed + refused.length).toBe(60);
      const store = await createStore(pgUrl(budgetSchema));
      try {
        const summed = () => store.sumUsageEvents({ tenantId, start: 0, end: Date.now() + 1 });
        await vi.waitFor(
          async () => expect((await summed()).amount).toBeGreaterThanOrEqual(quote * BigInt(passed)),
          eventually,
        );
        const spent = await summed();
        expect(spent.amount).toBe(quote * BigInt(passed));
        expect(spent.amount).toBeLessThanOrEqual(limit);
      } finally {
        await store.close();
      }
    } finally {
      await dropSchema(budgetSchema);
    }
  });

  it("announces a soft budget's threshold when the processes' spend together crosses it", async () => {
    const cost = BigInt(countPromptTokens('chat', { messages })) * 800n + 2n * 2000n; // sim-pro-32k, max_tokens 2
    const receiver = await startWebhookReceiver();
    const alertSchema = uniqueSchema('cluster_alert');
    try {
      const { first, second, admin, tenantId, key } = await twoProcessesWithTenant(
        pricedSimulatedConfig,
        pgUrl(alertSchema),
        'alert',
      );
      const limit = cost * 4n;
      const set = await admin('PUT', `/tenants/${tenantId}/billing`, {
        mode: 'prepaid',
        budget: {
          monthly_limit: `${limit / 10n ** 9n}.${(limit % 10n ** 9n).toString().padStart(9, '0')}`,
          enforcement: 'soft',
          thresholds: [75],
          webhook_url: receiver.url,
        },
      });
      expect(set.status).toBe(200);
      await budgetsReached(admin, second.url); // the budget reaches the second process
      // Three requests, 75% of the budget together; the first process served two of them (50%), the second one.
      for (const url of [first.url, second.url, first.url]) expect((await chat(url, key)).status).toBe(200);
      await receiver.firstAlert(10_000);
      expect(receiver.received.map((event) => [event.scope_id, event.threshold])).toEqual([[tenantId, 75]]);
      // A fourth request crosses nothing new: still one alert.
      expect((await chat(second.url, key)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(receiver.received).toHaveLength(1);
    } finally {
      await receiver.close();
      await dropSchema(alertSchema);
    }
  });

  it("rates volume tiers by the tenant's one month count across processes", async () => {
    const perRequest = countPromptTokens('chat', { messages }) + 2;
    const requests = 20;
    // Each process alone sees 10 requests, below the step; together they pass it after the 12th.
    const step = 12 * perRequest;
    // Its own schema: the price version another test posts would be in force in the shared one.
    const volumeSchema = uniqueSchema('cluster_volume');
    const version = pricedSimulatedConfig.pricing.versions[0]!;
    const document = {
      ...pricedSimulatedConfig,
      pricing: {
        ...pricedSimulatedConfig.pricing,
        versions: [{ ...version, volume_tiers: [{ up_to_tokens: step, discount: '0' }, { discount: '0.5' }] }],
      },
    };
    const { first, second, tenantId, key } = await twoProcessesWithTenant(document, pgUrl(volumeSchema), 'volume');
    await clearOfMonthEnd(15_000); // the month count starts again in a new month
    for (let index = 0; index < requests; index++) {
      expect((await chat(index % 2 === 0 ? first.url : second.url, key)).status).toBe(200);
    }
    const store = await createStore(pgUrl(volumeSchema));
    try {
      const listed = () => store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 100 });
      await vi.waitFor(async () => expect((await listed()).length).toBeGreaterThanOrEqual(requests), eventually);
      const events = await listed();
      expect(events).toHaveLength(requests);
      const discounted = events
        .flatMap(
          (event) =>
            (JSON.parse(event.detail) as { modifiers: Array<{ kind: string; volumeTier?: number; tokens?: number }> })
              .modifiers,
        )
        .filter((modifier) => modifier.kind === 'volume' && modifier.volumeTier === 1)
        .reduce((sum, modifier) => sum + (modifier.tokens ?? 0), 0);
      expect(discounted).toBe(requests * perRequest - step);
    } finally {
      await store.close();
      await dropSchema(volumeSchema);
    }
  });

  it('keeps serving and bills every answer once while PostgreSQL and Redis drop every connection under load', async () => {
    await billsEveryAnswerOnceThroughOutages(true);
  });
});
