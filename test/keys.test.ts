/** API key lifecycle through the admin API and the official SDK: create, use, revoke, expiry, isolation. */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey } from '../src/tenancy/api-key.js';
import { InProcessInvalidationBus } from '../src/tenancy/invalidation-bus.js';
import { PlanService } from '../src/tenancy/plan-service.js';
import { TenantService } from '../src/tenancy/tenant-service.js';
import { fastSimulatedConfig, startTestGateway, type TestGateway } from './support/test-gateway.js';

let harness: TestGateway;
beforeAll(async () => {
  harness = await startTestGateway();
});
afterAll(async () => harness?.close());

const ask = (client: OpenAI) =>
  client.chat.completions.create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

describe('key lifecycle', () => {
  it('creates a key shown once and stored only as a hash', async () => {
    const tenant = await harness.admin('POST', '/tenants', { name: 'acme' });
    expect(tenant.status).toBe(201);
    expect(tenant.body).toMatchObject({ name: 'acme' });
    expect(tenant.body.id).toMatch(/^ten_/);
    const created = await harness.admin('POST', `/tenants/${tenant.body.id}/keys`, { name: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body.key).toMatch(/^tg-[A-Za-z0-9_-]{43,}$/);
    expect(created.body.prefix).toBe(created.body.key.slice(0, created.body.prefix.length));
    const listed = await harness.admin('GET', `/tenants/${tenant.body.id}/keys`);
    expect(JSON.stringify(listed.body)).not.toContain(created.body.key);
    const stored = await harness.gateway.store.getKey(created.body.id);
    expect(stored?.hash).toBe(hashApiKey(created.body.key));
    expect(JSON.stringify(stored)).not.toContain(created.body.key);
  });

  it('a revoked key stops working at once', async () => {
    const { key, keyId } = await harness.createTenantWithKey();
    const client = harness.client(key);
    expect((await ask(client)).choices).toHaveLength(1);
    const revoked = await harness.admin('DELETE', `/keys/${keyId}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revoked_at).not.toBeNull();
    const error = await ask(client).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it('an expired key is refused', async () => {
    // expires_at is in whole seconds: two full seconds ahead, so a slow machine still creates the key and uses it
    // once before it expires (one second ahead was sometimes only a millisecond ahead).
    const soon = Math.ceil(Date.now() / 1000) + 2;
    const { key } = await harness.createTenantWithKey({ expires_at: soon });
    const client = harness.client(key);
    expect((await ask(client)).choices).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, soon * 1000 - Date.now() + 50));
    const error = await ask(client).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe('expired_api_key');
  });

  it('rejects a key that expires in the past and unknown tenants', async () => {
    const tenant = await harness.admin('POST', '/tenants', { name: 'past' });
    const past = await harness.admin('POST', `/tenants/${tenant.body.id}/keys`, { expires_at: '2020-01-01T00:00:00Z' });
    expect(past.status).toBe(400);
    const unknown = await harness.admin('POST', '/tenants/ten_doesnotexist/keys', {});
    expect(unknown.status).toBe(404);
    const revokeUnknown = await harness.admin('DELETE', '/keys/key_doesnotexist');
    expect(revokeUnknown.status).toBe(404);
    const bad = await harness.admin('POST', '/tenants', { name: '' });
    expect(bad.status).toBe(400);
  });

  it("lists only a tenant's own keys", async () => {
    const a = await harness.createTenantWithKey();
    const b = await harness.createTenantWithKey();
    const listA = await harness.admin('GET', `/tenants/${a.tenantId}/keys`);
    expect(listA.body.data.map((key: { id: string }) => key.id)).toEqual([a.keyId]);
    const listB = await harness.admin('GET', `/tenants/${b.tenantId}/keys`);
    expect(listB.body.data.map((key: { id: string }) => key.id)).toEqual([b.keyId]);
  });
});

describe('admin lists of tenants and keys', () => {
  /** A gateway of this block's own: the first test's tenants are all the tenants it has. */
  let lists: TestGateway;
  beforeAll(async () => {
    lists = await startTestGateway();
  });
  afterAll(async () => lists?.close());

  /** Creates with `create`, each at a later millisecond than the one before, so creation order is listing order. */
  async function oneByOne<T>(count: number, create: (index: number) => Promise<T>): Promise<T[]> {
    const made: T[] = [];
    for (let index = 0; index < count; index++) {
      made.push(await create(index));
      // Now is at or after the record's `createdAt`: the next one is created in a later millisecond.
      const created = Date.now();
      while (Date.now() === created) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    return made;
  }

  /** Every page of a list route, `limit` at a time, each after the `last_id` of the one before. */
  async function pagesOf(route: string, limit: number) {
    const pages = [];
    let after: string | undefined;
    do {
      const page = await lists.admin('GET', `${route}?limit=${limit}${after === undefined ? '' : `&after=${after}`}`);
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      pages.push(page.body);
      after = page.body.last_id;
    } while (pages.at(-1).has_more);
    return pages;
  }

  it('pages through every tenant, oldest first, each exactly once', async () => {
    const made = await oneByOne(
      7,
      async (index) => (await lists.admin('POST', '/tenants', { name: `t${index}` })).body,
    );
    const ids = made.map((tenant: { id: string }) => tenant.id);
    const pages = await pagesOf('/tenants', 2);
    expect(pages.map((page) => page.data.length)).toEqual([2, 2, 2, 1]);
    expect(pages.map((page) => page.has_more)).toEqual([true, true, true, false]);
    for (const page of pages) {
      expect(page.object).toBe('list');
      expect(page.first_id).toBe(page.data[0].id);
      expect(page.last_id).toBe(page.data.at(-1).id);
    }
    expect(pages.flatMap((page) => page.data.map((tenant: { id: string }) => tenant.id))).toEqual(ids);
    expect(pages[0].data[0]).toMatchObject({ object: 'tenant', name: 't0' });

    const whole = await lists.admin('GET', '/tenants');
    expect(whole.body.data.map((tenant: { id: string }) => tenant.id)).toEqual(ids);
    expect(whole.body).toMatchObject({ first_id: ids[0], last_id: ids[6], has_more: false });
    const exact = await lists.admin('GET', `/tenants?limit=3&after=${ids[3]}`);
    expect(exact.body).toMatchObject({ first_id: ids[4], last_id: ids[6], has_more: false });
    const past = await lists.admin('GET', `/tenants?after=${ids[6]}`);
    expect(past.body).toEqual({ object: 'list', data: [], has_more: false });
  });

  it('refuses a limit that is not a decimal integer in 1..1000 and an after that names no tenant', async () => {
    const tenant = await lists.createTenantWithKey();
    for (const route of ['/tenants', `/tenants/${tenant.tenantId}/keys`]) {
      for (const limit of ['0', '1001', 'abc', '1.5', '', '1e1', '0x10', '+5']) {
        const response = await lists.admin('GET', `${route}?limit=${limit}`);
        expect(response.status, `${route} limit=${limit}`).toBe(400);
        expect(response.body.error).toMatchObject({ param: 'limit', code: 'invalid_value' });
      }
      expect((await lists.admin('GET', `${route}?limit=1000`)).status).toBe(200);
    }
    const unknown = await lists.admin('GET', '/tenants?after=ten_doesnotexist');
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toMatchObject({ param: 'after', code: 'invalid_value' });
    expect(unknown.body.error.message).toContain('ten_doesnotexist');
    const twice = await lists.admin('GET', `/tenants?after=${tenant.tenantId}&after=${tenant.tenantId}`);
    expect(twice.status).toBe(400);
    expect(twice.body.error.param).toBe('after');
  });

  it("pages through a tenant's keys, never another tenant's, and refuses another tenant's key as after", async () => {
    const a = (await lists.admin('POST', '/tenants', { name: 'a' })).body.id as string;
    const b = await lists.createTenantWithKey();
    const made = await oneByOne(3, async () => (await lists.admin('POST', `/tenants/${a}/keys`, {})).body);
    const pages = await pagesOf(`/tenants/${a}/keys`, 2);
    expect(pages.map((page) => page.has_more)).toEqual([true, false]);
    expect(pages.flatMap((page) => page.data.map((key: { id: string }) => key.id))).toEqual(
      made.map((key: { id: string }) => key.id),
    );
    expect(pages[1]).toMatchObject({ first_id: made[2].id, last_id: made[2].id });

    const foreign = await lists.admin('GET', `/tenants/${a}/keys?after=${b.keyId}`);
    expect(foreign.status).toBe(400);
    expect(foreign.body.error).toMatchObject({ param: 'after', code: 'invalid_value' });
    const unknown = await lists.admin('GET', `/tenants/${a}/keys?after=key_doesnotexist`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.param).toBe('after');
    const noTenant = await lists.admin('GET', '/tenants/ten_doesnotexist/keys?limit=2');
    expect(noTenant.status).toBe(404);
    expect(noTenant.body.error.code).toBe('tenant_not_found');
  });
});

/**
 * A change written to the store by something that does not tell the running gateway (here a `TenantService` and a
 * `PlanService` of their own on its store, as `tollgate keys revoke` or `tollgate plans set` on its SQLite file)
 * is seen once the cached read is older than `cache.ttl_ms`.
 */
describe('cache lifetimes', () => {
  async function unheardChanges(cache: Record<string, number> | undefined) {
    const gateway = await startTestGateway(cache === undefined ? undefined : { ...fastSimulatedConfig, cache });
    try {
      const elsewhere = {
        tenants: new TenantService(gateway.gateway.store, { bus: new InProcessInvalidationBus() }),
        plans: new PlanService(gateway.gateway.store, { limits: {}, tiers: ['default'], weight: 1 }),
      };
      const revoked = await gateway.createTenantWithKey();
      const limited = await gateway.createTenantWithKey();
      const [revokedClient, limitedClient] = [gateway.client(revoked.key), gateway.client(limited.key)];
      // Both keys and both plans are read (and cached) by a first request.
      await ask(revokedClient);
      await ask(limitedClient);
      await elsewhere.tenants.revokeKey(revoked.keyId);
      await elsewhere.plans.setTenantPlan(limited.tenantId, { limits: { rpm: 1 }, tiers: ['default'], weight: 1 });
      const statusOf = (request: Promise<unknown>) =>
        request.then(
          () => 200,
          (error: unknown) => (error instanceof OpenAI.APIError ? error.status : error),
        );
      // The limited tenant's one request a minute: the first after the change is counted, the second refused.
      const limitedStatuses = [await statusOf(ask(limitedClient)), await statusOf(ask(limitedClient))];
      return { revoked: await statusOf(ask(revokedClient)), limited: limitedStatuses };
    } finally {
      await gateway.close();
    }
  }

  it('by default, trusts a read for 5 s: a revocation and a plan the gateway did not hear of wait', async () => {
    expect(await unheardChanges(undefined)).toEqual({ revoked: 200, limited: [200, 200] });
  });

  it('with ttl_ms 0, reads keys and plans on every request: such changes apply to the next one', async () => {
    expect(await unheardChanges({ ttl_ms: 0 })).toEqual({ revoked: 401, limited: [200, 429] });
  });

  it('unknown_key_ttl_ms bounds how long a key the gateway did not find stays refused once it exists', async () => {
    const refusedAfterCreation = async (unknownKeyTtlMs: number) => {
      const gateway = await startTestGateway({
        ...fastSimulatedConfig,
        cache: { unknown_key_ttl_ms: unknownKeyTtlMs },
      });
      try {
        const tenant = await gateway.admin('POST', '/tenants', { name: 'late' });
        // A key asked for before it exists (here made up by the test, then stored by hash as `keys create` would).
        const { key, prefix, hash } = generateApiKey();
        const client = gateway.client(key);
        await expect(ask(client)).rejects.toMatchObject({ status: 401 });
        await gateway.gateway.store.createKey({
          tenantId: tenant.body.id,
          name: null,
          prefix,
          hash,
          models: null,
          expiresAt: null,
        });
        // Awaited here, not returned: `finally` must not close the gateway under the request.
        const status = await ask(client).then(
          () => 200,
          (error: unknown) => (error instanceof OpenAI.APIError ? error.status : error),
        );
        return status;
      } finally {
        await gateway.close();
      }
    };
    expect(await refusedAfterCreation(0)).toBe(200);
    expect(await refusedAfterCreation(60_000)).toBe(401);
  });
});
