/**
 * Hard budgets across gateway processes (cluster mode). A hard budget refuses a request when the month's settled spend,
 * plus what admitted requests may still spend, plus the request's worst case would pass the limit. One process can
 * keep those counts in memory; several must share them, or each would let through a whole budget's worth.
 *
 * `RedisBudgetHolds` keeps one Redis hash per budget and month: `spend` (settled, seeded from the ledger on first use)
 * and one `h:<owner>` field per gateway process with what that process's admitted requests hold. Checking and holding
 * is one Lua script over the request's tenant and key budgets, so concurrent admissions in different processes never
 * both see room that only one of them may take. A process that dies leaves its holds behind; every process keeps an
 * owner key alive in Redis (a short TTL, refreshed), and the script drops the holds of owners whose key expired, so a
 * crash blocks a budget's held part for at most the owner key's TTL.
 *
 * Amounts are nano-units. Redis stores them as 64-bit integers (exact). Lua's numbers are doubles, exact only below
 * 2^53 nano-units (about 9 million currency units), so the script never adds whole amounts: it splits each at 10^9
 * and sums the two parts apart (`EXACT_SUMS`), exact over the whole 64-bit range.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Nano } from '../store/ledger-store.js';
import { MONTH_COUNT_TTL_SECONDS, openBillingRedis } from './billing-redis.js';

/** One hard budget a request must fit. */
export interface BudgetHoldScope {
  scope: 'tenant' | 'key';
  scopeId: string;
  /**
   * The budget's `updatedAt`: each setting of a budget has its own count. A budget removed and set again in the same
   * month is counted from the ledger, not from a count that missed what was spent while it was gone.
   */
  version: number;
  /** Monthly limit, nano-units. */
  limit: Nano;
  /** The month's settled spend from the ledger, for a budget the shared count does not know yet. */
  seed: () => Promise<Nano>;
}

/** Shared holds and spend of hard budgets. */
export interface BudgetHolds {
  /**
   * Holds `amount` on every budget in `scopes` for `month` (`YYYY-MM`) when each stays within its limit counting
   * settled spend and every live process's holds; otherwise holds nothing and returns the budget that refused.
   */
  hold(
    tenantId: string,
    month: string,
    scopes: readonly BudgetHoldScope[],
    amount: Nano,
  ): Promise<{ held: true } | { held: false; refusedBy: BudgetHoldScope }>;
  /** Ends a hold taken by `hold` and counts the request's real spend on the same budgets. */
  settle(
    tenantId: string,
    month: string,
    scopes: readonly Pick<BudgetHoldScope, 'scope' | 'scopeId' | 'version'>[],
    held: Nano,
    spent: Nano,
  ): Promise<void>;
  close(): Promise<void>;
}

/** Options of `RedisBudgetHolds`. */
export interface RedisBudgetHoldsOptions {
  url: string;
  /** Key prefix. Default `tg:budget:`. */
  prefix?: string;
  /** How long a dead process's holds keep counting, ms (its owner key's TTL; refreshed every third of it). Default 15 s. */
  ownerTtlMs?: number;
  /** How long a month's counts are kept after their last use, s. Default 40 days. */
  ttlSeconds?: number;
  /** One command's timeout, ms. Default 1000. */
  commandTimeoutMs?: number;
}

/**
 * Lua helpers for exact sums of integers given as decimal strings (Redis replies and arguments). A Lua number is a
 * double, so adding two amounts past 2^53 would round. Each amount is split at 10^9 instead: its high part (at most
 * 10 digits of a 64-bit integer) and its low part (9 digits) are summed apart, each sum exact as a double, and
 * `exceeds` decides the sign of high × 10^9 + low without forming it. (Redis's Lua has no 64-bit integers, and a
 * digit-by-digit decimal adder would be longer for nothing: sums of a few parts never approach 2^53.)
 */
const EXACT_SUMS = `
local function parts(text)
  local sign = 1
  if string.sub(text, 1, 1) == '-' then
    sign = -1
    text = string.sub(text, 2)
  end
  local high = 0
  if #text > 9 then high = tonumber(string.sub(text, 1, -10)) end
  return sign * high, sign * tonumber(string.sub(text, -9))
end
local function exceeds(high, low)
  local carry = math.floor(low / 1e9)
  local rest = low - carry * 1e9
  if rest < 0 then
    rest = rest + 1e9
    carry = carry - 1
  elseif rest >= 1e9 then
    rest = rest - 1e9
    carry = carry + 1
  end
  high = high + carry
  return high > 0 or (high == 0 and rest > 0)
end
`;

// KEYS: the budgets' hashes. ARGV[1] owner, ARGV[2] amount, ARGV[3] owner-key prefix, ARGV[4] ttl s, then per key:
// its limit and its seed ('' = not known yet). Returns {1, 0} when held, {0, i} when budget i refused, {-1, i} when
// budget i has no count yet and no seed was given. Whether spend + holds + amount passes the limit is decided on
// split parts (EXACT_SUMS): high and low accumulate spend + holds + amount − limit.
const HOLD_SCRIPT = `${EXACT_SUMS}
local owner = ARGV[1]
local amountHigh, amountLow = parts(ARGV[2])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local seed = ARGV[4 + 2 * i]
    if seed == '' then return {-1, i} end
    redis.call('HSET', KEYS[i], 'spend', seed)
  end
end
for i = 1, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  local limitHigh, limitLow = parts(ARGV[3 + 2 * i])
  local high, low = amountHigh - limitHigh, amountLow - limitLow
  for j = 1, #fields, 2 do
    local field = fields[j]
    local counted = field == 'spend'
    if not counted then
      local holder = string.sub(field, 3)
      counted = holder == owner or redis.call('EXISTS', ARGV[3] .. holder) == 1
      if not counted then redis.call('HDEL', KEYS[i], field) end
    end
    if counted then
      local h, l = parts(fields[j + 1])
      high, low = high + h, low + l
    end
  end
  if exceeds(high, low) then return {0, i} end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'h:' .. owner, ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return {1, 0}
`;

