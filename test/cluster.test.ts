/**
 * Cluster mode with real processes: several `tollgate serve` processes sharing PostgreSQL and Redis enforce one
 * tenant limit together; when Redis dies, fail-closed refuses with 503 and fail-open keeps serving with per-process
 * limits — and the ledger records every request that ran either way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { countPromptTokens } from '../src/metering/token-counter.js';
import { createStore } from '../src/store/create-store.js';
import { demoKeyOf, requireBuiltCli, serve, workspace } from './support/cli-process.js';
import { dropSchema, schemaUrl, uniqueSchema } from './support/postgres-schema.js';
import { pricedSimulatedConfig } from './support/test-gateway.js';
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
 * Two `serve` processes in cluster mode on `storeUrl` (and the shared Redis), with a new tenant that has a key and
 * 100 CNY; `admin` calls the first process's admin API.
 */
async function twoProcessesWithTenant(document: Record<string, unknown>, storeUrl: string, name: string) {
  const dir = workspace({
    ...document,
    store: { url: storeUrl },
    admission: { store: 'redis', redis_url: 'redis://127.0.0.1:6379' },
  });
  const first = await serve(dir, children);
  const second = await serve(dir, children);
  const adminToken = /Admin token: (\S+)/.exec(first.banner)![1]!;
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${first.url}/admin/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const tenantId = (await admin('POST', '/tenants', { name: `${name}-${Date.now()}` })).body.id as string;
  const key = (await admin('POST', `/tenants/${tenantId}/keys`, {})).body.key as string;
  expect((await admin('POST', `/tenants/${tenantId}/credits`, { amount: '100', currency: 'CNY' })).status).toBe(201);
  return { first, second, admin, tenantId, key };
}

describe('cluster mode', () => {
  const schema = uniqueSchema('cluster');
  afterAll(async () => dropSchema(schema));

  it('three gateway processes on one Redis hold a shared RPM limit', async () => {
    const document = {
      ...pricedSimulatedConfig,
      store: { url: pgUrl(schema) },
      admission: { store: 'redis', redis_url: 'redis://127.0.0.1:6379' },
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
      await new Promise((resolve) => setTimeout(resolve, 200));
      const events = await store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 1000 });
      expect(events.length).toBe(passed);
    } finally {
      await store.close();
    }

    // A key revoked through one process stops working in the others at once (Redis pub/sub, not the cache TTL).
    const created = (await (
      await fetch(`${first.url}/admin/v1/tenants/${tenantId}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: '{}',
      })
    ).json()) as { id: string; key: string };
    const models = (url: string) => fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${created.key}` } });
    expect((await models(urls[1]!)).status).toBe(200);
    expect((await models(urls[2]!)).status).toBe(200);
    const revoked = await fetch(`${first.url}/admin/v1/keys/${created.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(revoked.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await models(urls[1]!)).status).toBe(401);
    expect((await models(urls[2]!)).status).toBe(401);
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
        const events = await store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 100 });
        expect(events.length).toBe(gateway.policy === 'closed' ? 1 : 2);
      } finally {
        await store.close();
      }
    }
  });
  it('announces price versions and budgets set through one process to the others at once', async () => {
    const { second, admin, tenantId, key } = await twoProcessesWithTenant(
      pricedSimulatedConfig,
      pgUrl(schema),
      'announce',
    );

    // A version posted to the first process prices the second process's requests once it takes effect.
    const effectiveFrom = Date.now() + 1500;
    const posted = await admin('POST', '/prices', {
      id: 'v-announced',
      effective_from: new Date(effectiveFrom).toISOString(),
      models: { 'sim-pro-32k': { input: '1000', output: '1000' } },
    });
    expect(posted.status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, effectiveFrom - Date.now()) + 100));
    expect((await chat(second.url, key)).status).toBe(200);
    const store = await createStore(pgUrl(schema));
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const events = await store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 10 });
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
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await chat(second.url, key)).toMatchObject({ status: 429, code: 'insufficient_quota' });
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
      await new Promise((resolve) => setTimeout(resolve, 200)); // the budget reaches the second process
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
        await new Promise((resolve) => setTimeout(resolve, 200));
        const spent = await store.sumUsageEvents({ tenantId, start: 0, end: Date.now() + 1 });
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
      await new Promise((resolve) => setTimeout(resolve, 200)); // the budget reaches the second process
      // Three requests, 75% of the budget together; the first process served two of them (50%), the second one.
      for (const url of [first.url, second.url, first.url]) expect((await chat(url, key)).status).toBe(200);
      await receiver.firstAlert(5_000);
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
    for (let index = 0; index < requests; index++) {
      expect((await chat(index % 2 === 0 ? first.url : second.url, key)).status).toBe(200);
    }
    const store = await createStore(pgUrl(volumeSchema));
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const events = await store.listUsageEvents({ tenantId, start: 0, end: Date.now() + 1, limit: 100 });
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
});
