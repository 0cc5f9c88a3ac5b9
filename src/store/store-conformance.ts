import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NewApiKey, RequestLogRecord, Store } from './store.js';

/** How the conformance suite reaches one store implementation. */
export interface StoreConformanceOptions {
  /**
   * Opens a new, not yet migrated store on the suite's database (every call: the same SQLite file or PostgreSQL
   * schema). The suite closes what it opens.
   */
  openStore: () => Promise<Store>;
  /**
   * Whether two stores from `openStore` may run queries concurrently inside one process. False for SQLite:
   * better-sqlite3 is synchronous, so a connection waiting for another connection's write lock blocks the thread
   * that would release it (the cross-process case is tested with child processes instead).
   */
  concurrentInstances: boolean;
}

/** Registers the `Store` conformance tests (Vitest) for one implementation. */
export function describeStoreConformance(name: string, options: StoreConformanceOptions): void {
  describe(`Store conformance: ${name}`, () => {
    let store: Store;
    const opened: Store[] = [];
    const open = async (): Promise<Store> => {
      const instance = await options.openStore();
      opened.push(instance);
      return instance;
    };

    beforeAll(async () => {
      store = await open();
      await store.migrate();
    });

    afterAll(async () => {
      for (const instance of opened) await instance.close();
    });

    describe('migrate', () => {
      it('is idempotent when run again on a migrated database', async () => {
        await store.migrate();
        await store.migrate();
        const tenant = await store.createTenant('after re-migrate');
        expect(await store.getTenant(tenant.id)).toEqual(tenant);
      });

      it('tolerates concurrent runs on one instance', async () => {
        await Promise.all([store.migrate(), store.migrate(), store.migrate()]);
        expect(await store.listTenants()).toBeInstanceOf(Array);
      });

      it.runIf(options.concurrentInstances)('tolerates concurrent runs from several instances', async () => {
        const others = await Promise.all([open(), open(), open()]);
        await Promise.all(others.map((other) => other.migrate()));
        const tenant = await others[0]!.createTenant('seen by all');
        for (const other of others) expect(await other.getTenant(tenant.id)).toEqual(tenant);
      });
    });

    describe('tenants', () => {
      it('creates, reads and lists tenants', async () => {
        const before = Date.now();
        const first = await store.createTenant('Acme');
        const second = await store.createTenant('Globex');
        expect(first.id).toMatch(/^ten_[0-9A-Za-z]{24}$/);
        expect(second.id).not.toBe(first.id);
        expect(first.name).toBe('Acme');
        expect(first.createdAt).toBeGreaterThanOrEqual(before);
        expect(first.createdAt).toBeLessThanOrEqual(Date.now());

        const read = await store.getTenant(first.id);
        expect(read).toEqual(first);
        expect(typeof read?.createdAt).toBe('number');
        expect(await store.getTenant('ten_doesnotexist')).toBeUndefined();

        const ids = (await store.listTenants()).map((tenant) => tenant.id);
        expect(ids).toContain(first.id);
        expect(ids).toContain(second.id);
      });
    });

    describe('api keys', () => {
      it('creates a key and finds it by id and by hash', async () => {
        const tenant = await store.createTenant('keys');
        const expiresAt = Date.UTC(2031, 0, 1, 12, 30, 15, 123);
        const key = await store.createKey(newKey(tenant.id, { name: 'ci', models: ['gpt-x', 'embed-y'], expiresAt }));
        expect(key.id).toMatch(/^key_[0-9A-Za-z]{24}$/);
        expect(key).toMatchObject({ tenantId: tenant.id, name: 'ci', models: ['gpt-x', 'embed-y'], expiresAt });
        expect(key.revokedAt).toBeNull();

        const byId = await store.getKey(key.id);
        expect(byId).toEqual(key);
        expect(typeof byId?.expiresAt).toBe('number');
        expect(await store.findKeyByHash(key.hash)).toEqual(key);
        expect(await store.findKeyByHash(sha256('not a key'))).toBeUndefined();
        expect(await store.getKey('key_doesnotexist')).toBeUndefined();
      });

      it('keeps null models (all models) apart from a list, including an empty list', async () => {
        const tenant = await store.createTenant('models');
        const all = await store.createKey(newKey(tenant.id, { models: null }));
        const none = await store.createKey(newKey(tenant.id, { models: [] }));
        const one = await store.createKey(newKey(tenant.id, { models: ['m'] }));
        expect((await store.getKey(all.id))?.models).toBeNull();
        expect((await store.getKey(none.id))?.models).toEqual([]);
        expect((await store.findKeyByHash(one.hash))?.models).toEqual(['m']);
        expect((await store.getKey(all.id))?.expiresAt).toBeNull();
        expect((await store.getKey(all.id))?.name).toBeNull();
      });

      it('lists only the keys of the given tenant', async () => {
        const alpha = await store.createTenant('alpha');
        const beta = await store.createTenant('beta');
        const alphaKeys = [await store.createKey(newKey(alpha.id)), await store.createKey(newKey(alpha.id))];
        const betaKey = await store.createKey(newKey(beta.id));
        const listed = await store.listKeys(alpha.id);
        expect(listed.map((key) => key.id).sort()).toEqual(alphaKeys.map((key) => key.id).sort());
        expect((await store.listKeys(beta.id)).map((key) => key.id)).toEqual([betaKey.id]);
        expect(await store.listKeys('ten_nobody')).toEqual([]);
      });

      it('revokes idempotently, keeping the first revocation time', async () => {
        const tenant = await store.createTenant('revoke');
        const key = await store.createKey(newKey(tenant.id));
        const first = await store.revokeKey(key.id, 1_700_000_000_123);
        expect(first?.revokedAt).toBe(1_700_000_000_123);
        const second = await store.revokeKey(key.id, 1_800_000_000_000);
        expect(second?.revokedAt).toBe(1_700_000_000_123);
        expect((await store.findKeyByHash(key.hash))?.revokedAt).toBe(1_700_000_000_123);
        expect(await store.revokeKey('key_doesnotexist', 1)).toBeUndefined();
      });

      it('rejects a duplicate hash and a key of an unknown tenant', async () => {
        const tenant = await store.createTenant('constraints');
        const key = await store.createKey(newKey(tenant.id));
        await expect(store.createKey({ ...newKey(tenant.id), hash: key.hash })).rejects.toThrow();
        await expect(store.createKey(newKey('ten_doesnotexist'))).rejects.toThrow();
        expect((await store.listKeys(tenant.id)).length).toBe(1);
      });
    });

    describe('request log', () => {
      it('round-trips every field', async () => {
        const tenantId = `ten_log_${randomSuffix()}`;
        const full = logRecord(tenantId, 1_700_000_000_001, {
          keyId: 'key_1',
          model: 'gpt-x',
          deployment: 'sim/gpt-x',
          status: 502,
          errorCode: 'upstream_error',
          stream: true,
          promptTokens: 1234,
          cachedTokens: 1000,
          completionTokens: 56,
          reasoningTokens: 7,
          usageEstimated: true,
          latencyMs: 987.125,
          ttftMs: 45.5,
          attempts: 3,
        });
        const sparse = logRecord(tenantId, 1_700_000_000_002, {
          tenantId: null,
          keyId: null,
          model: null,
          deployment: null,
          ttftMs: null,
        });
        await store.insertRequestLogs([full, { ...sparse, tenantId }]);
        const rows = await store.listRequestLogs({ tenantId });
        expect(rows).toEqual([{ ...sparse, tenantId }, full]);
        await store.insertRequestLogs([{ ...sparse, requestId: `${sparse.requestId}-null` }]);
        const orphan = (await store.listRequestLogs({ since: 1_700_000_000_002, until: 1_700_000_000_003 })).find(
          (row) => row.requestId === `${sparse.requestId}-null`,
        );
        expect(orphan).toEqual({ ...sparse, requestId: `${sparse.requestId}-null` });
      });

      it('ignores a record whose request id exists, within and across batches', async () => {
        const tenantId = `ten_idem_${randomSuffix()}`;
        const first = logRecord(tenantId, 1000, { promptTokens: 1 });
        const second = logRecord(tenantId, 2000, { promptTokens: 2 });
        await store.insertRequestLogs([first, second]);
        await store.insertRequestLogs([{ ...first, promptTokens: 99 }, logRecord(tenantId, 3000), second]);
        await store.insertRequestLogs([]);
        const rows = await store.listRequestLogs({ tenantId });
        expect(rows.length).toBe(3);
        expect(rows.find((row) => row.requestId === first.requestId)?.promptTokens).toBe(1);

        const duplicate = logRecord(tenantId, 4000);
        await store.insertRequestLogs([duplicate, { ...duplicate, promptTokens: 5 }]);
        expect((await store.listRequestLogs({ tenantId })).length).toBe(4);
      });

      it('filters by tenant and time range, newest first, with a limit', async () => {
        const tenantA = `ten_a_${randomSuffix()}`;
        const tenantB = `ten_b_${randomSuffix()}`;
        const base = 1_650_000_000_000;
        const records = [
          ...[0, 1, 2, 3, 4].map((offset) => logRecord(tenantA, base + offset * 1000)),
          ...[0, 2].map((offset) => logRecord(tenantB, base + offset * 1000)),
        ];
        await store.insertRequestLogs(records);
        const times = (rows: RequestLogRecord[]): number[] => rows.map((row) => row.createdAt - base);

        expect(times(await store.listRequestLogs({ tenantId: tenantA }))).toEqual([4000, 3000, 2000, 1000, 0]);
        expect(
          times(await store.listRequestLogs({ tenantId: tenantA, since: base + 1000, until: base + 3000 })),
        ).toEqual([2000, 1000]);
        expect(times(await store.listRequestLogs({ tenantId: tenantA, limit: 2 }))).toEqual([4000, 3000]);
        const both = await store.listRequestLogs({ since: base, until: base + 2001, limit: 1000 });
        expect(both.filter((row) => row.tenantId === tenantA || row.tenantId === tenantB).length).toBe(5);
        expect((await store.listRequestLogs({ tenantId: tenantB })).every((row) => row.tenantId === tenantB)).toBe(
          true,
        );
      });

      it('defaults to 100 rows', async () => {
        const tenantId = `ten_many_${randomSuffix()}`;
        await store.insertRequestLogs(Array.from({ length: 120 }, (_, index) => logRecord(tenantId, 10_000 + index)));
        expect((await store.listRequestLogs({ tenantId })).length).toBe(100);
      });

      it('inserts a batch larger than one statement can carry', async () => {
        // 5,000 rows × 18 columns = 90,000 parameters: above both SQLite's 32,766 and PostgreSQL's 65,535.
        const tenantId = `ten_big_${randomSuffix()}`;
        const records = Array.from({ length: 5000 }, (_, index) => logRecord(tenantId, 20_000 + index));
        await store.insertRequestLogs(records);
        const rows = await store.listRequestLogs({ tenantId, limit: 10_000 });
        expect(rows.length).toBe(5000);
        expect(new Set(rows.map((row) => row.requestId))).toEqual(new Set(records.map((record) => record.requestId)));
      });
    });

    describe('settings', () => {
      it('reads a missing setting as undefined and keeps the first value', async () => {
        const key = `setting_${randomSuffix()}`;
        expect(await store.getSetting(key)).toBeUndefined();
        expect(await store.putSettingIfAbsent(key, 'one')).toBe(true);
        expect(await store.putSettingIfAbsent(key, 'two')).toBe(false);
        expect(await store.getSetting(key)).toBe('one');
      });

      it('lets exactly one of 10 concurrent callers set a key', async () => {
        const key = `race_${randomSuffix()}`;
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, index) => store.putSettingIfAbsent(key, `value-${index}`)),
        );
        expect(results.filter(Boolean).length).toBe(1);
        expect(await store.getSetting(key)).toBe(`value-${results.indexOf(true)}`);
      });

      it.runIf(options.concurrentInstances)('lets exactly one of several instances set a key', async () => {
        const others = await Promise.all([open(), open()]);
        const key = `race_multi_${randomSuffix()}`;
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, index) => others[index % 2]!.putSettingIfAbsent(key, `value-${index}`)),
        );
        expect(results.filter(Boolean).length).toBe(1);
        expect(await store.getSetting(key)).toBe(`value-${results.indexOf(true)}`);
      });
    });
  });
}

function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function newKey(tenantId: string, overrides: Partial<NewApiKey> = {}): NewApiKey {
  const secret = `tg-${randomBytes(32).toString('base64url')}`;
  return {
    tenantId,
    name: null,
    prefix: secret.slice(0, 11),
    hash: sha256(secret),
    models: null,
    expiresAt: null,
    ...overrides,
  };
}

function logRecord(tenantId: string, createdAt: number, overrides: Partial<RequestLogRecord> = {}): RequestLogRecord {
  return {
    requestId: `req_${randomSuffix()}`,
    tenantId,
    keyId: 'key_test',
    endpoint: 'chat',
    model: 'model-a',
    deployment: 'sim/model-a',
    status: 200,
    errorCode: null,
    stream: false,
    promptTokens: 10,
    cachedTokens: 0,
    completionTokens: 20,
    reasoningTokens: 0,
    usageEstimated: false,
    latencyMs: 100,
    ttftMs: null,
    attempts: 1,
    createdAt,
    ...overrides,
  };
}
