/**
 * The Redis connection of billing's shared month counts (volume positions, budget holds) in cluster mode: one retry and
 * a command timeout, so a hung Redis fails a request's call instead of hanging it (callers fall back to this process's
 * counts), and a connection that ioredis keeps reconnecting in the background.
 */
import { Redis } from 'ioredis';

/** How long a month's shared counts are kept after their last use, s: past the month and its invoicing. */
export const MONTH_COUNT_TTL_SECONDS = 40 * 86_400;

/** Opens (lazily, on the first command) a connection for billing's shared counts. */
export function openBillingRedis(url: string, commandTimeoutMs = 1000): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: commandTimeoutMs, lazyConnect: true });
  // Errors surface on the command that failed; the connection itself is retried by ioredis.
  redis.on('error', () => undefined);
  return redis;
}
