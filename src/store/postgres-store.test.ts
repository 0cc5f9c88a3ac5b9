import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from './create-store.js';
import { describeStoreConformance } from './store-conformance.js';

// CI runs PostgreSQL: when it is unreachable these tests must fail, never skip.
const CANDIDATE_URLS = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];
const schema = `tg_test_${randomBytes(6).toString('hex')}`;
let baseUrl: string | undefined;

async function findBaseUrl(): Promise<string> {
  const failures: string[] = [];
  for (const url of CANDIDATE_URLS) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('select 1');
      return url;
    } catch (error: unknown) {
      failures.push(`${url}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await client.end().catch(() => {});
    }
  }
  throw new Error(`PostgreSQL is unreachable (${failures.join('; ')})`);
}

async function storeUrl(): Promise<string> {
  baseUrl ??= await findBaseUrl();
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
  concurrentInstances: true,
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
      await store.insertRequestLogs([
        {
          requestId: `req_${tenantId}`,
          tenantId,
          keyId: null,
          endpoint: 'chat',
          model: null,
          deployment: null,
          status: 200,
          errorCode: null,
          stream: false,
          promptTokens: 0,
          cachedTokens: 0,
          completionTokens: 0,
          reasoningTokens: 0,
          usageEstimated: false,
          latencyMs: 0,
          ttftMs: null,
          attempts: 1,
          createdAt: 1,
        },
      ]);
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
