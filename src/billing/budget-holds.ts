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
 * Amounts are nano-units. Redis stores them as 64-bit integers (exact); the script compares them as Lua numbers,
 * which are exact below 2^53 nano-units (about 9 million currency units per budget and month).
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

// KEYS: the budgets' hashes. ARGV[1] owner, ARGV[2] amount, ARGV[3] owner-key prefix, ARGV[4] ttl s, then per key:
// its limit and its seed ('' = not known yet). Returns {1, 0} when held, {0, i} when budget i refused, {-1, i} when
// budget i has no count yet and no seed was given.
const HOLD_SCRIPT = `
local owner = ARGV[1]
local amount = tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local seed = ARGV[4 + 2 * i]
    if seed == '' then return {-1, i} end
    redis.call('HSET', KEYS[i], 'spend', seed)
  end
end
for i = 1, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  local total = 0
  for j = 1, #fields, 2 do
    local field = fields[j]
    if field == 'spend' then
      total = total + tonumber(fields[j + 1])
    else
      local holder = string.sub(field, 3)
      if holder ~= owner and redis.call('EXISTS', ARGV[3] .. holder) == 0 then
        redis.call('HDEL', KEYS[i], field)
      else
        total = total + tonumber(fields[j + 1])
      end
    end
  end
  if total + amount > tonumber(ARGV[3 + 2 * i]) then return {0, i} end
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
