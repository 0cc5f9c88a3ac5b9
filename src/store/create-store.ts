import { isAbsolute, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Store } from './store.js';

/** Options of `createStore`. */
export interface CreateStoreOptions {
  /** PostgreSQL pool size when the URL has no `pool_size` parameter. Default 10. */
  poolSize?: number;
  /** Receives connection-level warnings (PostgreSQL idle connection errors). */
  logger?: Logger;
}

/**
 * Opens the store named by `url` (it does not migrate: call `store.migrate()`):
 * - `sqlite://:memory:` — an in-memory database (tests);
 * - `sqlite://data/tollgate.db` — relative to the working directory; `sqlite:///var/lib/tollgate.db` — absolute.
 *   The directory is created if missing;
 * - `postgres://user@host:5432/database?schema=name&pool_size=20` (or `postgresql://`) — `schema` sets the
 *   search_path (created if missing), `pool_size` the pool's connection count; other parameters go to `pg`.
 */
export async function createStore(url: string, options: CreateStoreOptions = {}): Promise<Store> {
  if (url.startsWith('sqlite://')) {
    const path = url.slice('sqlite://'.length);
    if (path === '') throw new Error('Store URL sqlite:// needs a file path or :memory:');
    // Each kind's module is loaded when one is opened: a CLI command on a SQLite store never loads the PostgreSQL client.
    const { openSqliteStore } = await import('./sqlite-store.js');
    if (path === ':memory:') return openSqliteStore(path);
    return openSqliteStore(isAbsolute(path) ? path : resolve(path));
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const parsed = new URL(url);
    const schema = parsed.searchParams.get('schema') ?? undefined;
    const poolSizeParameter = parsed.searchParams.get('pool_size');
    parsed.searchParams.delete('schema');
    parsed.searchParams.delete('pool_size');
    let poolSize = options.poolSize ?? 10;
    if (poolSizeParameter !== null) {
      poolSize = Number(poolSizeParameter);
      if (!Number.isInteger(poolSize) || poolSize < 1) {
        throw new Error(`Store URL pool_size must be a positive integer, got "${poolSizeParameter}"`);
      }
    }
    const { openPostgresStore } = await import('./postgres-store.js');
    return openPostgresStore({
      connectionString: parsed.toString(),
      poolSize,
      ...(schema === undefined ? {} : { schema }),
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
  }
  throw new Error(`Unsupported store URL "${redactUrl(url)}": expected sqlite://… or postgres://…`);
}

/** The URL without its password, for error messages. */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');
}
