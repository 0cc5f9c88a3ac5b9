import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { type GatewayError, InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import { createStore } from '../store/create-store.js';
import { openAIListPage } from '../store/list-page.js';
import type { Store } from '../store/store.js';
import { hashApiKey } from './api-key.js';
import { InProcessInvalidationBus } from './invalidation-bus.js';
import { publicKeyView, publicTenantView, TenantService } from './tenant-service.js';

async function failure(promise: Promise<unknown>): Promise<GatewayError> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error as GatewayError,
  );
}

describe('TenantService', () => {
  let store: Store;
  let clock: VirtualClock;
  let bus: InProcessInvalidationBus;
  let service: TenantService;

  beforeEach(async () => {
    store = await createStore('sqlite://:memory:');
    await store.migrate();
    clock = new VirtualClock(Date.UTC(2030, 5, 1));
    bus = new InProcessInvalidationBus();
    service = new TenantService(store, { bus, clock });
  });

  afterEach(() => store.close());

  it('creates, gets and lists tenants', async () => {
    const acme = await service.createTenant('  Acme  ');
    expect(acme.name).toBe('Acme');
    expect(await service.getTenant(acme.id)).toEqual(acme);
    expect(await service.getTenant('ten_missing')).toBeUndefined();
    expect((await service.listTenants({ limit: 10 })).rows.map((tenant) => tenant.id)).toEqual([acme.id]);
    expect(publicTenantView(acme)).toEqual({
      id: acme.id,
      object: 'tenant',
      name: 'Acme',
      created_at: Math.floor(acme.createdAt / 1000),
    });
    const error = await failure(service.createTenant('   '));
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.code).toBe('invalid_name');
  });

  it('creates a key whose secret hashes to the stored hash', async () => {
    const tenant = await service.createTenant('acme');
    const expiresAt = clock.now() + 86_400_000;
    const { record, key } = await service.createKey(tenant.id, { name: 'prod', models: ['a', 'b', 'a'], expiresAt });
    expect(record.hash).toBe(hashApiKey(key));
    expect(record.prefix).toBe(key.slice(0, 11));
    expect(record.models).toEqual(['a', 'b']);
    expect(record.expiresAt).toBe(expiresAt);
    expect(await store.findKeyByHash(hashApiKey(key))).toEqual(record);
  });

  it('validates key options', async () => {
    const tenant = await service.createTenant('acme');
    const cases: [unknown, string, string][] = [
      [{ models: 'a' }, 'invalid_models', 'models'],
      [{ models: ['a', ''] }, 'invalid_models', 'models[1]'],
      [{ models: ['a', 3] }, 'invalid_models', 'models[1]'],
      [{ expiresAt: clock.now() }, 'invalid_expires_at', 'expires_at'],
      [{ expiresAt: clock.now() - 1 }, 'invalid_expires_at', 'expires_at'],
      [{ expiresAt: 1.5e300 }, 'invalid_expires_at', 'expires_at'],
    ];
    for (const [options, code, param] of cases) {
      const error = await failure(service.createKey(tenant.id, options as any));
      expect(error, JSON.stringify(options)).toBeInstanceOf(InvalidRequestError);
      expect(error.code).toBe(code);
      expect(error.param).toBe(param);
    }
    expect(await store.listKeys(tenant.id)).toEqual([]);
  });

  it('refuses keys for an unknown tenant', async () => {
    const error = await failure(service.createKey('ten_missing'));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error.code).toBe('tenant_not_found');
    expect((await failure(service.listKeys('ten_missing', { limit: 10 }))).code).toBe('tenant_not_found');
    // An unknown tenant is reported as such even with a cursor that would be refused too.
    expect((await failure(service.listKeys('ten_missing', { limit: 10, after: 'key_missing' }))).code).toBe(
      'tenant_not_found',
    );
  });

  it("lists only a tenant's own keys, and the public view carries no hash", async () => {
    const acme = await service.createTenant('acme');
    const globex = await service.createTenant('globex');
    const acmeKeys = [(await service.createKey(acme.id)).record, (await service.createKey(acme.id)).record];
    const globexKey = (await service.createKey(globex.id)).record;
    const idsOf = async (tenantId: string) =>
      (await service.listKeys(tenantId, { limit: 10 })).rows.map((key) => key.id).sort();
    expect(await idsOf(acme.id)).toEqual(acmeKeys.map((key) => key.id).sort());
    expect(await idsOf(globex.id)).toEqual([globexKey.id]);

    const view = publicKeyView(globexKey);
    expect(view).toEqual({
      id: globexKey.id,
      object: 'api_key',
      tenant_id: globex.id,
      name: null,
      prefix: globexKey.prefix,
      models: null,
      expires_at: null,
      revoked_at: null,
      created_at: Math.floor(globexKey.createdAt / 1000),
    });
    expect(JSON.stringify(view)).not.toContain(globexKey.hash);
  });

  it('pages tenants oldest first, telling whether more follow', async () => {
    const made = [];
    // The virtual clock does not move the store's `createdAt` (the wall clock): some of these share a millisecond.
    for (const name of ['a', 'b', 'c', 'd', 'e']) made.push(await service.createTenant(name));
    const all = (await service.listTenants({ limit: 5 })).rows;
    expect(all.map((tenant) => tenant.id).sort()).toEqual(made.map((tenant) => tenant.id).sort());
    expect((await service.listTenants({ limit: 5 })).hasMore).toBe(false);
    expect((await service.listTenants({ limit: 4 })).hasMore).toBe(true);

    const first = await service.listTenants({ limit: 2 });
    expect(first).toEqual({ rows: all.slice(0, 2), hasMore: true });
    const second = await service.listTenants({ limit: 2, after: all[1]!.id });
    expect(second).toEqual({ rows: all.slice(2, 4), hasMore: true });
    const last = await service.listTenants({ limit: 2, after: all[3]!.id });
    expect(last).toEqual({ rows: all.slice(4), hasMore: false });
    expect(await service.listTenants({ limit: 2, after: all[4]!.id })).toEqual({ rows: [], hasMore: false });
  });

  it('refuses an after that names no tenant', async () => {
    await service.createTenant('acme');
    const error = await failure(service.listTenants({ limit: 10, after: 'ten_missing' }));
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.code).toBe('invalid_value');
    expect(error.param).toBe('after');
  });

  it("pages a tenant's keys, and refuses an after that is no key of that tenant", async () => {
    const acme = await service.createTenant('acme');
    const globex = await service.createTenant('globex');
    for (let index = 0; index < 3; index++) await service.createKey(acme.id);
    const globexKey = (await service.createKey(globex.id)).record;
    const all = (await service.listKeys(acme.id, { limit: 10 })).rows;
    expect(all).toHaveLength(3);
    expect(await service.listKeys(acme.id, { limit: 1, after: all[0]!.id })).toEqual({
      rows: [all[1]],
      hasMore: true,
    });
    expect(await service.listKeys(acme.id, { limit: 2, after: all[0]!.id })).toEqual({
      rows: all.slice(1),
      hasMore: false,
    });
    for (const after of [globexKey.id, 'key_missing']) {
      const error = await failure(service.listKeys(acme.id, { limit: 10, after }));
      expect(error, after).toBeInstanceOf(InvalidRequestError);
      expect(error.code).toBe('invalid_value');
      expect(error.param).toBe('after');
    }
  });

  it('shows a page as an OpenAI list object, without first_id and last_id when it is empty', async () => {
    const acme = await service.createTenant('acme');
    expect(openAIListPage({ rows: [acme], hasMore: true }, publicTenantView)).toEqual({
      object: 'list',
      data: [publicTenantView(acme)],
      first_id: acme.id,
      last_id: acme.id,
      has_more: true,
    });
    expect(openAIListPage({ rows: [], hasMore: false }, publicTenantView)).toEqual({
      object: 'list',
      data: [],
      has_more: false,
    });
  });

  it('revokes a key, publishes it on the bus and keeps the first revocation time', async () => {
    const tenant = await service.createTenant('acme');
    const { record } = await service.createKey(tenant.id);
    const published: string[] = [];
    bus.subscribe((keyId) => published.push(keyId));
    const revoked = await service.revokeKey(record.id);
    expect(revoked.revokedAt).toBe(clock.now());
    expect(published).toEqual([record.id]);
    clock.advance(10_000);
    expect((await service.revokeKey(record.id)).revokedAt).toBe(revoked.revokedAt);
    expect(publicKeyView(revoked).revoked_at).toBe(Math.floor(revoked.revokedAt! / 1000));

    const missing = await failure(service.revokeKey('key_missing'));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.code).toBe('key_not_found');
  });

  it("does not let one tenant revoke another tenant's key", async () => {
    const acme = await service.createTenant('acme');
    const globex = await service.createTenant('globex');
    const { record } = await service.createKey(globex.id);
    expect((await failure(service.revokeKey(record.id, { tenantId: acme.id }))).code).toBe('key_not_found');
    expect((await store.getKey(record.id))?.revokedAt).toBeNull();
    expect((await service.revokeKey(record.id, { tenantId: globex.id })).revokedAt).toBe(clock.now());
  });
});
