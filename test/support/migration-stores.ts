/**
 * Stores for migration tests, one per kind: SQLite in a temporary file, PostgreSQL in a schema of its own. Both are
 * removed after the test file. Each test migrates its store to the version before the one it checks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll } from 'vitest';
import { createStore } from '../../src/store/create-store.js';
import type { KyselyStore } from '../../src/store/kysely-store.js';
import { dropSchema, schemaUrl, uniqueSchema } from './postgres-schema.js';

/** The store kinds every migration is tested on. */
export const MIGRATION_TEST_KINDS = ['sqlite', 'postgres'] as const;

/** Opens stores of `label`'s test file (see the module comment); call at the top level of the file. */
export function migrationTestStores(
  label: string,
): (kind: (typeof MIGRATION_TEST_KINDS)[number]) => Promise<KyselyStore> {
  const directory = mkdtempSync(join(tmpdir(), `tollgate-${label}-`));
  const schema = uniqueSchema(label);
  afterAll(async () => {
    rmSync(directory, { recursive: true, force: true });
    await dropSchema(schema);
  });
  return async (kind) =>
    (await createStore(
      kind === 'sqlite' ? `sqlite://${join(directory, 'store.db')}` : schemaUrl(schema),
    )) as unknown as KyselyStore;
}

/**
 * The names of the tables and indexes in the store's own schema. Kysely's introspection on PostgreSQL lists every
 * schema's tables, and other test files migrate theirs at the same time: this reads the store's schema only.
 */
export async function tablesAndIndexesOf(store: KyselyStore): Promise<Set<string>> {
  const names =
    store.kind === 'sqlite'
      ? await sql<{ name: string }>`select name from sqlite_master where type in ('table', 'index')`.execute(
          store.kysely,
        )
      : await sql<{ name: string }>`select tablename as name from pg_tables where schemaname = current_schema()
          union all select indexname from pg_indexes where schemaname = current_schema()`.execute(store.kysely);
  return new Set(names.rows.map((row) => row.name));
}
