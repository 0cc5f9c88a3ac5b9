import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type BudgetHoldScope, RedisBudgetHolds } from './budget-holds.js';

const url = 'redis://127.0.0.1:6379';
const stores: RedisBudgetHolds[] = [];
const raw = new Redis(url);
afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
});
afterAll(() => raw.disconnect());

function processes(count: number) {
  const prefix = `tgtest:budget:${process.pid}:${Date.now()}:`;
  const started = Array.from({ length: count }, () => new RedisBudgetHolds({ url, prefix }));
  stores.push(...started);
  return { prefix, started };
}

function tenantBudget(limit: bigint, seed: () => Promise<bigint> = async () => 0n, version = 0): BudgetHoldScope {
  return { scope: 'tenant', scopeId: 'ten_a', version, limit, seed };
}

describe('RedisBudgetHolds', () => {
  it('lets 10 of 200 concurrent holds from two processes through a budget that covers 10', async () => {
    const { started } = processes(2);
    let seeds = 0;
    const budget = tenantBudget(1_000n, async () => {
      seeds += 1;
      return 0n;
    });
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, (_, index) => started[index % 2]!.hold('ten_a', '2026-11', [budget], 100n)),
    );
    expect(outcomes.filter((outcome) => outcome.held)).toHaveLength(10);
    expect(seeds).toBeGreaterThanOrEqual(1);
  });

  it('counts the ledger spend it is seeded with and the spend settled, and frees what a hold did not spend', async () => {
    const { started } = processes(2);
    const [first, second] = started as [RedisBudgetHolds, RedisBudgetHolds];
    const budget = tenantBudget(1_000n, async () => 600n); // 600 spent this month before the counts existed
    expect((await first.hold('ten_a', '2026-11', [budget], 300n)).held).toBe(true);
    expect((await second.hold('ten_a', '2026-11', [budget], 101n)).held).toBe(false); // 600 + 300 + 101 > 1000
    await first.settle('ten_a', '2026-11', [budget], 300n, 120n); // the request cost 120 of its 300
    expect((await second.hold('ten_a', '2026-11', [budget], 280n)).held).toBe(true); // 720 + 280 = 1000
    expect((await first.hold('ten_a', '2026-11', [budget], 1n)).held).toBe(false);
    // Another month has its own count.
    expect((await first.hold('ten_a', '2026-12', [tenantBudget(1_000n)], 1_000n)).held).toBe(true);
  });

  it('counts a budget set again from its seed, not from the count of its earlier setting', async () => {
    const { started } = processes(1);
    const holds = started[0]!;
    const first = tenantBudget(1_000n, async () => 0n, 1);
    expect((await holds.hold('ten_a', '2026-11', [first], 300n)).held).toBe(true);
    await holds.settle('ten_a', '2026-11', [first], 300n, 300n);
    // Removed, 500 spent without a budget (no holds, no settlements on the count), then set again: the ledger has 800.
    const again = tenantBudget(1_000n, async () => 800n, 2);
    expect((await holds.hold('ten_a', '2026-11', [again], 201n)).held).toBe(false); // 800 + 201 > 1000
    expect((await holds.hold('ten_a', '2026-11', [again], 200n)).held).toBe(true);
  });

  it('refuses when either of the tenant and key budgets would pass, and names it', async () => {
    const { started } = processes(1);
    const keyBudget: BudgetHoldScope = {
      scope: 'key',
      scopeId: 'key_1',
      version: 0,
      limit: 50n,
      seed: async () => 0n,
    };
    const outcome = await started[0]!.hold('ten_a', '2026-11', [tenantBudget(1_000n), keyBudget], 60n);
    expect(outcome).toEqual({ held: false, refusedBy: keyBudget });
    // Nothing was held on the tenant budget by the refused request.
    expect((await started[0]!.hold('ten_a', '2026-11', [tenantBudget(1_000n)], 1_000n)).held).toBe(true);
  });

  it('drops the holds of a process whose owner key is gone (it crashed), and keeps a live one’s', async () => {
    const { prefix, started } = processes(2);
    const [first, second] = started as [RedisBudgetHolds, RedisBudgetHolds];
    const budget = tenantBudget(1_000n);
    expect((await second.hold('ten_a', '2026-11', [budget], 400n)).held).toBe(true);
    // A crashed process's hold: its field is there, its owner key is not (expired with its heartbeat).
    await raw.hincrby(`${prefix}{ten_a}:tenant:ten_a:0:2026-11`, 'h:deadbeefdeadbeef', 600);
    expect((await first.hold('ten_a', '2026-11', [budget], 600n)).held).toBe(true); // 400 live + 600: fits
    expect(await raw.hexists(`${prefix}{ten_a}:tenant:ten_a:0:2026-11`, 'h:deadbeefdeadbeef')).toBe(0);
    expect((await first.hold('ten_a', '2026-11', [budget], 1n)).held).toBe(false); // the live 400 still counts
    // A process that closes cleanly leaves nothing held behind.
    await second.close();
    expect((await first.hold('ten_a', '2026-11', [budget], 400n)).held).toBe(true);
  });

  it('decides exactly past 2^53 nano-units, where doubles round (2^53 + 1 does not fit a limit of 2^53)', async () => {
    const { started } = processes(1);
    const budget = tenantBudget(2n ** 53n, async () => 2n ** 53n - 1n);
    expect((await started[0]!.hold('ten_a', '2026-11', [budget], 2n)).held).toBe(false);
    expect((await started[0]!.hold('ten_a', '2026-11', [budget], 1n)).held).toBe(true);
  });

  it('agrees with exact integer arithmetic over the 64-bit range: spend, two processes’ holds and the limit', async () => {
    const { started } = processes(2);
    const [first, second] = started as [RedisBudgetHolds, RedisBudgetHolds];
    const top = 2n ** 63n - 1n;
    let version = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.bigInt({ min: -(2n ** 62n), max: 2n ** 62n }),
        fc.bigInt({ min: 0n, max: 2n ** 60n }),
        fc.bigInt({ min: 0n, max: 2n ** 60n }),
        fc.bigInt({ min: -2n, max: 2n }),
        async (spend, firstAmount, secondAmount, slack) => {
          version += 1;
          const seed = async () => spend;
          expect((await first.hold('ten_a', '2026-11', [tenantBudget(top, seed, version)], firstAmount)).held).toBe(
            true,
          );
          const limit = spend + firstAmount + secondAmount + slack;
          const outcome = await second.hold('ten_a', '2026-11', [tenantBudget(limit, seed, version)], secondAmount);
          expect(outcome.held).toBe(slack >= 0n);
        },
      ),
      { numRuns: 200 },
    );
  });
});
