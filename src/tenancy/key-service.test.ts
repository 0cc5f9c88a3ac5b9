import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { AuthenticationError, StoreUnavailableError } from '../errors/gateway-error.js';
import { createStore } from '../store/create-store.js';
import type { Store } from '../store/store.js';
import { generateApiKey } from './api-key.js';
import { ConfigSubject, InProcessInvalidationBus } from './invalidation-bus.js';
import { KeyService } from './key-service.js';
import { TenantService } from './tenant-service.js';

/** Counts `findKeyByHash` calls, can hold their answers until released, and fails them while `failing`. */
function countingStore(inner: Store): Store & { lookups: number; failing: boolean; hold(): () => void } {
  let gate: Promise<void> | undefined;
  const counter = {
    lookups: 0,
    failing: false,
    hold(): () => void {
      let release!: () => void;
      gate = new Promise((resolve) => {
        release = resolve;
      });
      return () => {
        gate = undefined;
        release();
      };
    },
  };
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property in counter) return (counter as any)[property];
      if (property === 'findKeyByHash') {
        return async (hash: string) => {
          counter.lookups++;
          if (counter.failing) throw new Error('Connection terminated unexpectedly');
          // Held after the read: what was read is what arrives, however late.
          const found = await target.findKeyByHash(hash);
          if (gate !== undefined) await gate;
          return found;
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
    set(_target, property, value) {
      (counter as any)[property] = value;
      return true;
    },
  }) as Store & { lookups: number; failing: boolean; hold(): () => void };
}

async function authError(promise: Promise<unknown>): Promise<AuthenticationError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(AuthenticationError);
  expect((error as AuthenticationError).status).toBe(401);
  return error as AuthenticationError;
}

