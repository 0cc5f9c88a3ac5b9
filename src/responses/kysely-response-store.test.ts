import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll } from 'vitest';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { KyselyResponseStore } from './kysely-response-store.js';
import { describeResponseStoreConformance } from './response-store-conformance.js';

// CI runs PostgreSQL: when it is unreachable these tests must fail, never skip.
const POSTGRES_URLS = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];
const schema = `tg_responses_${randomBytes(6).toString('hex')}`;
const directory = mkdtempSync(join(tmpdir(), 'tollgate-response-store-'));
let postgresUrl: string | undefined;

async function reachablePostgres(): Promise<string> {
  const failures: string[] = [];
  for (const url of POSTGRES_URLS) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      return url;
    } catch (error: unknown) {
      failures.push(`${url}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await client.end().catch(() => {});
    }
  }
  throw new Error(`PostgreSQL is unreachable (${failures.join('; ')})`);
}

async function open(url: string): Promise<{ store: Store; responses: KyselyResponseStore }> {
  const store = await createStore(url);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  return { store, responses: new KyselyResponseStore(store.kysely) };
}

afterAll(async () => {
  rmSync(directory, { recursive: true, force: true });
  if (postgresUrl === undefined) return;
  const client = new pg.Client({ connectionString: postgresUrl });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await client.end();
  }
});

describeResponseStoreConformance('sqlite', { open: () => open(`sqlite://${join(directory, 'store.db')}`) });

describeResponseStoreConformance('postgres', {
  open: async () => {
    postgresUrl ??= await reachablePostgres();
    return open(`${postgresUrl}?schema=${schema}`);
  },
});
