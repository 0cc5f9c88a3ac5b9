import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresRelay } from '../../test/support/postgres-relay.js';
import { reachablePostgres } from '../../test/support/postgres-schema.js';
import { POSTGRES_WRITER_OPTIONS, SettlementWriter } from '../metering/settlement-writer.js';
import { createStore } from './create-store.js';
import { requestLogFixture, settlementOf } from './ledger-fixtures.js';
import type { RatedSettlement } from './ledger-store.js';
import { settleOnPostgres } from './postgres-settle.js';
import type { Store } from './store.js';
import { describeStoreConformance, usageEvent } from './store-conformance.js';

const schema = `tg_test_${randomBytes(6).toString('hex')}`;
let baseUrl: string | undefined;

async function storeUrl(): Promise<string> {
  baseUrl ??= await reachablePostgres();
  return `${baseUrl}?schema=${schema}`;
}

beforeAll(async () => {
  await storeUrl();
});

afterAll(async () => {
  if (baseUrl === undefined) return;
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await client.end();
  }
});

describeStoreConformance('postgres', {
  // 10 connections: the reservation race must really run concurrently on the server.
  openStore: async () => createStore(await storeUrl(), { poolSize: 10 }),
});

describe('PostgreSQL store', () => {
  it('works in its own schema and returns int8 columns as numbers', async () => {
    const store = await createStore(await storeUrl());
    try {
      expect(store.kind).toBe('postgres');
      await store.migrate();
      const tenant = await store.createTenant('types');
      const read = await store.getTenant(tenant.id);
      expect(typeof read?.createdAt).toBe('number');
      expect(read?.createdAt).toBe(tenant.createdAt);
    } finally {
      await store.close();
    }
    const client = new pg.Client({ connectionString: baseUrl });
    await client.connect();
    try {
      const tables = await client.query<{ table_name: string }>(
        'select table_name from information_schema.tables where table_schema = $1 order by table_name',
        [schema],
      );
      expect(tables.rows.map((row) => row.table_name)).toEqual(
        expect.arrayContaining(['api_keys', 'kysely_migration', 'request_log', 'settings', 'tenants']),
      );
      // The per-pool parser must not leak into pg's global parsers.
      const global = await client.query<{ value: unknown }>('select 9007199254740993::int8 as value');
      expect(global.rows[0]?.value).toBe('9007199254740993');
    } finally {
      await client.end();
    }
  });

  it('migrates to the ingest schema: attempt_log column, no request_log_created_idx, fill factor 70 on rollups', async () => {
    const store = await createStore(await storeUrl());
    await store.migrate();
    await store.close();
    const client = new pg.Client({ connectionString: baseUrl });
    await client.connect();
    try {
      const columns = await client.query<{ column_name: string }>(
        "select column_name from information_schema.columns where table_schema = $1 and table_name = 'request_log'",
        [schema],
      );
      expect(columns.rows.map((row) => row.column_name)).toContain('attempt_log');
      const indexes = await client.query<{ indexname: string }>(
        "select indexname from pg_indexes where schemaname = $1 and tablename = 'request_log'",
        [schema],
      );
      expect(indexes.rows.map((row) => row.indexname).sort()).toEqual([
        'request_log_pkey',
        'request_log_tenant_created_idx',
      ]);
      const options = await client.query<{ relname: string; reloptions: string[] | null }>(
        `select c.relname, c.reloptions from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = $1 and c.relname in ('usage_rollups', 'billing_rollups', 'wallets') order by c.relname`,
        [schema],
      );
      expect(options.rows).toEqual([
        { relname: 'billing_rollups', reloptions: ['fillfactor=70'] },
        { relname: 'usage_rollups', reloptions: ['fillfactor=70'] },
        { relname: 'wallets', reloptions: ['fillfactor=70'] },
      ]);
    } finally {
      await client.end();
    }
  });

  it('rejects an unsafe schema name', async () => {
    await expect(createStore(`${baseUrl}?schema=${encodeURIComponent('x"; drop')}`)).rejects.toThrow(/schema name/);
  });

  it('rejects an int8 beyond the safe integer range instead of losing precision', async () => {
    const store = await createStore(await storeUrl());
    try {
      await store.migrate();
      const tenantId = `ten_big_${randomBytes(4).toString('hex')}`;
      await store.insertRequestLogs([requestLogFixture({ requestId: `req_${tenantId}`, tenantId, createdAt: 1 })]);
      const client = new pg.Client({ connectionString: baseUrl });
      await client.connect();
      await client.query(`update "${schema}".request_log set prompt_tokens = 9007199254740993 where tenant_id = $1`, [
        tenantId,
      ]);
      await client.end();
      await expect(store.listRequestLogs({ tenantId })).rejects.toThrow(/safe integer/);
    } finally {
      await store.close();
    }
  });
});

