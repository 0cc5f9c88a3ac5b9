/**
 * Waiting for SQLite's write lock without blocking the event loop.
 *
 * A connection that finds another connection's write transaction holding the lock waits for it in SQLite's busy
 * handler: a loop of sleeps inside the C call (`busy_timeout`). better-sqlite3 is synchronous, so on the serving
 * thread nothing else runs meanwhile — every request in flight waits for one top-up or batch line that met the settle
 * thread's commit. And two connections of one thread deadlock: one waits synchronously for a lock the other would
 * release on a later turn of the very event loop it blocks.
 *
 * So the serving thread's connection has no busy timeout (`busy_timeout = 0`): a statement that finds the lock taken
 * fails at once with `SQLITE_BUSY`, having done nothing, and is run again after a timer, for up to the busy timeout,
 * while the event loop goes on. That is what SQLite's busy handler does, with the sleeps on the event loop instead of
 * in the call. Retried are `SQLITE_BUSY` and `SQLITE_BUSY_RECOVERY` (another connection is rebuilding the WAL index
 * after a crash), on which the busy handler would have waited too; not `SQLITE_BUSY_SNAPSHOT`, which means a read
 * transaction cannot be upgraded and a retry of the statement would not help (Tollgate's transactions begin
 * `IMMEDIATE`, so it does not occur). Inside a transaction that holds the lock no statement waits for it, and WAL
 * readers never wait for writers.
 *
 * No library does this: better-sqlite3 only offers the blocking `timeout`, and Kysely's SQLite driver runs its
 * statements synchronously on the one connection.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { CompiledQuery, DatabaseConnection, QueryResult } from 'kysely';

/** True when the statement found a lock taken, did nothing, and may be run again (see the module comment). */
export function isSqliteBusy(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as Error & { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_RECOVERY';
}

/** Pause before the `attempt`-th retry (from 0), ms: 1, 2, … up to 10, so a lock held for ~1 ms is seen soon. */
export function busyRetryDelayMs(attempt: number): number {
  return Math.min(attempt + 1, 10);
}

/**
 * Runs `statement` (one better-sqlite3 call or transaction, or a Kysely statement) until it does not fail with
 * `SQLITE_BUSY`, pausing on timers between tries; after `timeoutMs` of trying the last `SQLITE_BUSY` is thrown. The
 * first try runs at once, so a free lock costs nothing more than the call.
 */
export async function retryWhileBusy<T>(statement: () => T | Promise<T>, timeoutMs: number): Promise<T> {
  let waitedMs = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      return await statement();
    } catch (error: unknown) {
      if (!isSqliteBusy(error) || waitedMs >= timeoutMs) throw error;
    }
    const delay = Math.min(busyRetryDelayMs(attempt), timeoutMs - waitedMs);
    await sleep(delay);
    waitedMs += delay;
  }
}

/** A Kysely connection whose statements wait for the write lock with `retryWhileBusy`. */
export class YieldingBusyConnection implements DatabaseConnection {
  constructor(
    private readonly connection: DatabaseConnection,
    private readonly timeoutMs: number,
  ) {}

  executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    return retryWhileBusy(() => this.connection.executeQuery<R>(compiledQuery), this.timeoutMs);
  }

  streamQuery<R>(compiledQuery: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    // Only SELECTs stream: a WAL reader never waits for the write lock.
    return this.connection.streamQuery<R>(compiledQuery, chunkSize);
  }
}
