import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  billingRollupFixture,
  logOf,
  requestLogFixture,
  settlementOf,
  topUpFixture,
  usageEventFixture,
} from './ledger-fixtures.js';
import {
  BalanceOutOfRangeError,
  type BillingRollupRow,
  type BudgetRecord,
  MAX_NANO,
  type RollupBucket,
  ratingOf,
  type Settlement,
  type StreamCheckpoint,
  type UsageEventRecord,
  type UsageRollupRow,
} from './ledger-store.js';
import type { CreationPageQuery, NewApiKey, RequestLogRecord, Store } from './store.js';

/** How the conformance suite reaches one store implementation. */
export interface StoreConformanceOptions {
  /**
   * Opens a new, not yet migrated store on the suite's database (every call: the same SQLite file or PostgreSQL
   * schema). The suite closes what it opens.
   */
  openStore: () => Promise<Store>;
}

/** Registers the `Store` conformance tests (Vitest) for one implementation. */
export function describeStoreConformance(name: string, options: StoreConformanceOptions): void {
  describe(`Store conformance: ${name}`, () => {
    let store: Store;
    /**
     * Instances a test opens besides `store` (other processes on the same store), closed after it: kept to the end,
     * their pools would hold more PostgreSQL connections than the server allows alongside the rest of the suite.
     */
    const opened: Store[] = [];
    const open = async (): Promise<Store> => {
      const instance = await options.openStore();
      opened.push(instance);
      return instance;
    };

    beforeAll(async () => {
      store = await options.openStore();
      await store.migrate();
    });

    afterEach(async () => {
      for (const instance of opened.splice(0)) await instance.close();
    });

    afterAll(async () => {
      await store.close();
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

      it('tolerates concurrent runs from several instances', async () => {
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

      it('pages through tenants created in one millisecond, none lost or repeated', async () => {
        await store.createTenant('before the same-millisecond ones');
        const at = Date.UTC(2031, 0, 1);
        const made = await inOneMillisecond(at, async () => {
          const tenants = [];
          for (let index = 0; index < 5; index++) tenants.push(await store.createTenant(`same millisecond ${index}`));
          return tenants;
        });
        expect(made.map((tenant) => tenant.createdAt)).toEqual(made.map(() => at));

        const all = await store.listTenants();
        expect(new Set(all.map((tenant) => tenant.id)).size).toBe(all.length);
        expect(isInCreationOrder(all)).toBe(true);
        // The ties, in the store's order of their ids, follow one another: no other tenant has this time.
        const ours = all.filter((tenant) => tenant.createdAt === at);
        expect(ours.map((tenant) => tenant.id).sort()).toEqual(made.map((tenant) => tenant.id).sort());
        const start = all.indexOf(ours[0]!);
        expect(all.slice(start, start + ours.length)).toEqual(ours);

        for (const limit of [1, 2, all.length + 1]) {
          const pages = await pageThrough(limit, (page) => store.listTenants(page));
          expect(pages.flat(), `limit ${limit}`).toEqual(all);
          expect(pages.every((page) => page.length <= limit)).toBe(true);
        }
        // A cursor on a tie: the tenants after it at the same time, then the later ones.
        expect(await store.listTenants({ after: ours[1]!, limit: 3 })).toEqual(all.slice(start + 2, start + 5));
        expect(await store.listTenants({ after: all.at(-1)! })).toEqual([]);
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

      it("pages through one tenant's keys created in one millisecond, never another tenant's", async () => {
        const alpha = await store.createTenant('paged keys');
        const beta = await store.createTenant('other keys');
        const at = Date.UTC(2031, 0, 2);
        const made = await inOneMillisecond(at, async () => {
          const keys = [];
          // Interleaved, so the other tenant's keys sit between these in (created_at, id) order.
          for (let index = 0; index < 5; index++) {
            keys.push(await store.createKey(newKey(alpha.id)), await store.createKey(newKey(beta.id)));
          }
          return keys;
        });
        const alphaIds = made.filter((key) => key.tenantId === alpha.id).map((key) => key.id);
        const betaKeys = made.filter((key) => key.tenantId === beta.id);

        const all = await store.listKeys(alpha.id);
        expect(all.map((key) => key.id).sort()).toEqual([...alphaIds].sort());
        expect(isInCreationOrder(all)).toBe(true);
        for (const limit of [1, 2, all.length + 1]) {
          const pages = await pageThrough(limit, (page) => store.listKeys(alpha.id, page));
          expect(pages.flat(), `limit ${limit}`).toEqual(all);
          expect(pages.every((page) => page.length <= limit)).toBe(true);
        }
        // Even from a position taken from another tenant's key, only this tenant's keys come back.
        for (const other of betaKeys) {
          const after = await store.listKeys(alpha.id, { after: other });
          expect(after.every((key) => key.tenantId === alpha.id)).toBe(true);
          expect(after).toEqual(all.slice(all.length - after.length));
        }
        expect(await store.listKeys(alpha.id, { after: all.at(-1)!, limit: 10 })).toEqual([]);
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

      it('stores the attempt log, written by settle and by insertRequestLogs, and omits it when none', async () => {
        const tenantId = `ten_attempts_${randomSuffix()}`;
        // Quotes, backslashes, braces, commas and the word NULL: every character an array or JSON encoding escapes.
        const attemptLog = JSON.stringify([
          { deployment: 'a/"m"', outcome: 'upstream_error', note: 'back\\slash {x, y} NULL' },
          { deployment: 'b/m', outcome: 'ok', note: 'ünïcødé 🚀' },
        ]);
        const settled = logRecord(tenantId, 1_700_100_000_001, { attempts: 2, attemptLog });
        const inserted = logRecord(tenantId, 1_700_100_000_002, { attemptLog: 'NULL' });
        const explicitNull = logRecord(tenantId, 1_700_100_000_003, { attemptLog: null });
        const without = logRecord(tenantId, 1_700_100_000_004);
        await store.settle([{ log: settled }, { log: explicitNull }]);
        await store.insertRequestLogs([inserted, without]);
        const { attemptLog: _none, ...explicitNullRead } = explicitNull;
        expect(await store.listRequestLogs({ tenantId })).toEqual([without, explicitNullRead, inserted, settled]);
        const rows = await store.listRequestLogs({ tenantId });
        expect(rows.map((row) => 'attemptLog' in row)).toEqual([false, false, true, true]);
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

    describeLedgerConformance(() => store);

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

      it('lets exactly one of several instances set a key', async () => {
        const others = await Promise.all([open(), open()]);
        const key = `race_multi_${randomSuffix()}`;
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, index) => others[index % 2]!.putSettingIfAbsent(key, `value-${index}`)),
        );
        expect(results.filter(Boolean).length).toBe(1);
        expect(await store.getSetting(key)).toBe(`value-${results.indexOf(true)}`);
      });
    });

    describe('ledger across instances', () => {
      // What workers on one SQLite file, or cluster processes on one PostgreSQL, rely on for "no overspend".
      it('lets exactly as many concurrent reservations through several instances as the wallet covers', async () => {
        const others = await Promise.all([open(), open()]);
        const tenantId = `ten_multi_${randomSuffix()}`;
        await store.addWalletTransaction(topUp(tenantId, 20n, null));
        const results = await Promise.all(
          Array.from({ length: 60 }, (_, index) => others[index % 2]!.reserve(tenantId, 1n)),
        );
        expect(results.filter(Boolean)).toHaveLength(20);
        expect((await store.getWallet(tenantId))?.reserved).toBe(20n);
        expect(await others[0]!.reserve(tenantId, 1n)).toBe(false);
      });

      it('bounds concurrent top-ups and credit-limit changes through several instances', async () => {
        const others = await Promise.all([open(), open()]);
        const quarter = MAX_NANO / 4n;
        const tenantId = `ten_maxmulti_${randomSuffix()}`;
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, index) =>
            others[index % 2]!.addWalletTransaction(topUp(tenantId, quarter, null)),
          ),
        );
        const accepted = acceptedInRangeRace(results).map((written) => written.record);
        expect(accepted).toHaveLength(4);
        expect((await store.getWallet(tenantId))?.balance).toBe(4n * quarter);
        expect(sortedIds(await store.listWalletTransactions(tenantId))).toEqual(sortedIds(accepted));

        // A credit limit of half the range racing four top-ups of a quarter: whichever order they take, the sum
        // stays in range, and only what did not fit was refused (the limit with two top-ups, or four top-ups alone).
        const mixed = `ten_maxmixed_${randomSuffix()}`;
        await store.configureWallet(mixed, { mode: 'prepaid', currency: 'CNY', creditLimit: 0n });
        const half = MAX_NANO / 2n;
        const [limit, topUps] = await Promise.all([
          Promise.allSettled([
            others[0]!.configureWallet(mixed, { mode: 'postpaid', currency: 'CNY', creditLimit: half }),
          ]),
          Promise.allSettled(
            Array.from({ length: 4 }, (_, index) =>
              others[index % 2]!.addWalletTransaction(topUp(mixed, quarter, null)),
            ),
          ),
        ]);
        const creditLimit = acceptedInRangeRace(limit).length === 1 ? half : 0n;
        const credited = acceptedInRangeRace(topUps).length;
        const balance = BigInt(credited) * quarter;
        expect(await store.getWallet(mixed)).toMatchObject({ balance, creditLimit });
        expect(balance + creditLimit).toBeLessThanOrEqual(MAX_NANO);
        expect(balance + creditLimit).toBeGreaterThan(MAX_NANO - quarter);
        expect(await store.listWalletTransactions(mixed)).toHaveLength(credited);
      });

      it("runs one owner's reservations, releases and settlements concurrently without a deadlock", async () => {
        const others = await Promise.all([open(), open()]);
        const tenantId = `ten_lockorder_${randomSuffix()}`;
        const owner = `owner-lock-${randomSuffix()}`;
        await store.addWalletTransaction(topUp(tenantId, 1_000_000n, null));
        await store.heartbeatReservationOwner(owner, FAR_FUTURE);
        // Reserving takes the wallet row, then the hold; releasing and settling must take them in the same order.
        await Promise.all(
          Array.from({ length: 40 }, async (_, index) => {
            const instance = others[index % 2]!;
            expect(await instance.reserve(tenantId, 10n, owner)).toBe(true);
            if (index % 2 === 0) await instance.release(tenantId, 10n, owner);
            else {
              const event = usageEventFixture({ requestId: `req_lock_${randomSuffix()}`, tenantId, amount: 1n });
              await instance.settle([settlementOf(event, { reservation: { tenantId, amount: 10n, owner } })]);
            }
          }),
        );
        expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
        expect(await store.sweepReservationOwners(FAR_FUTURE + 1)).toEqual({ owners: 1, released: 0n });
      });

      it('sweeps an owner while it still reserves and releases on several wallets, without a deadlock', async () => {
        const others = await Promise.all([open(), open(), open()]);
        const tenants = [0, 1, 2, 3].map((index) => `ten_sweeprace_${index}_${randomSuffix()}`);
        const owner = `owner-late-${randomSuffix()}`;
        for (const tenantId of tenants) await store.addWalletTransaction(topUp(tenantId, 1_000_000n, null));
        // Its beat is older than the sweeps' limit: swept as dead while it goes on (a process that was paused).
        await store.heartbeatReservationOwner(owner, FAR_FUTURE);
        const staleBefore = FAR_FUTURE + 1;
        let working = true;
        const work = Promise.all(
          Array.from({ length: 120 }, async (_, index) => {
            const instance = others[index % 2]!;
            const tenantId = tenants[(index * 3) % tenants.length]!;
            if (await instance.reserve(tenantId, 10n, owner)) await instance.release(tenantId, 10n, owner);
          }),
        ).finally(() => {
          working = false;
        });
        // Sweeps one after another in three lanes for as long as the work goes on, so that reservations land between
        // a sweep's statements. Each lane yields to the event loop between sweeps: SQLite's can end without it, and the
        // lanes would then never let the work run.
        const sweeps = [0, 1, 2].map(async () => {
          while (working) {
            await others[2]!.sweepReservationOwners(staleBefore);
            await new Promise((resolve) => setImmediate(resolve));
          }
        });
        await Promise.all([work, ...sweeps]);
        // Whatever the interleaving, each reservation left the wallet once: released by its owner or by a sweep.
        await store.sweepReservationOwners(staleBefore);
        for (const tenantId of tenants) expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      });

      it('renews an owner with its holds or sweeps both, however a renewal and two sweeps interleave', async () => {
        const others = await Promise.all([open(), open(), open()]);
        const tenantId = `ten_renewrace_${randomSuffix()}`;
        await store.addWalletTransaction(topUp(tenantId, 1_000_000n, null));
        for (let round = 0; round < 30; round++) {
          const owner = `owner-renew-${round}-${randomSuffix()}`;
          await store.heartbeatReservationOwner(owner, FAR_FUTURE);
          expect(await store.reserve(tenantId, 7n, owner)).toBe(true);
          // Late by the sweeps' measure; its process renews it while they run.
          const [renewed] = await Promise.all([
            others[0]!.renewReservationOwner(owner, FAR_FUTURE + 1_000),
            others[1]!.sweepReservationOwners(FAR_FUTURE + 500),
            others[2]!.sweepReservationOwners(FAR_FUTURE + 500),
          ]);
          const state = {
            renewed,
            listed: (await store.listReservationOwners()).includes(owner),
            reserved: (await store.getWallet(tenantId))?.reserved,
          };
          // Never an owner kept alive whose holds a sweep released: its requests would run unreserved.
          expect(state).toEqual(
            renewed ? { renewed, listed: true, reserved: 7n } : { renewed, listed: false, reserved: 0n },
          );
          if (renewed) await store.release(tenantId, 7n, owner);
          await store.sweepReservationOwners(FAR_FUTURE + 2_000);
        }
      });

      it('holds concurrent reservations of two owners exactly, and a sweep releases only the dead one', async () => {
        const others = await Promise.all([open(), open()]);
        const tenantId = `ten_owners_${randomSuffix()}`;
        const owners = [`owner-x-${randomSuffix()}`, `owner-y-${randomSuffix()}`] as const;
        await store.addWalletTransaction(topUp(tenantId, 20n, null));
        // Far in the future, so that no other test's sweep takes them; x then goes silent.
        await others[0]!.heartbeatReservationOwner(owners[0], FAR_FUTURE);
        await others[1]!.heartbeatReservationOwner(owners[1], FAR_FUTURE + 10);
        const results = await Promise.all(
          Array.from({ length: 60 }, (_, index) => others[index % 2]!.reserve(tenantId, 1n, owners[index % 2])),
        );
        expect(results.filter(Boolean)).toHaveLength(20);
        const byOwner = [0, 1].map((owner) => results.filter((ok, index) => ok && index % 2 === owner).length);
        expect((await store.getWallet(tenantId))?.reserved).toBe(20n);
        expect(await store.sweepReservationOwners(FAR_FUTURE + 5)).toEqual({
          owners: 1,
          released: BigInt(byOwner[0]!),
        });
        expect((await store.getWallet(tenantId))?.reserved).toBe(BigInt(byOwner[1]!));
        expect(await store.sweepReservationOwners(FAR_FUTURE + 20)).toEqual({
          owners: 1,
          released: BigInt(byOwner[1]!),
        });
        expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      });
    });
  });
}

const UNIT = 1_000_000_000n;
/** A heartbeat time no sweep of another test reaches (they sweep before now). */
const FAR_FUTURE = Date.UTC(2100, 0, 1);
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** 2^62 + 3: exact only as a 64-bit integer (a double would round it). */
const HUGE = 2n ** 62n + 3n;

/** The ledger half of the conformance suite. */
function describeLedgerConformance(getStore: () => Store): void {
  describe('ledger: wallets', () => {
    it('has no wallet until one is configured, and keeps balance and reservations on reconfiguration', async () => {
      const store = getStore();
      const tenantId = `ten_w_${randomSuffix()}`;
      expect(await store.getWallet(tenantId)).toBeUndefined();
      const created = await store.configureWallet(tenantId, { mode: 'prepaid', currency: 'CNY', creditLimit: 0n });
      expect(created).toMatchObject({ tenantId, mode: 'prepaid', currency: 'CNY', balance: 0n, reserved: 0n });
      await store.addWalletTransaction(topUp(tenantId, 7n * UNIT, null));
      expect(await store.reserve(tenantId, 2n * UNIT)).toBe(true);
      const updated = await store.configureWallet(tenantId, { mode: 'postpaid', currency: 'CNY', creditLimit: HUGE });
      expect(updated).toMatchObject({ mode: 'postpaid', balance: 7n * UNIT, reserved: 2n * UNIT, creditLimit: HUGE });
      expect(typeof updated.balance).toBe('bigint');
      expect(await store.getWallet(tenantId)).toEqual(updated);
    });

    it('applies a top-up once per idempotency key, sequentially', async () => {
      const store = getStore();
      const tenantId = `ten_idem_${randomSuffix()}`;
      const first = await store.addWalletTransaction({ ...topUp(tenantId, 5n * UNIT, 'key-1'), note: 'first' });
      expect(first.created).toBe(true);
      expect(first.record).toMatchObject({ tenantId, kind: 'topup', amount: 5n * UNIT, idempotencyKey: 'key-1' });
      const again = await store.addWalletTransaction({ ...topUp(tenantId, 9n * UNIT, 'key-1'), note: 'again' });
      expect(again.created).toBe(false);
      expect(again.record).toEqual(first.record);
      // The same key of another tenant is another transaction.
      const otherTenant = `ten_idem_other_${randomSuffix()}`;
      expect((await store.addWalletTransaction(topUp(otherTenant, UNIT, 'key-1'))).created).toBe(true);
      // Null keys never collide.
      await store.addWalletTransaction(topUp(tenantId, UNIT, null));
      await store.addWalletTransaction(topUp(tenantId, UNIT, null));
      await store.addWalletTransaction({ ...topUp(tenantId, -3n, 'adj-1'), kind: 'adjustment' });
      const wallet = await store.getWallet(tenantId);
      expect(wallet?.balance).toBe(7n * UNIT - 3n);
      expect(wallet).toMatchObject({ mode: 'prepaid', currency: 'CNY', creditLimit: 0n });
      const transactions = await store.listWalletTransactions(tenantId);
      expect(transactions.length).toBe(4);
      expect(transactions.reduce((sum, transaction) => sum + transaction.amount, 0n)).toBe(7n * UNIT - 3n);
      expect(transactions[0]).toEqual(first.record);
    });

    it('lets exactly one of 10 concurrent top-ups with one key through', async () => {
      const store = getStore();
      const tenantId = `ten_race_${randomSuffix()}`;
      const results = await Promise.all(
        Array.from({ length: 10 }, () => store.addWalletTransaction(topUp(tenantId, 3n * UNIT, 'same-key'))),
      );
      expect(results.filter((result) => result.created).length).toBe(1);
      expect(new Set(results.map((result) => result.record.id)).size).toBe(1);
      expect((await store.getWallet(tenantId))?.balance).toBe(3n * UNIT);
      expect((await store.listWalletTransactions(tenantId)).length).toBe(1);
    });

    it('keeps 64-bit amounts exact and filters transactions by time', async () => {
      const store = getStore();
      const tenantId = `ten_huge_${randomSuffix()}`;
      await store.addWalletTransaction({ ...topUp(tenantId, HUGE, null), createdAt: 1000 });
      await store.addWalletTransaction({ ...topUp(tenantId, -HUGE + 1n, null), kind: 'adjustment', createdAt: 2000 });
      await store.addWalletTransaction({ ...topUp(tenantId, HUGE, null), kind: 'refund', createdAt: 3000 });
      expect((await store.getWallet(tenantId))?.balance).toBe(HUGE + 1n);
      const middle = await store.listWalletTransactions(tenantId, { start: 2000, end: 3000 });
      expect(middle.map((transaction) => transaction.amount)).toEqual([-HUGE + 1n]);
      expect((await store.listWalletTransactions(tenantId, { start: 1500 })).length).toBe(2);
    });

    it("refuses a transaction that would leave the ledger's range, and writes nothing", async () => {
      const store = getStore();
      const tenantId = `ten_max_${randomSuffix()}`;
      const first = await store.addWalletTransaction(topUp(tenantId, MAX_NANO - 5n, null));
      const past = await refusal(store.addWalletTransaction(topUp(tenantId, 6n, 'past')));
      expect(past).toBeInstanceOf(BalanceOutOfRangeError);
      expect(past).toMatchObject({ tenantId, balance: MAX_NANO + 1n, creditLimit: 0n });
      expect((await store.getWallet(tenantId))?.balance).toBe(MAX_NANO - 5n);
      expect(await store.listWalletTransactions(tenantId)).toEqual([first.record]);
      // The refused key left no row: it is free for a transaction that fits, up to the last nano-unit.
      expect((await store.addWalletTransaction(topUp(tenantId, 5n, 'past'))).created).toBe(true);
      expect((await store.getWallet(tenantId))?.balance).toBe(MAX_NANO);

      const lowest = `ten_min_${randomSuffix()}`;
      await store.addWalletTransaction({ ...topUp(lowest, -MAX_NANO, null), kind: 'adjustment' });
      const below = await refusal(store.addWalletTransaction({ ...topUp(lowest, -1n, null), kind: 'adjustment' }));
      expect(below).toMatchObject({ tenantId: lowest, balance: -MAX_NANO - 1n });
      expect((await store.getWallet(lowest))?.balance).toBe(-MAX_NANO);
      expect(await store.listWalletTransactions(lowest)).toHaveLength(1);
    });

    it('replays an idempotency key near the limit instead of refusing it', async () => {
      const store = getStore();
      const tenantId = `ten_maxidem_${randomSuffix()}`;
      const first = await store.addWalletTransaction(topUp(tenantId, MAX_NANO - 5n, 'big'));
      expect(await store.addWalletTransaction(topUp(tenantId, MAX_NANO - 5n, 'big'))).toEqual({
        record: first.record,
        created: false,
      });
      expect((await store.getWallet(tenantId))?.balance).toBe(MAX_NANO - 5n);
      expect(await store.listWalletTransactions(tenantId)).toEqual([first.record]);
    });

    it('lets through only the concurrent top-ups the ledger holds together, exactly', async () => {
      const store = getStore();
      const tenantId = `ten_maxrace_${randomSuffix()}`;
      const quarter = MAX_NANO / 4n;
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, () => store.addWalletTransaction(topUp(tenantId, quarter, null))),
      );
      const accepted = acceptedInRangeRace(results).map((written) => written.record);
      expect(accepted).toHaveLength(4);
      expect((await store.getWallet(tenantId))?.balance).toBe(4n * quarter);
      expect(sortedIds(await store.listWalletTransactions(tenantId))).toEqual(sortedIds(accepted));
    });

    it('refuses a credit limit the balance cannot carry, and changes nothing', async () => {
      const store = getStore();
      const tenantId = `ten_maxlimit_${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 11n, null));
      const postpaid = (creditLimit: bigint) => ({ mode: 'postpaid' as const, currency: 'CNY', creditLimit });
      const past = await refusal(store.configureWallet(tenantId, postpaid(MAX_NANO - 10n)));
      expect(past).toBeInstanceOf(BalanceOutOfRangeError);
      expect(past).toMatchObject({ tenantId, balance: 11n, creditLimit: MAX_NANO - 10n });
      expect(await store.getWallet(tenantId)).toMatchObject({ mode: 'prepaid', balance: 11n, creditLimit: 0n });
      expect(await store.configureWallet(tenantId, postpaid(MAX_NANO - 11n))).toMatchObject({
        balance: 11n,
        creditLimit: MAX_NANO - 11n,
      });
      // The credit limit counts with the balance for a top-up too.
      const topUpPast = await refusal(store.addWalletTransaction(topUp(tenantId, 1n, null)));
      expect(topUpPast).toMatchObject({ balance: 12n, creditLimit: MAX_NANO - 11n });
      expect((await store.getWallet(tenantId))?.balance).toBe(11n);
      expect(await store.listWalletTransactions(tenantId)).toHaveLength(1);
    });

    it('refuses a transaction in another currency than the wallet', async () => {
      const store = getStore();
      const tenantId = `ten_cur_${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, UNIT, null));
      await expect(store.addWalletTransaction({ ...topUp(tenantId, UNIT, 'usd'), currency: 'USD' })).rejects.toThrow();
      expect((await store.getWallet(tenantId))?.balance).toBe(UNIT);
      expect((await store.listWalletTransactions(tenantId)).length).toBe(1);
    });
  });

  describe('ledger: reservations', () => {
    it('reserves only what balance plus credit limit cover, and never for a tenant without a wallet', async () => {
      const store = getStore();
      expect(await store.reserve(`ten_none_${randomSuffix()}`, 1n)).toBe(false);
      const tenantId = `ten_res_${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 10n, null));
      expect(await store.reserve(tenantId, 11n)).toBe(false);
      expect(await store.reserve(tenantId, 6n)).toBe(true);
      expect(await store.reserve(tenantId, 5n)).toBe(false);
      expect(await store.reserve(tenantId, 4n)).toBe(true);
      expect((await store.getWallet(tenantId))?.reserved).toBe(10n);
      await store.release(tenantId, 6n);
      expect((await store.getWallet(tenantId))?.reserved).toBe(4n);
      await store.release(tenantId, 100n);
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);

      await store.configureWallet(tenantId, { mode: 'postpaid', currency: 'CNY', creditLimit: 5n });
      expect(await store.reserve(tenantId, 15n)).toBe(true);
      expect(await store.reserve(tenantId, 1n)).toBe(false);
      await store.resetReservations();
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
    });

    it('lets exactly 20 of 200 concurrent reservations through a wallet that covers 20', async () => {
      const store = getStore();
      const tenantId = `ten_200_${randomSuffix()}`;
      const cost = 123_456_789n;
      await store.addWalletTransaction(topUp(tenantId, 20n * cost, null));
      const results = await Promise.all(Array.from({ length: 200 }, () => store.reserve(tenantId, cost)));
      expect(results.filter(Boolean).length).toBe(20);
      const wallet = await store.getWallet(tenantId);
      expect(wallet?.reserved).toBe(20n * cost);
      expect(wallet!.balance + wallet!.creditLimit - wallet!.reserved).toBe(0n);
      expect(await store.reserve(tenantId, 1n)).toBe(false);
    });
  });

  describe('ledger: reservation owners', () => {
    it("releases a dead owner's holds once, whether its releases come before the sweep or after", async () => {
      const store = getStore();
      const tenantId = `ten_own_${randomSuffix()}`;
      const dead = `owner-dead-${randomSuffix()}`;
      const live = `owner-live-${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 100n * UNIT, null));
      await store.heartbeatReservationOwner(dead, FAR_FUTURE);
      await store.heartbeatReservationOwner(live, FAR_FUTURE);
      await store.heartbeatReservationOwner(live, FAR_FUTURE + 1_000);
      expect(await store.reserve(tenantId, 101n * UNIT, dead)).toBe(false);
      expect(await store.reserve(tenantId, 10n * UNIT, dead)).toBe(true);
      expect(await store.reserve(tenantId, 3n * UNIT, dead)).toBe(true);
      expect(await store.reserve(tenantId, 20n * UNIT, live)).toBe(true);
      expect(await store.reserve(tenantId, 5n * UNIT)).toBe(true);
      const reserved = async () => (await store.getWallet(tenantId))?.reserved;
      expect(await reserved()).toBe(38n * UNIT);

      // Released before the sweep: from the hold and the wallet, so the sweep releases only what is left.
      await store.release(tenantId, 3n * UNIT, dead);
      expect(await reserved()).toBe(35n * UNIT);
      expect(await store.sweepReservationOwners(FAR_FUTURE + 500)).toEqual({ owners: 1, released: 10n * UNIT });
      expect(await reserved()).toBe(25n * UNIT);

      // After the sweep the dead owner's releases and settlements (its journal drained late) release nothing.
      await store.release(tenantId, 10n * UNIT, dead);
      const late = usageEvent(tenantId, Date.UTC(2030, 0, 2, 10));
      await store.settle([settlementOf(late, { reservation: { tenantId, amount: 10n * UNIT, owner: dead } })]);
      expect(await reserved()).toBe(25n * UNIT);
      expect((await store.getWallet(tenantId))?.balance).toBe(100n * UNIT - late.amount);

      // The live owner's settlement releases from its hold; an ownerless release from the wallet.
      const served = usageEvent(tenantId, Date.UTC(2030, 0, 2, 11));
      await store.settle([settlementOf(served, { reservation: { tenantId, amount: 20n * UNIT, owner: live } })]);
      expect(await reserved()).toBe(5n * UNIT);
      await store.release(tenantId, 5n * UNIT);
      expect(await reserved()).toBe(0n);
      expect(await store.sweepReservationOwners(FAR_FUTURE + 500)).toEqual({ owners: 0, released: 0n });
      expect(await store.sweepReservationOwners(FAR_FUTURE + 2_000)).toEqual({ owners: 1, released: 0n });
    });

    it('renews a registered owner and keeps its holds from a later sweep, but does not bring back a swept one', async () => {
      const store = getStore();
      const tenantId = `ten_renew_${randomSuffix()}`;
      const owner = `owner-renew-${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 10n, null));
      await store.heartbeatReservationOwner(owner, FAR_FUTURE);
      expect(await store.reserve(tenantId, 5n, owner)).toBe(true);
      // Late by the sweep's measure, but renewed first: alive, and its hold stays.
      expect(await store.renewReservationOwner(owner, FAR_FUTURE + 1_000)).toBe(true);
      await store.sweepReservationOwners(FAR_FUTURE + 500);
      expect((await store.getWallet(tenantId))?.reserved).toBe(5n);
      expect(await store.listReservationOwners(FAR_FUTURE + 1_000)).toContain(owner);
      // Swept once silent: a renewal finds no row and registers nothing, so its process knows to take a new owner.
      await store.sweepReservationOwners(FAR_FUTURE + 2_000);
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      expect(await store.renewReservationOwner(owner, FAR_FUTURE + 3_000)).toBe(false);
      expect(await store.listReservationOwners()).not.toContain(owner);
      expect(await store.renewReservationOwner(`owner-never-${randomSuffix()}`, FAR_FUTURE)).toBe(false);
    });

    it('sweeps the holds of an owner with no heartbeat row, and a reset forgets every hold', async () => {
      const store = getStore();
      const tenantId = `ten_orphan_${randomSuffix()}`;
      const owner = `owner-orphan-${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 10n, null));
      // Reserving does not register an owner: one never (or no longer) registered counts as dead.
      expect(await store.reserve(tenantId, 4n, owner)).toBe(true);
      expect(await store.sweepReservationOwners(0)).toEqual({ owners: 1, released: 4n });
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);

      expect(await store.reserve(tenantId, 6n, owner)).toBe(true);
      await store.resetReservations();
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      expect(await store.reserve(tenantId, 2n, owner)).toBe(true);
      expect(await store.sweepReservationOwners(0)).toEqual({ owners: 1, released: 2n });
    });

    it('sweeps an owner known to have exited whatever its heartbeat, and lists the registered owners', async () => {
      const store = getStore();
      const tenantId = `ten_exit_${randomSuffix()}`;
      const [exited, running] = [`owner-exited-${randomSuffix()}`, `owner-running-${randomSuffix()}`];
      await store.addWalletTransaction(topUp(tenantId, 10n, null));
      for (const owner of [exited, running]) {
        await store.heartbeatReservationOwner(owner, FAR_FUTURE);
        expect(await store.reserve(tenantId, 3n, owner)).toBe(true);
      }
      expect(await store.listReservationOwners()).toEqual(expect.arrayContaining([exited, running]));
      expect(await store.sweepReservationOwners(FAR_FUTURE - 1, [exited])).toEqual({ owners: 1, released: 3n });
      expect((await store.getWallet(tenantId))?.reserved).toBe(3n);
      expect(await store.listReservationOwners()).not.toContain(exited);
      expect(await store.sweepReservationOwners(FAR_FUTURE + 1)).toEqual({ owners: 1, released: 3n });
    });

    it("keeps a checkpoint's reservation owner, and its recovery releases from that owner's hold", async () => {
      const store = getStore();
      const tenantId = `ten_ckown_${randomSuffix()}`;
      const owner = `owner-ck-${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 100n * UNIT, null));
      await store.heartbeatReservationOwner(owner, FAR_FUTURE);
      expect(await store.reserve(tenantId, 10n * UNIT, owner)).toBe(true);
      const event = usageEvent(tenantId, Date.UTC(2030, 0, 3, 10));
      await store.saveCheckpoints([{ ...checkpoint(event), reservation: 10n * UNIT, reservationOwner: owner }]);
      const saved = (await store.listCheckpoints()).find((each) => each.requestId === event.requestId);
      expect(saved?.reservationOwner).toBe(owner);
      await store.settle([
        settlementOf(event, {
          reservation: { tenantId, amount: saved!.reservation, owner: saved!.reservationOwner! },
          checkpointRequestId: event.requestId,
        }),
      ]);
      expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
      // Released from the hold, so a later sweep of the owner has nothing left to release.
      expect(await store.sweepReservationOwners(FAR_FUTURE + 1)).toEqual({ owners: 1, released: 0n });
    });
  });

  describe('ledger: settlement', () => {
    it('moves the balance by the events, releases reservations and deletes checkpoints, once', async () => {
      const store = getStore();
      const tenantId = `ten_settle_${randomSuffix()}`;
      await store.addWalletTransaction(topUp(tenantId, 100n * UNIT, null));
      const events = [usageEvent(tenantId, Date.UTC(2030, 0, 1, 10)), usageEvent(tenantId, Date.UTC(2030, 0, 1, 11))];
      for (const _event of events) expect(await store.reserve(tenantId, 10n * UNIT)).toBe(true);
      await store.saveCheckpoints([checkpoint(events[0]!)]);
      const batch: Settlement[] = events.map((event) =>
        settlementOf(event, { reservation: { tenantId, amount: 10n * UNIT }, checkpointRequestId: event.requestId }),
      );
      const charged = events.reduce((sum, event) => sum + event.amount, 0n);
      const rollupsBefore = await store.queryUsageRollups({ bucket: '1d', start: 0, end: Date.UTC(2031, 0), tenantId });
      expect(rollupsBefore).toEqual([]);

      await store.settle(batch);
      const expectWallet = async (): Promise<void> => {
        const wallet = await store.getWallet(tenantId);
        expect(wallet?.balance).toBe(100n * UNIT - charged);
        expect(wallet?.reserved).toBe(0n);
      };
      await expectWallet();
      expect((await store.listCheckpoints()).some((each) => each.requestId === events[0]!.requestId)).toBe(false);
      const rollups = await store.queryUsageRollups({ bucket: '1d', start: 0, end: Date.UTC(2031, 0), tenantId });

      // The same settlements again, alone and doubled inside one batch: nothing moves.
      await store.reserve(tenantId, 10n * UNIT);
      await store.settle(batch);
      await store.settle([...batch, ...batch]);
      const wallet = await store.getWallet(tenantId);
      expect(wallet?.balance).toBe(100n * UNIT - charged);
      expect(wallet?.reserved).toBe(10n * UNIT);
      expect(await store.queryUsageRollups({ bucket: '1d', start: 0, end: Date.UTC(2031, 0), tenantId })).toEqual(
        rollups,
      );
      expect(rollups.length).toBe(1);
      expect(rollups[0]?.amount).toBe(charged);
      expect(rollups[0]?.requests).toBe(2);
      const sum = await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0) });
      expect(sum).toEqual({ amount: charged, count: 2 });
      const logs = await store.listRequestLogs({ tenantId });
      expect(logs.map((log) => log.requestId).sort()).toEqual(events.map((event) => event.requestId).sort());
    });

    it('counts an event once when it is duplicated inside one batch', async () => {
      const store = getStore();
      const tenantId = `ten_dup_${randomSuffix()}`;
      const event = usageEvent(tenantId, Date.UTC(2030, 1, 1));
      const settlement = settlementOf(event);
      await store.settle([settlement, settlement, settlementOf({ ...event, amount: 999n * UNIT })]);
      expect((await store.getWallet(tenantId))?.balance).toBe(-event.amount);
      expect(await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0) })).toEqual({
        amount: event.amount,
        count: 1,
      });
    });

    it('keeps the first record of a request id: an event settled after its id was logged unpriced is not charged', async () => {
      const store = getStore();
      const tenantId = `ten_first_${randomSuffix()}`;
      const event = usageEvent(tenantId, Date.UTC(2030, 1, 2));
      const unpriced = logOf(event, { status: 502, errorCode: 'upstream_http_error' });
      await store.settle([{ log: unpriced }]);
      await store.settle([settlementOf(event)]);
      expect(await store.getWallet(tenantId)).toBeUndefined();
      expect(await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0) })).toEqual({
        amount: 0n,
        count: 0,
      });
      expect(await store.listRequestLogs({ tenantId })).toEqual([unpriced]);
    });

    it('round-trips every field of a usage event', async () => {
      const store = getStore();
      const tenantId = `ten_event_${randomSuffix()}`;
      const full = usageEvent(tenantId, Date.UTC(2030, 2, 1, 12), {
        keyId: null,
        deployment: null,
        outputCondition: 'output<=200',
        batch: true,
        estimated: true,
        cost: null,
        inputListAmount: HUGE,
        amount: HUGE,
        detail: '{"modifiers":[]}',
      });
      const other = usageEvent(tenantId, Date.UTC(2030, 2, 1, 13), { cost: HUGE - 1n, batchDiscount: -HUGE });
      await store.settle([settlementOf(full), settlementOf(other)]);
      const events = await store.listUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0) });
      expect(events).toEqual([full, other]);
      expect(await store.listUsageEvents({ tenantId, start: other.receivedAt, end: Date.UTC(2031, 0) })).toEqual([
        other,
      ]);
      expect(await store.listUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0), limit: 1 })).toEqual([full]);
    });

    it('round-trips text columns with characters that encodings escape', async () => {
      const store = getStore();
      const tenantId = `ten_text_${randomSuffix()}`;
      // Quotes, braces and commas (array literals), backslashes, tabs and line breaks (COPY rows), `\N` (COPY's
      // null), single quotes and `$&` (SQL literals, string replacement patterns).
      const event = usageEvent(tenantId, Date.UTC(2030, 2, 2), {
        requestId: `req_${randomSuffix()}\\N'$&`,
        keyId: 'NULL',
        model: "m\"o\\d{e,l}\t'x'",
        deployment: '',
        priceVersion: 'v "1"\r\n',
        tier: "a,b $& $' ''",
        outputCondition: '\\',
        detail: JSON.stringify({ modifiers: ['off-peak "night"', 'back\\slash', '\\N', 'tab\tline\nend'] }),
      });
      // The same request's log (one row holds both), with escapes of its own in the columns only a log has.
      const log = logOf(event, { errorCode: '\\N', attemptLog: 'a\tb\nc\\d' });
      const unpriced = logRecord(tenantId, event.receivedAt - 1, { deployment: 'NULL', model: 'm\\N' });
      await store.settle([{ log, rating: ratingOf(event), checkpointRequestId: log.requestId }, { log: unpriced }]);
      expect(await store.listUsageEvents({ tenantId, start: 0, end: Date.UTC(2031, 0) })).toEqual([event]);
      expect(await store.listRequestLogs({ tenantId })).toEqual([log, unpriced]);
      const rollups = await store.queryUsageRollups({ bucket: '1m', start: 0, end: Date.UTC(2031, 0), tenantId });
      // The unpriced request's tokens are usage too (at no amount), in the minute before.
      expect(rollups.map((row) => [row.keyId, row.model, row.amount])).toEqual([
        [unpriced.keyId, unpriced.model, 0n],
        ['NULL', event.model, event.amount],
      ]);
      const billing = await store.queryBillingRollups({ tenantId, start: 0, end: Date.UTC(2031, 0) });
      expect(billing.map((row) => [row.priceVersion, row.tier, row.outputCondition])).toEqual([
        [event.priceVersion, event.tier, event.outputCondition],
      ]);
    });

    it('sums amounts exactly past 2^63', async () => {
      const store = getStore();
      const start = Date.UTC(2090, 0, 1) + Math.floor(Math.random() * 1e9);
      const big = 2n ** 62n + 2n ** 61n + 7n;
      const events = [
        usageEvent(`ten_s1_${randomSuffix()}`, start, { amount: big }),
        usageEvent(`ten_s2_${randomSuffix()}`, start + 1, { amount: big }),
      ];
      await store.settle(events.map((event) => settlementOf(event)));
      expect(await store.sumUsageEvents({ start, end: start + 2 })).toEqual({ amount: 2n * big, count: 2 });
      expect(await store.sumUsageEvents({ tenantId: events[0]!.tenantId, start, end: start + 2 })).toEqual({
        amount: big,
        count: 1,
      });
    });

    it('keeps usage and billing rollups equal to the sums of the events, for every bucket', async () => {
      const store = getStore();
      const tenantId = `ten_roll_${randomSuffix()}`;
      const start = Date.UTC(2030, 5, 1);
      const random = seededRandom(42);
      const keys = ['key_a', 'key_b', null];
      const models = ['model-x', 'model-y'];
      const events = Array.from({ length: 600 }, () =>
        usageEvent(tenantId, start + Math.floor(random() * 2.5 * DAY), {
          keyId: keys[Math.floor(random() * keys.length)]!,
          model: models[Math.floor(random() * models.length)]!,
          tier: random() < 0.5 ? '0-32768' : '32769-131072',
          outputCondition: random() < 0.3 ? 'output<=200' : null,
          batch: random() < 0.2,
          cost: random() < 0.5 ? null : BigInt(Math.floor(random() * 1e9)),
          amount: BigInt(Math.floor(random() * 1e12)),
          inputTokens: Math.floor(random() * 5000),
          cachedTokens: Math.floor(random() * 500),
          outputTokens: Math.floor(random() * 800),
        }),
      );
      const settlements = events.map((event) => settlementOf(event));
      // Several batches, with a replay of some settlements that must not count twice.
      await store.settle(settlements.slice(0, 250));
      await store.settle(settlements.slice(200, 450));
      await store.settle(settlements.slice(450));
      await store.settle(settlements.slice(100, 120));

      const buckets: [RollupBucket, number][] = [
        ['1m', MINUTE],
        ['1h', HOUR],
        ['1d', DAY],
      ];
      for (const [bucket, size] of buckets) {
        const expected = new Map<string, UsageRollupRow>();
        for (const event of events) {
          const bucketStart = event.receivedAt - (event.receivedAt % size);
          const key = `${bucketStart}|${event.keyId}|${event.model}`;
          const row = expected.get(key) ?? {
            bucket,
            bucketStart,
            tenantId,
            keyId: event.keyId,
            model: event.model,
            requests: 0,
            inputTokens: 0,
            cachedTokens: 0,
            outputTokens: 0,
            amount: 0n,
            cost: 0n,
          };
          row.requests++;
          row.inputTokens += event.inputTokens;
          row.cachedTokens += event.cachedTokens;
          row.outputTokens += event.outputTokens;
          row.amount += event.amount;
          row.cost += event.cost ?? 0n;
          expected.set(key, row);
        }
        const actual = await store.queryUsageRollups({ bucket, start, end: start + 3 * DAY, tenantId });
        expect(sortRows(actual)).toEqual(sortRows([...expected.values()]));
      }
      // A range selects whole buckets by their start.
      const firstHour = await store.queryUsageRollups({ bucket: '1h', start, end: start + HOUR, tenantId });
      expect(firstHour.every((row) => row.bucketStart === start)).toBe(true);
      expect(firstHour.reduce((sum, row) => sum + row.requests, 0)).toBe(
        events.filter((event) => event.receivedAt < start + HOUR).length,
      );
      // Days too, in order: a range starting inside a day leaves that day out, one ending inside a day takes it.
      const dayTwo = await store.queryUsageRollups({
        bucket: '1d',
        start: start + HOUR,
        end: start + DAY + 1,
        tenantId,
      });
      expect(dayTwo.map((row) => row.bucketStart)).toEqual(dayTwo.map(() => start + DAY));
      expect(dayTwo.reduce((sum, row) => sum + row.requests, 0)).toBe(
        events.filter((event) => event.receivedAt >= start + DAY && event.receivedAt < start + 2 * DAY).length,
      );
      const allDays = await store.queryUsageRollups({ bucket: '1d', start, end: start + 3 * DAY, tenantId });
      const days = allDays.map((row) => row.bucketStart);
      expect(days).toEqual([...days].sort((a, b) => a - b));
      expect(new Set(days)).toEqual(new Set([start, start + DAY, start + 2 * DAY]));

      const billing = new Map<string, BillingRollupRow>();
      for (const event of events) {
        const day = event.receivedAt - (event.receivedAt % DAY);
        const key = JSON.stringify([day, event.model, event.tier, event.outputCondition, event.batch]);
        const row =
          billing.get(key) ??
          billingRollupFixture({
            day,
            tenantId,
            model: event.model,
            priceVersion: event.priceVersion,
            tier: event.tier,
            outputCondition: event.outputCondition,
            batch: event.batch,
            requests: 0,
          });
        row.requests++;
        row.inputTokens += event.inputTokens;
        row.cachedTokens += event.cachedTokens;
        row.outputTokens += event.outputTokens;
        row.inputListAmount += event.inputListAmount;
        row.cachedListAmount += event.cachedListAmount;
        row.outputListAmount += event.outputListAmount;
        row.batchDiscount += event.batchDiscount;
        row.offPeakDiscount += event.offPeakDiscount;
        row.contractDiscount += event.contractDiscount;
        row.volumeDiscount += event.volumeDiscount;
        row.amount += event.amount;
        row.cost += event.cost ?? 0n;
        billing.set(key, row);
      }
      const billingRows = await store.queryBillingRollups({ tenantId, start, end: start + 3 * DAY });
      expect(sortRows(billingRows)).toEqual(sortRows([...billing.values()]));
      const secondDay = await store.queryBillingRollups({ tenantId, start: start + DAY, end: start + 2 * DAY });
      expect(new Set(secondDay.map((row) => row.day))).toEqual(new Set([start + DAY]));
      expect(billingRows.reduce((sum, row) => sum + row.amount, 0n)).toBe(
        events.reduce((sum, event) => sum + event.amount, 0n),
      );
    });

    it('keeps balance = Σ transactions − Σ events over random operations', async () => {
      const store = getStore();
      const operation = fc.oneof(
        fc.record({ kind: fc.constant('topup' as const), amount: fc.bigInt({ min: 1n, max: 10n ** 15n }) }),
        fc.record({
          kind: fc.constant('adjustment' as const),
          amount: fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }),
        }),
        fc.record({
          kind: fc.constant('settle' as const),
          amounts: fc.array(fc.bigInt({ min: 0n, max: 10n ** 13n }), { minLength: 1, maxLength: 5 }),
          replay: fc.boolean(),
        }),
        fc.record({ kind: fc.constant('reserve' as const), amount: fc.bigInt({ min: 1n, max: 10n ** 13n }) }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 12 }), async (operations) => {
          const tenantId = `ten_prop_${randomSuffix()}`;
          let transactions = 0n;
          let charged = 0n;
          let reserved = 0n;
          const settled: Settlement[] = [];
          let time = Date.UTC(2031, 0, 1);
          for (const op of operations) {
            switch (op.kind) {
              case 'topup':
              case 'adjustment':
                await store.addWalletTransaction({ ...topUp(tenantId, op.amount, randomSuffix()), kind: op.kind });
                transactions += op.amount;
                break;
              case 'settle': {
                const batch = op.amounts.map((amount) => settlementOf(usageEvent(tenantId, time++, { amount })));
                await store.settle(op.replay ? [...batch, ...settled.slice(-2)] : batch);
                settled.push(...batch);
                charged += op.amounts.reduce((sum, amount) => sum + amount, 0n);
                break;
              }
              case 'reserve': {
                const wallet = await store.getWallet(tenantId);
                const available = wallet === undefined ? -1n : wallet.balance + wallet.creditLimit - wallet.reserved;
                const granted = await store.reserve(tenantId, op.amount);
                expect(granted).toBe(available >= op.amount);
                if (granted) reserved += op.amount;
                break;
              }
            }
          }
          const wallet = await store.getWallet(tenantId);
          const listed = await store.listWalletTransactions(tenantId);
          const events = await store.sumUsageEvents({ tenantId, start: 0, end: time + 1 });
          const ledgerTransactions = listed.reduce((sum, transaction) => sum + transaction.amount, 0n);
          expect(ledgerTransactions).toBe(transactions);
          expect(events.amount).toBe(charged);
          expect(wallet?.balance ?? 0n).toBe(ledgerTransactions - events.amount);
          expect(wallet?.reserved ?? 0n).toBe(reserved);
        }),
        { numRuns: 15 },
      );
    });
  });

  describe('ledger: checkpoints, prices, budgets, alerts', () => {
    it('round-trips checkpoints with 64-bit amounts, replacing by request id', async () => {
      const store = getStore();
      const tenantId = `ten_cp_${randomSuffix()}`;
      const first = checkpoint(usageEvent(tenantId, 5000, { amount: HUGE, cost: null }));
      const second = checkpoint(usageEvent(tenantId, 6000, { cost: HUGE, volumeDiscount: -HUGE }));
      await store.saveCheckpoints([first, second]);
      const mine = async (): Promise<StreamCheckpoint[]> =>
        (await store.listCheckpoints()).filter((each) => each.event.tenantId === tenantId);
      expect(await mine()).toEqual([first, second]);
      const replaced = { ...first, event: { ...first.event, outputTokens: 999, amount: HUGE + 1n }, updatedAt: 9000 };
      await store.saveCheckpoints([replaced]);
      expect(await mine()).toEqual([second, replaced]);
      await store.settle([
        {
          log: logRecord(tenantId, 1, { requestId: `${second.requestId}-log` }),
          checkpointRequestId: second.requestId,
        },
      ]);
      expect(await mine()).toEqual([replaced]);
    });

    it('round-trips price versions and refuses a duplicate id', async () => {
      const store = getStore();
      const id = `v_${randomSuffix()}`;
      const stored = await store.insertPriceVersion({ id, effectiveFrom: 1_900_000_000_000, document: '{"a":1}' });
      expect(stored).toMatchObject({ id, effectiveFrom: 1_900_000_000_000, document: '{"a":1}' });
      expect((await store.listPriceVersions()).find((version) => version.id === id)).toEqual(stored);
      await expect(store.insertPriceVersion({ id, effectiveFrom: 1, document: '{}' })).rejects.toThrow();
    });

    it('round-trips budgets and replaces by scope', async () => {
      const store = getStore();
      const tenantId = `ten_budget_${randomSuffix()}`;
      const tenantBudget: BudgetRecord = {
        scope: 'tenant',
        scopeId: tenantId,
        tenantId,
        monthlyLimit: HUGE,
        enforcement: 'hard',
        thresholds: [50, 80, 100],
        webhookUrl: 'https://example.test/hook',
        updatedAt: 1234,
      };
      const keyBudget: BudgetRecord = {
        ...tenantBudget,
        scope: 'key',
        scopeId: `key_${randomSuffix()}`,
        enforcement: 'soft',
        thresholds: [],
        webhookUrl: null,
      };
      await store.putBudget(tenantBudget);
      await store.putBudget(keyBudget);
      const replaced = { ...tenantBudget, monthlyLimit: 5n, thresholds: [90], updatedAt: 5678 };
      await store.putBudget(replaced);
      expect(await store.listBudgets(tenantId)).toEqual([keyBudget, replaced]);
      expect((await store.listBudgets()).filter((budget) => budget.tenantId === tenantId).length).toBe(2);
      expect(await store.deleteBudget('tenant', tenantId)).toBe(true);
      expect(await store.deleteBudget('tenant', tenantId)).toBe(false);
      expect(await store.listBudgets(tenantId)).toEqual([keyBudget]);
    });

    it('lets exactly one of 10 concurrent callers claim an alert', async () => {
      const store = getStore();
      const alert = { scope: 'tenant' as const, scopeId: `ten_${randomSuffix()}`, period: '2030-01', threshold: 80 };
      const results = await Promise.all(Array.from({ length: 10 }, () => store.claimAlert(alert)));
      expect(results.filter(Boolean).length).toBe(1);
      expect(await store.claimAlert(alert)).toBe(false);
      expect(await store.claimAlert({ ...alert, threshold: 100 })).toBe(true);
      expect(await store.claimAlert({ ...alert, period: '2030-02' })).toBe(true);
    });
  });
}

