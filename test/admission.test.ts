/**
 * Plans, rate limits and service tiers through the official SDK against a real gateway: RPM/TPM/concurrency
 * boundaries and OpenAI's `x-ratelimit-*` headers, reconciliation of an over-estimate, the atomic step with the
 * wallet (a request refused by either takes nothing from the other), key overrides, tier downgrades, the fleet view.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countPromptTokens } from '../src/metering/token-counter.js';
import { pricedSimulatedConfig, startTestGateway, type TestGateway } from './support/test-gateway.js';

const config = {
  ...pricedSimulatedConfig,
  models: pricedSimulatedConfig.models.map((model) =>
    model.name === 'sim-pro-32k' ? { ...model, max_output_tokens: 500 } : model,
  ),
};
const messages = [{ role: 'user' as const, content: 'Count my tokens, please.' }];
const promptTokens = countPromptTokens('chat', { messages });

let harness: TestGateway;
beforeAll(async () => {
  harness = await startTestGateway(config);
});
afterAll(async () => harness?.close());

async function tenantWithPlan(plan: Record<string, unknown>, credit: string | null = '10') {
  const created = await harness.createTenantWithKey(credit === null ? {} : { credit });
  const set = await harness.admin('PUT', `/tenants/${created.tenantId}/plan`, plan);
  expect(set.status).toBe(200);
  return created;
}

async function post(key: string, body: Record<string, unknown>) {
  const response = await fetch(`${harness.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-pro-32k', messages, ...body }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as any };
}

/** Seconds of an OpenAI reset duration (`120ms`, `1.5s`, `1m0.75s`). */
function seconds(duration: string): number {
  const match = /^(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?(?:(\d+)ms)?$/.exec(duration);
  if (match === null) throw new Error(`not a duration: ${duration}`);
  const [, hours = '0', minutes = '0', secs = '0', millis = '0'] = match;
  return Number(hours) * 3600 + Number(minutes) * 60 + Number(secs) + Number(millis) / 1000;
}

describe('rate limits', () => {
  it('RPM: the limit passes, the next is refused with 429 rate_limit_exceeded, Retry-After and OpenAI headers', async () => {
    const { key } = await tenantWithPlan({ rpm: 3 });
    const remaining: string[] = [];
    for (let index = 0; index < 3; index++) {
      const ok = await post(key, { max_tokens: 2 });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('x-ratelimit-limit-requests')).toBe('3');
      remaining.push(ok.headers.get('x-ratelimit-remaining-requests')!);
      const reset = ok.headers.get('x-ratelimit-reset-requests');
      expect(reset).toMatch(/^(\d+h)?(\d+m)?\d+(\.\d+)?s$|^\d+ms$/);
      // The reset says when the next request is admitted: at once while one remains.
      if (index < 2) expect(reset).toBe('0s');
      else expect(seconds(reset!)).toBeGreaterThan(59);
    }
    expect(remaining).toEqual(['2', '1', '0']);
    const refused = await post(key, { max_tokens: 2 });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('rate_limit_exceeded');
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    // Retry-After is the reset rounded up to whole seconds.
    expect(retryAfter).toBe(Math.ceil(seconds(refused.headers.get('x-ratelimit-reset-requests')!)));
  });

  it('TPM: charged with the estimate at admission and reconciled with real usage afterwards', async () => {
    const estimate = promptTokens + 500; // no max_tokens: the model's output cap
    const { key } = await tenantWithPlan({ tpm: 10_000 });
    const first = await post(key, {});
    expect(first.status).toBe(200);
    expect(first.headers.get('x-ratelimit-limit-tokens')).toBe('10000');
    expect(Number(first.headers.get('x-ratelimit-remaining-tokens'))).toBe(10_000 - estimate);
    const actual = first.body.usage.total_tokens as number;
    expect(actual).toBeLessThan(estimate);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = await post(key, {});
    // The first request's over-estimate was returned: only its real usage still counts.
    expect(Number(second.headers.get('x-ratelimit-remaining-tokens'))).toBe(10_000 - actual - estimate);
  });

  it('TPM refuses a request whose estimate does not fit', async () => {
    const { key } = await tenantWithPlan({ tpm: promptTokens + 100 });
    const refused = await post(key, { max_tokens: 200 });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('rate_limit_exceeded');
    const fits = await post(key, { max_tokens: 50 });
    expect(fits.status).toBe(200);
  });

  it('TPM counts the output of every choice a request asks for (n)', async () => {
    const { key } = await tenantWithPlan({ tpm: promptTokens + 300 });
    // Four choices of 100 tokens do not fit; one does. (The simulated fleet itself serves only n = 1.)
    const four = await post(key, { max_tokens: 100, n: 4 });
    expect(four.status).toBe(429);
    expect(four.body.error.code).toBe('rate_limit_exceeded');
    expect((await post(key, { max_tokens: 100 })).status).toBe(200);
  });

  it('concurrency: the request over the limit is refused while the others run', async () => {
    const { key } = await tenantWithPlan({ concurrency: 2 });
    const client = harness.client(key);
    const open = await Promise.all(
      [0, 1].map(() =>
        client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 400, stream: true }),
      ),
    );
    const third = await post(key, { max_tokens: 2 });
    expect(third.status).toBe(429);
    for (const stream of open)
      for await (const _ of stream) {
        // drain
      }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await post(key, { max_tokens: 2 })).status).toBe(200);
  });

  it('a per-model override in the plan limits that model only', async () => {
    const { key } = await tenantWithPlan({ rpm: 100, models: { 'sim-pro-32k': { rpm: 1 } } });
    expect((await post(key, { max_tokens: 2 })).status).toBe(200);
    const limited = await post(key, { max_tokens: 2 });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('x-ratelimit-limit-requests')).toBe('1');
    expect((await post(key, { model: 'sim-pro-128k', max_tokens: 2 })).status).toBe(200);
  });

  it('a key override limits that key only', async () => {
    const { tenantId, keyId, key } = await tenantWithPlan({ rpm: 100 });
    const other = await harness.admin('POST', `/tenants/${tenantId}/keys`, {});
    expect((await harness.admin('PUT', `/keys/${keyId}/limits`, { rpm: 1 })).status).toBe(200);
    expect((await post(key, { max_tokens: 2 })).status).toBe(200);
    expect((await post(key, { max_tokens: 2 })).status).toBe(429);
    expect((await post(other.body.key, { max_tokens: 2 })).status).toBe(200);
  });
});

