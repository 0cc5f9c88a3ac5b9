import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../test/support/postgres-schema.js';
import { temporaryDirectory } from '../../test/support/temporary-directory.js';
import { isStoreUnreachable } from './store-unreachable.js';

/** The error `action` rejects or throws with. */
async function errorOf(action: () => unknown): Promise<unknown> {
  try {
    await action();
  } catch (error: unknown) {
    return error;
  }
  throw new Error('expected a failure');
}

describe('isStoreUnreachable, on errors the real drivers throw', () => {
  it('knows a PostgreSQL that refuses the connection', async () => {
    // Port 9 (discard): nothing listens there on these machines.
    const client = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:9/test' });
    const error = await errorOf(() => client.connect());
    expect(error).toMatchObject({ code: 'ECONNREFUSED' });
    expect(isStoreUnreachable(error)).toBe(true);
  });

  it('knows a connection whose server process was terminated, and every query after it', async () => {
    const victim = new pg.Client({ connectionString: testDatabaseUrl });
    const killer = new pg.Client({ connectionString: testDatabaseUrl });
    const heard: unknown[] = [];
    victim.on('error', (error) => heard.push(error));
    await victim.connect();
    await killer.connect();
    try {
      const pid = (await victim.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      const running = errorOf(() => victim.query('select pg_sleep(10)'));
      await killer.query('select pg_terminate_backend($1)', [pid]);
      const failures = [await running, await errorOf(() => victim.query('select 1')), ...heard];
      expect(failures.length).toBeGreaterThanOrEqual(2);
      for (const failure of failures) expect([failure, isStoreUnreachable(failure)]).toEqual([failure, true]);
    } finally {
      await killer.end();
      await victim.end().catch(() => undefined);
    }
  });

  it('does not take a wrong query for an outage', async () => {
    const client = new pg.Client({ connectionString: testDatabaseUrl });
    await client.connect();
    try {
      const error = await errorOf(() => client.query('select * from no_such_table'));
      expect(error).toMatchObject({ code: '42P01' });
      expect(isStoreUnreachable(error)).toBe(false);
    } finally {
      await client.end();
    }
  });

  it('knows SQLite locked by another connection past the busy timeout, and not a broken constraint', async () => {
    const file = path.join(temporaryDirectory('store-unreachable-'), 'busy.db');
    const holder = new Database(file);
    const other = new Database(file, { timeout: 0 });
    try {
      holder.exec('create table t (id integer primary key)');
      holder.exec('begin immediate');
      const busy = await errorOf(() => other.exec('insert into t values (1)'));
      expect(busy).toMatchObject({ code: 'SQLITE_BUSY' });
      expect(isStoreUnreachable(busy)).toBe(true);
      holder.exec('commit');
      other.exec('insert into t values (1)');
      const duplicate = await errorOf(() => other.exec('insert into t values (1)'));
      expect(duplicate).toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
      expect(isStoreUnreachable(duplicate)).toBe(false);
    } finally {
      other.close();
      holder.close();
    }
  });

  it('does not take a program error or a thrown non-error for an outage', () => {
    expect(isStoreUnreachable(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBe(false);
    expect(isStoreUnreachable('Connection terminated unexpectedly')).toBe(false);
    expect(isStoreUnreachable(undefined)).toBe(false);
  });
});
