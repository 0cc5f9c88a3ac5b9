/**
 * Where a tenant's month-to-date token count lives when several gateway processes rate its requests (cluster mode).
 * Graduated volume tiers price a request by the position of its tokens in the tenant's month: with one count per
 * process, two processes would each rate the same "first billion" at list price. `advance` hands out positions from
 * one Redis counter per tenant and month, atomically, so every token gets exactly one position across processes.
 */
import type { Redis } from 'ioredis';
import { MONTH_COUNT_TTL_SECONDS, openBillingRedis } from './billing-redis.js';

/**
 * Hands out month positions for a tenant's tokens. The counter counts any non-negative integers: billing also keeps
 * each budget's month-to-date spend, in nano-units, in one (`BillingService.sharedMonthSpend`, named by the budget).
 */
export interface VolumePositionStore {
  /**
   * Moves the count named `counter` (a tenant's id for its tokens, a budget for its spend) for `month` (`YYYY-MM`) on
   * by `amount` and returns the count before: a request's first token is number `before + 1`. `seed` gives the count
   * from the ledger when the month has no counter yet (first use, or after the counter expired); it is called at most
   * once per call and its answer is used only if no other process seeded the month meanwhile.
   */
  advance(counter: string, month: string, amount: bigint, seed: () => Promise<bigint>): Promise<bigint>;
  close(): Promise<void>;
}

/** Options of `RedisVolumePositionStore`. */
export interface RedisVolumePositionStoreOptions {
  /** Redis URL. */
  url: string;
  /** Key prefix. Default `tg:volume:`. */
  prefix?: string;
  /** How long a month's counter is kept after its last use, s. Default 40 days (past the month and its invoicing). */
  ttlSeconds?: number;
  /** One command's timeout, ms. Default 1000. */
  commandTimeoutMs?: number;
}

// KEYS[1] counter; ARGV[1] amount, ARGV[2] seed ('' = none known yet), ARGV[3] ttl s.
// Returns the count after the amount as its decimal digits, or false (a nil reply) when the counter is missing and no
// seed was given. The digits are read back with GET: INCRBY's integer reply becomes a Lua number, a double, which
// rounds past 2^53 (a budget's spend passes it at about 9 million currency units in nano-units).
const ADVANCE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] == '' then return false end
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('GET', KEYS[1])
`;

type AdvanceCommand = (key: string, amount: string, seed: string, ttl: string) => Promise<string | null>;

/** `VolumePositionStore` on one Redis counter per tenant and month (a Lua script: check, seed, add, in one step). */
export class RedisVolumePositionStore implements VolumePositionStore {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly ttl: string;

  constructor(options: RedisVolumePositionStoreOptions) {
    this.redis = openBillingRedis(options.url, options.commandTimeoutMs);
    this.redis.defineCommand('tollgateVolumeAdvance', { numberOfKeys: 1, lua: ADVANCE_SCRIPT });
    this.prefix = options.prefix ?? 'tg:volume:';
    this.ttl = String(options.ttlSeconds ?? MONTH_COUNT_TTL_SECONDS);
  }

  async advance(counter: string, month: string, amount: bigint, seed: () => Promise<bigint>): Promise<bigint> {
    if (amount < 0n) throw new RangeError(`Cannot advance a count by a negative amount (${amount})`);
    const key = `${this.prefix}{${counter}}:${month}`;
    const run = (this.redis as unknown as { tollgateVolumeAdvance: AdvanceCommand }).tollgateVolumeAdvance.bind(
      this.redis,
    );
    const first = await run(key, amount.toString(), '', this.ttl);
    if (first !== null) return BigInt(first) - amount;
    const seeded = await seed();
    const second = await run(key, amount.toString(), seeded.toString(), this.ttl);
    if (second === null) throw new Error(`Volume counter ${key} was not seeded`);
    return BigInt(second) - amount;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