describe('the atomic step with the wallet', () => {
  it('a request refused by the wallet takes no rate-limit budget', async () => {
    const { key, tenantId } = await tenantWithPlan({ rpm: 2 }, null);
    const broke = await post(key, { max_tokens: 2 });
    expect(broke.status).toBe(429);
    expect(broke.body.error.code).toBe('insufficient_quota');
    await harness.admin('POST', `/tenants/${tenantId}/credits`, { amount: '1', currency: 'CNY' });
    expect((await post(key, { max_tokens: 2 })).status).toBe(200);
    expect((await post(key, { max_tokens: 2 })).status).toBe(200);
    expect((await post(key, { max_tokens: 2 })).status).toBe(429);
  });

  it('reserves the output of every choice: a wallet that covers one choice refuses twenty', async () => {
    // 1,000 output tokens at 2 per million: 0.002 a choice, so 0.01 covers one and not twenty.
    const { key } = await tenantWithPlan({}, '0.01');
    const twenty = await post(key, { max_tokens: 1_000, n: 20 });
    expect(twenty.status).toBe(429);
    expect(twenty.body.error.code).toBe('insufficient_quota');
    expect((await post(key, { max_tokens: 1_000 })).status).toBe(200);
  });

  it('a request refused by a rate limit takes nothing from the wallet', async () => {
    const { key, tenantId } = await tenantWithPlan({ rpm: 1 }, '1');
    const ok = await post(key, { max_tokens: 3 });
    expect(ok.status).toBe(200);
    const limited = await post(key, { max_tokens: 3 });
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe('rate_limit_exceeded');
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    const spent = BigInt(promptTokens) * 800n + 3n * 2000n;
    expect(balance.body.reserved).toBe('0');
    expect(balance.body.balance).toBe(`0.${(1_000_000_000n - spent).toString().padStart(9, '0').replace(/0+$/, '')}`);
  });
});

describe('service tiers', () => {
  it('downgrades a tier the plan does not allow and reports the tier used', async () => {
    const basic = await tenantWithPlan({ tiers: ['default', 'flex'] });
    const downgraded = await harness.client(basic.key).chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 2,
      service_tier: 'priority',
    });
    expect(downgraded.service_tier).toBe('default');
    const premium = await tenantWithPlan({ tiers: ['priority', 'default'] });
    const stream = await harness.client(premium.key).chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 2,
      service_tier: 'priority',
      stream: true,
    });
    const tiers = new Set<string | null | undefined>();
    for await (const chunk of stream) tiers.add(chunk.service_tier);
    expect([...tiers]).toEqual(['priority']);
    const flex = await harness.client(basic.key).chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 2,
      service_tier: 'flex',
    });
    expect(flex.service_tier).toBe('flex');
  });

  it('rejects an unknown tier value', async () => {
    const { key } = await tenantWithPlan({});
    const error = await harness
      .client(key)
      .chat.completions.create({ model: 'sim-pro-32k', messages, service_tier: 'platinum' as any })
      .catch((caught: unknown) => caught as InstanceType<typeof OpenAI.APIError>);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
  });
});

describe('fleet view', () => {
  it('shows deployments, circuits and per-class queues as JSON and as Prometheus metrics', async () => {
    const fleet = await harness.admin('GET', '/fleet');
    expect(fleet.status).toBe(200);
    const deployment = fleet.body.deployments.find((entry: { id: string }) => entry.id === 'sim/pro-32k');
    expect(deployment).toMatchObject({ circuit: 'closed', capacityTokens: 2 * 262_144 });
    const model = fleet.body.models.find((entry: { model: string }) => entry.model === 'sim-pro-32k');
    expect(model.capacity).toEqual({ sequences: 128, tokens: 2 * 262_144 });
    const metrics = await (await fetch(`${harness.url}/metrics`)).text();
    expect(metrics).toContain('tollgate_queue_depth{model="sim-pro-32k",class="batch"} 0');
    expect(metrics).toContain('tollgate_deployment_circuit_state{deployment="sim/pro-32k"} 0');
    expect(metrics).toMatch(/tollgate_scheduler_refused\{model="sim-pro-32k",class="flex",reason="shed"\} \d+/);
  });
});
