/**
 * Starts a real gateway (Fastify on 127.0.0.1, a free port) over a temporary SQLite store for integration tests,
 * with helpers for the admin API.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { request } from 'undici';
import { createGateway, type Gateway } from '../../src/app/create-gateway.js';
import { type LoadedConfig, parseConfigDocument } from '../../src/config/load-config.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';

/** A fast simulated fleet: the same shape as the default, with short steps so tests finish quickly. */
export const fastSimulatedConfig = {
  upstreams: [
    {
      name: 'sim',
      type: 'simulated',
      replicas: 2,
      profile: { t_prefill_us: 1, t_fixed_ms: 0.2, t_seq_ms: 0.01, max_batch: 64, kv_tokens: 262_144 },
    },
  ],
  models: [
    { name: 'sim-pro-32k', context_window: 32_768, deployments: [{ upstream: 'sim', model: 'pro-32k' }] },
    { name: 'sim-pro-128k', context_window: 131_072, deployments: [{ upstream: 'sim', model: 'pro-128k' }] },
    { name: 'sim-embed', kind: 'embedding', context_window: 8192, deployments: [{ upstream: 'sim', model: 'embed' }] },
  ],
};

/** The fast fleet with the real-world price book (yuan per million tokens). */
export const pricedSimulatedConfig = {
  ...fastSimulatedConfig,
  pricing: {
    currency: 'CNY',
    versions: [
      {
        id: 'v1',
        effective_from: '2024-01-01T00:00:00Z',
        models: {
          'sim-pro-32k': { input: '0.8', output: '2' },
          'sim-pro-128k': { input: '5', output: '9' },
          'sim-embed': { input: '0.5', output: '0' },
        },
        modifiers: { batch: { discount: '0.5' } },
        costs: { 'sim/pro-32k': { per_million_input: '0.06', per_million_output: '0.37' } },
      },
    ],
  },
};

/** The priced fleet at 100 tokens/s per stream: slow enough that streams are mid-way when a process dies. */
export const slowPricedSimulatedConfig = {
  ...pricedSimulatedConfig,
  upstreams: [
    {
      name: 'sim',
      type: 'simulated',
      replicas: 1,
      profile: { t_prefill_us: 1, t_fixed_ms: 10, t_seq_ms: 0, max_batch: 64 },
    },
  ],
};

/** A running test gateway. */
export interface TestGateway {
  url: string;
  gateway: Gateway;
  adminToken: string;
  dataDir: string;
  /** Calls the admin API; returns status and parsed JSON. */
  admin(
    method: 'GET' | 'POST' | 'DELETE' | 'PUT',
    route: string,
    body?: unknown,
  ): Promise<{ status: number; body: any }>;
  /** Creates a tenant and a key; returns both ids and the key. */
  createTenantWithKey(options?: { models?: string[]; expires_at?: number | string; credit?: string }): Promise<{
    tenantId: string;
    keyId: string;
    key: string;
  }>;
  /** The official SDK pointed at the gateway. */
  client(apiKey: string, options?: { maxRetries?: number; timeout?: number }): OpenAI;
  close(): Promise<void>;
}

/** Starts a gateway for a configuration document (default: the fast simulated fleet). */
export async function startTestGateway(
  document: Record<string, unknown> = fastSimulatedConfig,
  environment: Record<string, string> = {},
  options: { storeUrl?: string; logger?: Logger } = {},
): Promise<TestGateway> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-test-'));
  const config = parseConfigDocument({
    ...document,
    // A test that ends with requests still running waits 5 s for them at most, not the production 25 s.
    server: { host: '127.0.0.1', port: 0, shutdown_grace_ms: 5_000, ...(document.server as object) },
  });
  const upstreamApiKeys = new Map<string, string>();
  for (const upstream of config.upstreams) {
    if (upstream.type === 'openai' && upstream.api_key_env !== undefined) {
      const value = environment[upstream.api_key_env];
      if (value !== undefined) upstreamApiKeys.set(upstream.name, value);
    }
  }
  const loaded: LoadedConfig = {
    config,
    source: { kind: 'default' },
    dataDir,
    storeUrl: options.storeUrl ?? `sqlite://${path.join(dataDir, 'tollgate.db')}`,
    adminToken: 'test-admin-token',
    upstreamApiKeys,
    webhookSecret: 'whsec_test',
    compactionSecrets: undefined,
  };
  const gateway = await createGateway(loaded, {
    adminToken: 'test-admin-token',
    logger: options.logger ?? createLogger({ level: 'silent', sync: true }),
  });
  const { url } = await gateway.listen();

  const admin: TestGateway['admin'] = async (method, route, body) => {
    const response = await request(`${url}/admin/v1${route}`, {
      method,
      headers: {
        authorization: 'Bearer test-admin-token',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.statusCode, body: await response.body.json() };
  };

  return {
    url,
    gateway,
    adminToken: 'test-admin-token',
    dataDir,
    admin,
    async createTenantWithKey(options = {}) {
      const { credit, ...keyOptions } = options;
      const tenant = await admin('POST', '/tenants', { name: `tenant-${Math.random().toString(36).slice(2, 8)}` });
      if (tenant.status !== 201) throw new Error(`tenant creation failed: ${JSON.stringify(tenant.body)}`);
      if (credit !== undefined) {
        const topup = await admin('POST', `/tenants/${tenant.body.id}/credits`, { amount: credit, currency: 'CNY' });
        if (topup.status !== 201) throw new Error(`top-up failed: ${JSON.stringify(topup.body)}`);
      }
      const key = await admin('POST', `/tenants/${tenant.body.id}/keys`, keyOptions);
      if (key.status !== 201) throw new Error(`key creation failed: ${JSON.stringify(key.body)}`);
      return { tenantId: tenant.body.id, keyId: key.body.id, key: key.body.key };
    },
    client(apiKey, options = {}) {
      return new OpenAI({
        baseURL: `${url}/v1`,
        apiKey,
        maxRetries: options.maxRetries ?? 0,
        timeout: options.timeout ?? 10_000,
      });
    },
    close: () => gateway.close(),
  };
}