const topUp = topUpFixture;

/** A usage event whose amount is the sum of its parts (unless overridden). Also used by dialect-specific tests. */
export function usageEvent(
  tenantId: string,
  receivedAt: number,
  overrides: Partial<UsageEventRecord> = {},
): UsageEventRecord {
  const parts = {
    inputListAmount: 1_234_567n,
    cachedListAmount: 89n,
    outputListAmount: 7_654_321n,
    batchDiscount: 0n,
    offPeakDiscount: -1000n,
    contractDiscount: 0n,
    volumeDiscount: -1n,
  };
  // The amount is that of the default parts even when an override changes a part: tests round-trip such rows.
  return usageEventFixture({
    requestId: `req_${randomSuffix()}`,
    tenantId,
    keyId: 'key_test',
    receivedAt,
    inputTokens: 1000,
    cachedTokens: 100,
    outputTokens: 200,
    reasoningTokens: 10,
    ...parts,
    amount: Object.values(parts).reduce((sum, part) => sum + part, 0n),
    cost: 500n,
    ...overrides,
  });
}

function checkpoint(event: UsageEventRecord): StreamCheckpoint {
  return { requestId: event.requestId, event, reservation: HUGE - 5n, updatedAt: event.receivedAt + 1 };
}

function sortRows<T>(rows: T[]): T[] {
  const key = (row: T) =>
    JSON.stringify(row, (_name, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
  return [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The error `promise` rejects with; fails the test when it resolves. */
async function refusal(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => expect.fail(`expected a refusal, got ${String(value)}`),
    (error: unknown) => error,
  );
}

/** The writes of a race that went through, checking that every other was refused as out of the ledger's range. */
function acceptedInRangeRace<T>(results: readonly PromiseSettledResult<T>[]): T[] {
  return results.flatMap((result) => {
    if (result.status === 'fulfilled') return [result.value];
    expect(result.reason).toBeInstanceOf(BalanceOutOfRangeError);
    return [];
  });
}

function sortedIds(records: readonly { id: string }[]): string[] {
  return records.map((record) => record.id).sort();
}

/** Mulberry32: a deterministic generator, so a failing rollup case can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Runs `create` with `Date.now` held at `at`, so every row it makes has the same `createdAt`. */
async function inOneMillisecond<T>(at: number, create: () => Promise<T>): Promise<T> {
  const now = vi.spyOn(Date, 'now').mockReturnValue(at);
  try {
    return await create();
  } finally {
    now.mockRestore();
  }
}

/** Every page of `list` from the first row, `limit` rows each, each page after the last row of the one before. */
async function pageThrough<T extends { id: string; createdAt: number }>(
  limit: number,
  list: (page: CreationPageQuery) => Promise<T[]>,
): Promise<T[][]> {
  const pages = [await list({ limit })];
  while (pages.at(-1)!.length === limit) pages.push(await list({ after: pages.at(-1)!.at(-1)!, limit }));
  return pages;
}

/** Whether `createdAt` never decreases along `rows` (the order of ids within a millisecond is the store's). */
function isInCreationOrder(rows: readonly { createdAt: number }[]): boolean {
  return rows.every((row, index) => index === 0 || rows[index - 1]!.createdAt <= row.createdAt);
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

/** A request-log record of a successful chat request. Also used by dialect-specific tests. */
export function logRecord(
  tenantId: string,
  createdAt: number,
  overrides: Partial<RequestLogRecord> = {},
): RequestLogRecord {
  return requestLogFixture({
    requestId: `req_${randomSuffix()}`,
    tenantId,
    keyId: 'key_test',
    promptTokens: 10,
    completionTokens: 20,
    latencyMs: 100,
    createdAt,
    ...overrides,
  });
}