// KEYS: the budgets' hashes. ARGV[1] owner, ARGV[2] minus the held amount, ARGV[3] spent. A budget whose count is
// gone (expired, never seeded) is left alone: its next seed reads the ledger, which has the spend.
const SETTLE_SCRIPT = `
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local left = redis.call('HINCRBY', KEYS[i], 'h:' .. ARGV[1], ARGV[2])
    if left <= 0 then redis.call('HDEL', KEYS[i], 'h:' .. ARGV[1]) end
    redis.call('HINCRBY', KEYS[i], 'spend', ARGV[3])
  end
end
return 1
`;

interface BudgetCommands {
  tollgateBudgetHold(numberOfKeys: number, ...keysAndArguments: string[]): Promise<[number, number]>;
  tollgateBudgetSettle(numberOfKeys: number, ...keysAndArguments: string[]): Promise<number>;
}

/** `BudgetHolds` on Redis (see the module comment). */
export class RedisBudgetHolds implements BudgetHolds {
  private readonly redis: Redis;
  private readonly commands: BudgetCommands;
  private readonly prefix: string;
  private readonly ownerPrefix: string;
  /** This process's name in the hashes. */
  readonly owner = randomBytes(8).toString('hex');
  private readonly ownerTtlMs: number;
  private readonly ttl: string;
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;
  /** Settlements sent and not yet answered: `close` waits for them. */
  private readonly settling = new Set<Promise<unknown>>();
  /** `performance.now()` of the last owner-key refresh that succeeded. */
  private lastBeat = Number.NEGATIVE_INFINITY;

  constructor(options: RedisBudgetHoldsOptions) {
    this.redis = openBillingRedis(options.url, options.commandTimeoutMs);
    this.redis.defineCommand('tollgateBudgetHold', { lua: HOLD_SCRIPT });
    this.redis.defineCommand('tollgateBudgetSettle', { lua: SETTLE_SCRIPT });
    this.commands = this.redis as unknown as BudgetCommands;
    this.prefix = options.prefix ?? 'tg:budget:';
    this.ownerPrefix = `${this.prefix}owner:`;
    this.ownerTtlMs = options.ownerTtlMs ?? 15_000;
    this.ttl = String(options.ttlSeconds ?? MONTH_COUNT_TTL_SECONDS);
    this.heartbeat = setInterval(() => void this.keepAlive().catch(() => undefined), this.ownerTtlMs / 3);
    this.heartbeat.unref();
  }

  async hold(
    tenantId: string,
    month: string,
    scopes: readonly BudgetHoldScope[],
    amount: Nano,
  ): Promise<{ held: true } | { held: false; refusedBy: BudgetHoldScope }> {
    if (scopes.length === 0) return { held: true };
    // A hold must never outlive its owner key: refresh it first when the heartbeat is late (or has not run yet).
    if (performance.now() - this.lastBeat > this.ownerTtlMs / 2) await this.keepAlive();
    const keys = scopes.map((scope) => this.keyOf(tenantId, month, scope));
    const seeds: (Nano | undefined)[] = scopes.map(() => undefined);
    for (;;) {
      const budgets = scopes.flatMap((scope, index) => [scope.limit.toString(), seeds[index]?.toString() ?? '']);
      const [outcome, index] = await this.commands.tollgateBudgetHold(
        keys.length,
        ...keys,
        this.owner,
        amount.toString(),
        this.ownerPrefix,
        this.ttl,
        ...budgets,
      );
      if (outcome === 1) return { held: true };
      const scope = scopes[index - 1]!;
      if (outcome === 0) return { held: false, refusedBy: scope };
      // No count yet: read the ledger and try again (another process may have seeded it meanwhile; then it wins).
      seeds[index - 1] = await scope.seed();
    }
  }

  async settle(
    tenantId: string,
    month: string,
    scopes: readonly Pick<BudgetHoldScope, 'scope' | 'scopeId' | 'version'>[],
    held: Nano,
    spent: Nano,
  ): Promise<void> {
    if (scopes.length === 0) return;
    const keys = scopes.map((scope) => this.keyOf(tenantId, month, scope));
    const sent = this.commands.tollgateBudgetSettle(
      keys.length,
      ...keys,
      this.owner,
      (-held).toString(),
      spent.toString(),
    );
    this.settling.add(sent);
    try {
      await sent;
    } finally {
      this.settling.delete(sent);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    await Promise.allSettled([...this.settling]);
    try {
      // Requests are over: nothing of this process's is held any more.
      if (this.redis.status === 'ready') await this.redis.del(`${this.ownerPrefix}${this.owner}`);
    } finally {
      this.redis.disconnect();
    }
  }

  /** The budget's hash: the tenant id is the Redis Cluster hash tag, so a request's budgets share one slot. */
  private keyOf(
    tenantId: string,
    month: string,
    scope: Pick<BudgetHoldScope, 'scope' | 'scopeId' | 'version'>,
  ): string {
    return `${this.prefix}{${tenantId}}:${scope.scope}:${scope.scopeId}:${scope.version}:${month}`;
  }

  private async keepAlive(): Promise<void> {
    if (this.closed) return;
    const startedAt = performance.now();
    await this.redis.set(`${this.ownerPrefix}${this.owner}`, '1', 'PX', this.ownerTtlMs);
    this.lastBeat = startedAt;
  }
}
