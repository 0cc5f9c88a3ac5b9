/** PostgreSQL schemas for tests: one per test file and run, dropped afterwards. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** The test database (trust auth here and in CI). */
export const testDatabaseUrl = 'postgres://postgres@127.0.0.1:5432/test';

/** A unique schema name for this process and `label`. */
export function uniqueSchema(label: string): string {
  return `tg_${label}_${process.pid}_${Date.now().toString(36)}`;
}

/** Store URL of the test database with `schema` as its search path. */
export function schemaUrl(schema: string): string {
  return `${testDatabaseUrl}?schema=${schema}`;
}

/** Drops a test schema and everything in it. */
export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: testDatabaseUrl });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema.replaceAll('"', '')}" CASCADE`);
  } finally {
    await client.end();
  }
}

/** Where the test database may be: trust auth as `postgres` (CI) or as `root` (some machines). */
const CANDIDATE_URLS = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];

/** The first candidate URL that connects. Throws when none does: CI runs PostgreSQL, so its tests fail, never skip. */
export async function reachablePostgres(): Promise<string> {
  const failures: string[] = [];
  for (const url of CANDIDATE_URLS) {
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

/**
 * A conformance suite's two stores: a SQLite file in a fresh directory, and a fresh schema of the reachable test
 * database. `cleanup` removes both (call it in `afterAll`).
 */
export function conformanceStoreUrls(label: string): {
  sqlite: string;
  postgres(): Promise<string>;
  cleanup(): Promise<void>;
} {
  const directory = mkdtempSync(join(tmpdir(), `tollgate-${label}-`));
  const schema = uniqueSchema(label);
  let base: string | undefined;
  return {
    sqlite: `sqlite://${join(directory, 'store.db')}`,
    async postgres() {
      base ??= await reachablePostgres();
      return `${base}?schema=${schema}`;
    },
    async cleanup() {
      rmSync(directory, { recursive: true, force: true });
      if (base === undefined) return;
      const client = new pg.Client({ connectionString: base });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}
