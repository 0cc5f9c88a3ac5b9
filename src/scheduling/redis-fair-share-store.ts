/**
 * Fair-share totals in Redis: one hash per scope (`tg:fair:{<scope>}`; the braces make it one Redis Cluster slot),
 * updated with HINCRBYFLOAT and read back in the same MULTI, expiring after a day without traffic.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { FairShareStore } from './fair-share-store.js';

/** Options of `RedisFairShareStore`. */
export interface RedisFairShareStoreOptions {
  redis: string | RedisOptions;
  /** Key prefix. Default `tg:`. */
  keyPrefix?: string;
  /** Command timeout, ms. Default 1000. */
  commandTimeoutMs?: number;
}

const dayMs = 86_400_000;

/** Shared fair-share totals for cluster mode. */
export class RedisFairShareStore implements FairShareStore {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(options: RedisFairShareStoreOptions) {
    const common = { commandTimeout: options.commandTimeoutMs ?? 1000, maxRetriesPerRequest: 1, lazyConnect: false };
    this.redis =
      typeof options.redis === 'string' ? new Redis(options.redis, common) : new Redis({ ...options.redis, ...common });
    // A failed sync only delays fairness across processes; the caller logs it. Without a listener ioredis would
    // print every reconnection error.
    this.redis.on('error', () => undefined);
    this.prefix = options.keyPrefix ?? 'tg:';
  }

  async sync(scope: string, deltas: ReadonlyMap<string, number>): Promise<Map<string, number>> {
    const key = `${this.prefix}fair:{${scope}}`;
    const transaction = this.redis.multi();
    for (const [tenantId, delta] of deltas) if (delta !== 0) transaction.hincrbyfloat(key, tenantId, delta);
    transaction.pexpire(key, dayMs);
    transaction.hgetall(key);
    const replies = await transaction.exec();
    const last = replies?.at(-1);
    if (last === undefined || last[0] !== null) throw last?.[0] ?? new Error('fair-share sync failed');
    const totals = new Map<string, number>();
    for (const [tenantId, value] of Object.entries(last[1] as Record<string, string>))
      totals.set(tenantId, Number(value));
    return totals;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
