import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from './create-store.js';
import { migrationProvider } from './migrations/migration-provider.js';
import { describeStoreConformance } from './store-conformance.js';
import { type TranspiledTree, transpileForChild } from './transpile-for-child.js';

const directory = mkdtempSync(join(tmpdir(), 'tollgate-sqlite-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describeStoreConformance('sqlite', {
  openStore: () => createStore(`sqlite://${join(directory, 'conformance', 'store.db')}`),
  concurrentInstances: false,
});

describe('SQLite store', () => {
  it('uses WAL, synchronous=NORMAL, a busy timeout and foreign keys', async () => {
    const path = join(directory, 'pragmas.db');
    const store = await createStore(`sqlite://${path}`);
    await store.migrate();
    // Per-connection settings: read them on the store's own connection.
    const connection = (store as any).database as Database.Database;
    expect(connection.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(connection.pragma('synchronous', { simple: true })).toBe(1);
    expect(connection.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(connection.pragma('foreign_keys', { simple: true })).toBe(1);
    await store.close();
  });

  it('opens an in-memory database', async () => {
    const store = await createStore('sqlite://:memory:');
    await store.migrate();
    const tenant = await store.createTenant('memory');
    expect(await store.getTenant(tenant.id)).toEqual(tenant);
    await store.close();
  });

  it('creates missing directories for the file', async () => {
    const store = await createStore(`sqlite://${join(directory, 'a', 'b', 'c.db')}`);
    await store.migrate();
    expect(store.kind).toBe('sqlite');
    await store.close();
    const database = new Database(join(directory, 'a', 'b', 'c.db'), { readonly: true });
    expect(database.prepare('select count(*) as n from tenants').get()).toEqual({ n: 0 });
    database.close();
  });

  describe('several processes migrating one file at once', () => {
    let tree: TranspiledTree;
    beforeAll(async () => {
      tree = await transpileForChild(['src/store/sqlite-migrate.child.ts']);
    });
    afterAll(() => tree.remove());

    it('all succeed and the schema is created once', async () => {
      const path = join(directory, 'race', 'store.db');
      const children = Array.from({ length: 4 }, () =>
        runChild(tree.pathOf('src/store/sqlite-migrate.child.ts'), path),
      );
      const outcomes = await Promise.all(children);
      for (const outcome of outcomes) expect(outcome).toEqual({ code: 0, stdout: 'migrated\n', stderr: '' });
      const database = new Database(path, { readonly: true });
      try {
        // Every migration recorded once (the list grows with each migration).
        const names = Object.keys(await migrationProvider.getMigrations()).sort();
        expect(names.slice(0, 2)).toEqual(['0001-initial-schema', '0002-ledger']);
        expect(database.prepare('select name from kysely_migration order by name').all()).toEqual(
          names.map((name) => ({ name })),
        );
        expect(database.prepare("select count(*) as n from settings where key like 'migrated-by-%'").get()).toEqual({
          n: 4,
        });
      } finally {
        database.close();
      }
    });
  });
});

function runChild(script: string, path: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [script, `sqlite://${path}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}