describe('PostgreSQL settlement (COPY, then plain inserts; on a unique violation, redone skipping stored ids)', () => {
  const UNIT = 1_000_000_000n;

  /** A settlement of `tenantId` at `at` releasing a reservation of its amount plus 1 unit. */
  function settlement(
    tenantId: string,
    at: number,
    overrides: { keyId?: string; model?: string } = {},
  ): RatedSettlement {
    const event = usageEvent(tenantId, at, { amount: BigInt(1 + Math.floor(Math.random() * 1e9)), ...overrides });
    return settlementOf(event, {
      reservation: { tenantId, amount: event.amount + UNIT },
      checkpointRequestId: event.requestId,
    });
  }

  /** Puts `amount` on the tenant's wallet. */
  async function credit(store: Store, tenantId: string, amount: bigint) {
    await store.addWalletTransaction({
      tenantId,
      kind: 'topup',
      amount,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
  }

  /** Asserts that events, both rollups and the wallet each count `settled` exactly once. */
  async function expectCountedOnce(store: Store, tenantId: string, settled: readonly RatedSettlement[], topUp: bigint) {
    const range = { start: 0, end: Date.UTC(2100, 0) };
    const amount = settled.reduce((sum, item) => sum + item.rating.amount, 0n);
    expect(await store.sumUsageEvents({ tenantId, ...range })).toEqual({ amount, count: settled.length });
    for (const bucket of ['1m', '1h', '1d'] as const) {
      const rows = await store.queryUsageRollups({ bucket, tenantId, ...range });
      expect(rows.reduce((sum, row) => sum + row.requests, 0)).toBe(settled.length);
      expect(rows.reduce((sum, row) => sum + row.amount, 0n)).toBe(amount);
    }
    const billing = await store.queryBillingRollups({ tenantId, ...range });
    expect(billing.reduce((sum, row) => sum + row.requests, 0)).toBe(settled.length);
    expect(billing.reduce((sum, row) => sum + row.amount, 0n)).toBe(amount);
    const wallet = await store.getWallet(tenantId);
    expect(wallet?.balance).toBe(topUp - amount);
    return wallet;
  }

  it('counts a retried batch, alone or mixed with new settlements, once, and keeps its one connection usable', async () => {
    // One connection: if a failed attempt left it inside an aborted transaction, the next call would fail.
    const store = await createStore(await storeUrl(), { poolSize: 1 });
    try {
      await store.migrate();
      const tenantId = `ten_retry_${randomBytes(4).toString('hex')}`;
      const topUp = 1000n * UNIT;
      await credit(store, tenantId, topUp);
      const at = Date.UTC(2031, 4, 5, 6, 7);
      const first = [0, 1, 2].map((index) => settlement(tenantId, at + index * 61_000));
      const fresh = settlement(tenantId, at + 5 * 61_000);
      const reserved = [...first, fresh].reduce((sum, item) => sum + item.reservation!.amount, 0n);
      for (const item of [...first, fresh]) expect(await store.reserve(tenantId, item.reservation!.amount)).toBe(true);

      await store.settle(first);
      await store.settle(first);
      await store.settle([first[2]!, fresh, first[0]!, fresh]);
      await store.settle([first[1]!]);

      const wallet = await expectCountedOnce(store, tenantId, [...first, fresh], topUp);
      // Each reservation released once: nothing left reserved, and not below zero by double releases either.
      expect(reserved).toBeGreaterThan(0n);
      expect(wallet?.reserved).toBe(0n);
      expect((await store.listRequestLogs({ tenantId })).length).toBe(4);
    } finally {
      await store.close();
    }
  });

  it('releases each reservation once when a retry comes after other reservations were taken', async () => {
    const store = await createStore(await storeUrl(), { poolSize: 1 });
    try {
      await store.migrate();
      const tenantId = `ten_release_${randomBytes(4).toString('hex')}`;
      await credit(store, tenantId, 1000n * UNIT);
      const item = settlement(tenantId, Date.UTC(2031, 4, 6));
      expect(await store.reserve(tenantId, item.reservation!.amount)).toBe(true);
      await store.settle([item]);
      expect(await store.reserve(tenantId, 7n * UNIT)).toBe(true);
      await store.settle([item]);
      expect((await store.getWallet(tenantId))?.reserved).toBe(7n * UNIT);
    } finally {
      await store.close();
    }
  });

  it('counts each id once when two processes settle overlapping batches at once', async () => {
    const url = await storeUrl();
    const [one, two] = [await createStore(url, { poolSize: 2 }), await createStore(url, { poolSize: 2 })];
    try {
      await one.migrate();
      const tenantId = `ten_race_${randomBytes(4).toString('hex')}`;
      const topUp = 10n ** 6n * UNIT;
      await credit(one, tenantId, topUp);
      // Every round starts new minutes, so both writers also race to create the same new rollup rows.
      const settled: RatedSettlement[] = [];
      for (let round = 0; round < 6; round++) {
        const at = Date.UTC(2031, 5, 1) + round * 3_600_000;
        const items = Array.from({ length: 60 }, (_, index) =>
          settlement(tenantId, at + (index % 3) * 60_000, { keyId: `key_${index % 2}`, model: `model_${index % 3}` }),
        );
        settled.push(...items);
        await Promise.all([one.settle(items.slice(0, 40)), two.settle(items.slice(20))]);
      }
      await expectCountedOnce(one, tenantId, settled, topUp);
    } finally {
      await one.close();
      await two.close();
    }
  });

  it("counts each settlement once through the gateway's writer, with two commits side by side", async () => {
    const store = await createStore(await storeUrl(), { poolSize: 4 });
    try {
      await store.migrate();
      const tenants = [0, 1, 2].map((index) => `ten_pair_${index}_${randomBytes(4).toString('hex')}`);
      const topUp = 10n ** 6n * UNIT;
      for (const tenantId of tenants) await credit(store, tenantId, topUp);
      let active = 0;
      let peak = 0;
      const counting: Pick<Store, 'settle'> = {
        settle: async (batch) => {
          active++;
          peak = Math.max(peak, active);
          try {
            await store.settle(batch);
          } finally {
            active--;
          }
        },
      };
      // Small batches, so that one turn's writes fill many and both commits take the same wallet and rollup rows.
      const writer = new SettlementWriter(counting, { ...POSTGRES_WRITER_OPTIONS, maxBatch: 50 });
      const at = Date.UTC(2031, 6, 1);
      const settled = Array.from({ length: 600 }, (_, index) =>
        settlement(tenants[index % 3]!, at + (index % 5) * 60_000, { keyId: `key_${index % 2}` }),
      );
      expect(await Promise.all(settled.map((item) => writer.write(item)))).toEqual(Array(600).fill(true));
      await writer.close();
      expect(peak).toBe(POSTGRES_WRITER_OPTIONS.concurrency);
      for (const tenantId of tenants) {
        const own = settled.filter((item) => item.log.tenantId === tenantId);
        await expectCountedOnce(store, tenantId, own, topUp);
      }
    } finally {
      await store.close();
    }
  });

  it('fails a batch that PostgreSQL cannot store as a whole, and keeps working', async () => {
    const store = await createStore(await storeUrl(), { poolSize: 1 });
    try {
      await store.migrate();
      const tenantId = `ten_nul_${randomBytes(4).toString('hex')}`;
      const good = settlement(tenantId, Date.UTC(2031, 6, 1));
      const bad = settlement(tenantId, Date.UTC(2031, 6, 1));
      // PostgreSQL text cannot hold NUL: the COPY fails, and with it the whole batch.
      bad.rating = { ...bad.rating, detail: 'nul\u0000here' };
      await expect(store.settle([good, bad])).rejects.toThrow();
      expect(await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2100, 0) })).toEqual({
        amount: 0n,
        count: 0,
      });
      await store.settle([good]);
      expect((await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2100, 0) })).count).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('gives up a batch a server that stopped answering holds, and settles it once when the server answers', async () => {
    const store = await createStore(await storeUrl(), { poolSize: 1 });
    const relay = await startPostgresRelay();
    const pool = new pg.Pool({
      connectionString: relay.through(baseUrl!),
      options: `-c search_path=${schema}`,
      max: 1,
    });
    try {
      await store.migrate();
      const tenantId = `ten_partition_${randomBytes(4).toString('hex')}`;
      const topUp = 1000n * UNIT;
      await credit(store, tenantId, topUp);
      const batch = [settlement(tenantId, Date.UTC(2031, 7, 1)), settlement(tenantId, Date.UTC(2031, 7, 1))];
      await pool.query('select 1'); // the pool's one connection is open before the partition
      relay.pause();
      // Without the timeout this would wait on the silent connection for as long as the test runs.
      await expect(settleOnPostgres(pool, batch, 300)).rejects.toThrow(/did not settle a batch of 2 in 300 ms/);
      relay.restore();
      await settleOnPostgres(pool, batch, 10_000);
      await expectCountedOnce(store, tenantId, batch, topUp);
    } finally {
      await pool.end();
      await relay.close();
      await store.close();
    }
  });

  it('survives a reset of the connection a settlement holds: the settlement fails, the next one is stored', async () => {
    const relay = await startPostgresRelay();
    const store = await createStore(relay.through(await storeUrl()), { poolSize: 1 });
    try {
      await store.migrate();
      const tenantId = `ten_reset_${randomBytes(4).toString('hex')}`;
      const topUp = 1000n * UNIT;
      await credit(store, tenantId, topUp);
      relay.pause();
      // The pool's one connection is checked out by the settlement and silent; a reset then reaches it while checked
      // out, where an 'error' event without a listener would end this process.
      const lost = store.settle([settlement(tenantId, Date.UTC(2031, 8, 1))]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      relay.cut();
      await expect(lost).rejects.toThrow(/ECONNRESET|Connection terminated/);
      relay.restore();
      const stored = [settlement(tenantId, Date.UTC(2031, 8, 1))];
      await store.settle(stored);
      await expectCountedOnce(store, tenantId, stored, topUp);
    } finally {
      await store.close();
      await relay.close();
    }
  });
});
