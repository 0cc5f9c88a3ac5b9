import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from './create-store.js';
import { requestLogFixture } from './ledger-fixtures.js';
import {
  PRICED_REQUEST_LOG_COLUMNS,
  pricedRequestLogParameters,
  REQUEST_LOG_INSERT_COLUMNS,
  requestLogParameters,
  requestLogRow,
} from './ledger-rows.js';
import type { UsageRating } from './ledger-store.js';
import { migrationProvider } from './migrations/migration-provider.js';
import { openSqliteStore, type SqliteStore } from './sqlite-store.js';
import type { RequestLogRecord } from './store.js';
import { describeStoreConformance } from './store-conformance.js';
import { type TranspiledTree, transpileForChild } from './transpile-for-child.js';

const directory = mkdtempSync(join(tmpdir(), 'tollgate-sqlite-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describeStoreConformance('sqlite', {
  openStore: () => createStore(`sqlite://${join(directory, 'conformance', 'store.db')}`),
});

describe('SQLite store', () => {
  it('uses WAL, synchronous=NORMAL, a busy timeout (waited on timers by default) and foreign keys', async () => {
    const path = join(directory, 'pragmas.db');
    const store = await createStore(`sqlite://${path}`);
    await store.migrate();
    // Per-connection settings: read them on the store's own connection.
    const connection = (store as any).database as Database.Database;
    expect(connection.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(connection.pragma('synchronous', { simple: true })).toBe(1);
    // Yielding: SQLite does not wait itself; the store retries (see the next tests).
    expect(connection.pragma('busy_timeout', { simple: true })).toBe(0);
    expect(connection.pragma('foreign_keys', { simple: true })).toBe(1);
    await store.close();
    const blocking = openSqliteStore(path, { busyWait: 'block', busyTimeoutMs: 1234 });
    expect(((blocking as any).database as Database.Database).pragma('busy_timeout', { simple: true })).toBe(1234);
    await blocking.close();
  });

  describe("a write that finds another connection's write transaction holding the lock", () => {
    const path = join(directory, 'lock', 'store.db');
    let store: SqliteStore;
    let other: Database.Database;

    beforeAll(async () => {
      store = openSqliteStore(path);
      await store.migrate();
      other = new Database(path);
    });
    afterAll(async () => {
      other.close();
      await store.close();
    });

    /** Starts `write` while `other` holds the write lock; checks the event loop goes on, then releases the lock. */
    async function waitsWithoutBlocking<T>(write: () => Promise<T>): Promise<T> {
      other.exec('begin immediate');
      let settled = false;
      const result = write().finally(() => {
        settled = true;
      });
      // A blocking wait would hold this timer back until the write gave up (the 5 s busy timeout).
      let ticks = 0;
      await new Promise<void>((resolve) => {
        const ticking = setInterval(() => {
          if (++ticks === 5) {
            clearInterval(ticking);
            resolve();
          }
        }, 2);
      });
      expect(settled).toBe(false);
      other.exec('commit');
      return result;
    }

    it('through the query layer (a tenant) waits on timers and is written once the lock is free', async () => {
      const tenant = await waitsWithoutBlocking(() => store.createTenant('waited'));
      expect(await store.getTenant(tenant.id)).toEqual(tenant);
    });

    it('through a prepared statement (request-log rows) waits the same way', async () => {
      const record = requestLogFixture({ requestId: 'req_waited', tenantId: null, status: 401 });
      await waitsWithoutBlocking(() => store.insertRequestLogs([record]));
      expect(other.prepare('select status from request_log where request_id = ?').pluck().get('req_waited')).toBe(401);
    });

    it('fails with SQLITE_BUSY after the busy timeout, having written nothing', async () => {
      const impatient = openSqliteStore(path, { busyTimeoutMs: 30 });
      other.exec('begin immediate');
      try {
        await expect(impatient.createTenant('never')).rejects.toMatchObject({ code: 'SQLITE_BUSY' });
      } finally {
        other.exec('rollback');
        await impatient.close();
      }
      expect(other.prepare("select count(*) from tenants where name = 'never'").pluck().get()).toBe(0);
    });
  });

  it("binds settlement rows positionally in the order of their column lists, with the row mappings' values", () => {
    const log: RequestLogRecord = {
      requestId: 'req_1',
      tenantId: 'ten_1',
      keyId: 'key_1',
      endpoint: 'chat',
      model: 'm',
      deployment: 'u/m',
      status: 503,
      errorCode: 'upstream_error',
      stream: true,
      promptTokens: 11,
      cachedTokens: 12,
      completionTokens: 13,
      reasoningTokens: 14,
      usageEstimated: true,
      latencyMs: 15.5,
      ttftMs: 16.25,
      attempts: 17,
      createdAt: 18,
      attemptLog: '[1]',
    };
    const logRow = requestLogRow(log);
    expect(new Set(PRICED_REQUEST_LOG_COLUMNS)).toEqual(new Set(Object.keys(logRow)));
    expect(requestLogParameters(log)).toEqual(REQUEST_LOG_INSERT_COLUMNS.map((column) => logRow[column]));
    expect(pricedRequestLogParameters(log, undefined)).toEqual(
      PRICED_REQUEST_LOG_COLUMNS.map((column) => logRow[column]),
    );
    expect(logRow).toMatchObject({ attempt_log: '[1]', prompt_tokens: 11, created_at: 18, amount: null, detail: null });
    // The row is built from the parameters, so the lines above check the zip; this pins each column's value.
    const noRating = Object.fromEntries(
      PRICED_REQUEST_LOG_COLUMNS.slice(REQUEST_LOG_INSERT_COLUMNS.length).map((c) => [c, null]),
    );
    // Every log column's value, the same in a rated row.
    const logColumns = {
      request_id: 'req_1',
      tenant_id: 'ten_1',
      key_id: 'key_1',
      endpoint: 'chat',
      model: 'm',
      deployment: 'u/m',
      status: 503,
      error_code: 'upstream_error',
      stream: 1,
      prompt_tokens: 11,
      cached_tokens: 12,
      completion_tokens: 13,
      reasoning_tokens: 14,
      usage_estimated: 1,
      latency_ms: 15.5,
      ttft_ms: 16.25,
      attempts: 17,
      created_at: 18,
      attempt_log: '[1]',
    };
    expect(logRow).toEqual({ ...logColumns, ...noRating });
    const { attemptLog: _omitted, ...withoutAttempts } = log;
    expect(requestLogRow(withoutAttempts).attempt_log).toBeNull();

    // A rated row: the log's columns as they are, then the rating's.
    const rating: UsageRating = {
      batch: true,
      currency: 'CNY',
      priceVersion: 'v',
      tier: 't',
      outputCondition: 'c',
      inputListAmount: 26n,
      cachedListAmount: 27n,
      outputListAmount: 28n,
      batchDiscount: -29n,
      offPeakDiscount: -30n,
      contractDiscount: -31n,
      volumeDiscount: -32n,
      amount: 33n,
      cost: 34n,
      detail: '{}',
    };
    const row = requestLogRow(log, rating);
    expect(pricedRequestLogParameters(log, rating)).toEqual(PRICED_REQUEST_LOG_COLUMNS.map((column) => row[column]));
    expect(row).toEqual({
      ...logColumns,
      batch: 1,
      currency: 'CNY',
      price_version: 'v',
      tier: 't',
      output_condition: 'c',
      input_list_amount: 26n,
      cached_list_amount: 27n,
      output_list_amount: 28n,
      batch_discount: -29n,
      off_peak_discount: -30n,
      contract_discount: -31n,
      volume_discount: -32n,
      amount: 33n,
      cost: 34n,
      detail: '{}',
    });
  });

  it('migrates to the ingest schema: attempt_log column, no request_log_created_idx, a larger WAL checkpoint', async () => {
    const store = await createStore('sqlite://:memory:');
    await store.migrate();
    const connection = (store as any).database as Database.Database;
    const columns = connection.prepare("select name from pragma_table_info('request_log')").pluck().all();
    expect(columns).toContain('attempt_log');
    const indexes = connection
      .prepare("select name from sqlite_master where type = 'index' and tbl_name = 'request_log'")
      .pluck()
      .all();
    expect(indexes).toContain('request_log_tenant_created_idx');
    expect(indexes).not.toContain('request_log_created_idx');
    expect(connection.pragma('wal_autocheckpoint', { simple: true })).toBe(10_000);
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