describe('KeyService', () => {
  let raw: Store;
  let store: ReturnType<typeof countingStore>;
  let clock: VirtualClock;
  let bus: InProcessInvalidationBus;
  let tenants: TenantService;
  let keys: KeyService;
  let tenantId: string;

  beforeEach(async () => {
    raw = await createStore('sqlite://:memory:');
    await raw.migrate();
    store = countingStore(raw);
    clock = new VirtualClock(Date.UTC(2030, 0, 1));
    bus = new InProcessInvalidationBus();
    tenants = new TenantService(store, { bus, clock });
    keys = new KeyService(store, { clock, bus, cacheTtlMs: 5000, negativeTtlMs: 1000 });
    tenantId = (await tenants.createTenant('acme')).id;
  });

  afterEach(async () => {
    keys.close();
    await raw.close();
  });

  it('authenticates a key, then refuses it at once after a revoke', async () => {
    const { record, key } = await tenants.createKey(tenantId, { models: ['model-a', 'model-b'] });
    const principal = await keys.authenticate(`Bearer ${key}`);
    expect(principal).toEqual({
      tenantId,
      keyId: record.id,
      models: new Set(['model-a', 'model-b']),
      expiresAt: null,
    });
    // Cached now: the next call does not reach the store.
    await keys.authenticate(`Bearer ${key}`);
    expect(store.lookups).toBe(1);

    await tenants.revokeKey(record.id);
    expect((await authError(keys.authenticate(`Bearer ${key}`))).code).toBe('revoked_api_key');
  });

  it('gives all models to a key without a list', async () => {
    const { key } = await tenants.createKey(tenantId);
    expect((await keys.authenticate(`bearer   ${key}  `)).models).toBeNull();
  });

  it('answers missing and invalid keys with distinct codes', async () => {
    expect((await authError(keys.authenticate(undefined))).code).toBe('missing_api_key');
    expect((await authError(keys.authenticate(''))).code).toBe('missing_api_key');
    expect((await authError(keys.authenticate('Bearer '))).code).toBe('missing_api_key');
    expect((await authError(keys.authenticate('Basic dXNlcjpwYXNz'))).code).toBe('invalid_api_key');
    expect((await authError(keys.authenticate('Bearer sk-not-ours'))).code).toBe('invalid_api_key');
    expect(store.lookups).toBe(0);
    expect((await authError(keys.authenticate(`Bearer ${generateApiKey().key}`))).code).toBe('invalid_api_key');
    expect(store.lookups).toBe(1);
  });

  it('refuses an expired key even while it is cached', async () => {
    const expiresAt = clock.now() + 60_000;
    const { key } = await tenants.createKey(tenantId, { expiresAt });
    keys = new KeyService(store, { clock, cacheTtlMs: 3_600_000 });
    expect((await keys.authenticate(`Bearer ${key}`)).expiresAt).toBe(expiresAt);
    clock.advance(59_999);
    await keys.authenticate(`Bearer ${key}`);
    clock.advance(1);
    expect((await authError(keys.authenticate(`Bearer ${key}`))).code).toBe('expired_api_key');
    expect(store.lookups).toBe(1);
  });

  it('caches unknown keys for the negative TTL only', async () => {
    const { key, hash } = generateApiKey();
    await authError(keys.authenticate(`Bearer ${key}`));
    await authError(keys.authenticate(`Bearer ${key}`));
    expect(store.lookups).toBe(1);

    // The key appears in the store (created elsewhere): still refused until the negative entry goes stale.
    await raw.createKey({ tenantId, name: null, prefix: key.slice(0, 11), hash, models: null, expiresAt: null });
    clock.advance(999);
    await authError(keys.authenticate(`Bearer ${key}`));
    expect(store.lookups).toBe(1);
    clock.advance(1);
    expect((await keys.authenticate(`Bearer ${key}`)).tenantId).toBe(tenantId);
    expect(store.lookups).toBe(2);
  });

  it('refuses with a retryable 503 while the store fails, and never serves an entry past its lifetime', async () => {
    const failures: unknown[] = [];
    const watched = new KeyService(store, { clock, cacheTtlMs: 5000, onStoreFailure: (error) => failures.push(error) });
    const { key } = await tenants.createKey(tenantId);
    await watched.authenticate(`Bearer ${key}`);
    store.failing = true;
    // A fresh entry needs no store.
    expect((await watched.authenticate(`Bearer ${key}`)).tenantId).toBe(tenantId);
    clock.advance(5000);
    const refused = await watched.authenticate(`Bearer ${key}`).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(StoreUnavailableError);
    expect(refused).toMatchObject({ status: 503, code: 'store_unavailable', retryable: true });
    expect(failures).toHaveLength(1);
    store.failing = false;
    expect((await watched.authenticate(`Bearer ${key}`)).tenantId).toBe(tenantId);
  });

  it('refreshes a positive entry after the cache TTL', async () => {
    const { key } = await tenants.createKey(tenantId);
    await keys.authenticate(`Bearer ${key}`);
    clock.advance(4999);
    await keys.authenticate(`Bearer ${key}`);
    expect(store.lookups).toBe(1);
    clock.advance(1);
    await keys.authenticate(`Bearer ${key}`);
    expect(store.lookups).toBe(2);
  });

  it('sees a revoke made without the bus once the cache TTL passes', async () => {
    const { record, key } = await tenants.createKey(tenantId);
    await keys.authenticate(`Bearer ${key}`);
    await raw.revokeKey(record.id, clock.now());
    await keys.authenticate(`Bearer ${key}`);
    clock.advance(5000);
    expect((await authError(keys.authenticate(`Bearer ${key}`))).code).toBe('revoked_api_key');
  });

  it('drops every cached key when the bus announces that anything may have changed (a reconnected bus)', async () => {
    const first = await tenants.createKey(tenantId);
    const second = await tenants.createKey(tenantId);
    await keys.authenticate(`Bearer ${first.key}`);
    await keys.authenticate(`Bearer ${second.key}`);
    // Revoked elsewhere while this process's bus was not listening: its message never came.
    await raw.revokeKey(first.record.id, clock.now());
    expect((await keys.authenticate(`Bearer ${first.key}`)).keyId).toBe(first.record.id);
    const lookups = store.lookups;
    await bus.publish(ConfigSubject.all);
    expect((await authError(keys.authenticate(`Bearer ${first.key}`))).code).toBe('revoked_api_key');
    expect((await keys.authenticate(`Bearer ${second.key}`)).keyId).toBe(second.record.id);
    expect(store.lookups).toBe(lookups + 2);
  });

  it('coalesces 100 concurrent lookups of an uncached key into one store call', async () => {
    const { record, key } = await tenants.createKey(tenantId);
    const release = store.hold();
    const attempts = Array.from({ length: 100 }, () => keys.authenticate(`Bearer ${key}`));
    await new Promise((resolve) => setImmediate(resolve));
    release();
    const principals = await Promise.all(attempts);
    expect(store.lookups).toBe(1);
    expect(new Set(principals.map((principal) => principal.keyId))).toEqual(new Set([record.id]));
  });

  it('does not cache a lookup that was in flight when the key was revoked', async () => {
    const { record, key } = await tenants.createKey(tenantId);
    const release = store.hold();
    const before = keys.authenticate(`Bearer ${key}`);
    await new Promise((resolve) => setImmediate(resolve));
    keys.invalidateKey(record.id);
    release();
    await before;
    await raw.revokeKey(record.id, clock.now());
    expect((await authError(keys.authenticate(`Bearer ${key}`))).code).toBe('revoked_api_key');
    expect(store.lookups).toBe(2);
  });

  it('does not hand a lookup that began before a revocation to a request after it', async () => {
    const { record, key } = await tenants.createKey(tenantId);
    const release = store.hold();
    const before = keys.authenticate(`Bearer ${key}`);
    await new Promise((resolve) => setImmediate(resolve));
    await raw.revokeKey(record.id, clock.now());
    keys.invalidateKey(record.id);
    const after = authError(keys.authenticate(`Bearer ${key}`));
    release();
    expect((await before).keyId).toBe(record.id);
    expect((await after).code).toBe('revoked_api_key');
    expect(store.lookups).toBe(2);
  });

  it('invalidateAll empties the cache', async () => {
    const first = await tenants.createKey(tenantId);
    const second = await tenants.createKey(tenantId);
    await keys.authenticate(`Bearer ${first.key}`);
    await keys.authenticate(`Bearer ${second.key}`);
    expect(keys.cacheSize).toBe(2);
    keys.invalidateAll();
    expect(keys.cacheSize).toBe(0);
    await keys.authenticate(`Bearer ${first.key}`);
    expect(store.lookups).toBe(3);
  });

  it('bounds the cache, evicting the oldest entry', async () => {
    keys = new KeyService(store, { clock, maxEntries: 3 });
    const created = [];
    for (let index = 0; index < 5; index++) created.push(await tenants.createKey(tenantId));
    for (const { key } of created) await keys.authenticate(`Bearer ${key}`);
    expect(keys.cacheSize).toBe(3);
    expect(store.lookups).toBe(5);
    await keys.authenticate(`Bearer ${created[4]!.key}`);
    expect(store.lookups).toBe(5);
    await keys.authenticate(`Bearer ${created[0]!.key}`);
    expect(store.lookups).toBe(6);
  });
});
