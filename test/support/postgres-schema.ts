/** PostgreSQL schemas for tests: one per test file and run, dropped afterwards. */
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
