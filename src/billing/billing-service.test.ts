import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { InsufficientQuotaError } from '../errors/gateway-error.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import { BillingService, monthOf, nextMonthStart } from './billing-service.js';
import type { BudgetHolds } from './budget-holds.js';

describe('monthOf', () => {
  it('names the UTC month of an instant, at every boundary and in any order of calls', () => {
    const lastOfNovember = Date.UTC(2026, 10, 30, 23, 59, 59, 999);
    const firstOfDecember = lastOfNovember + 1;
    const newYear = Date.UTC(2027, 0, 1);
    // Repeated and out-of-order calls: the answer must not depend on the month asked before.
    const asked = [lastOfNovember, firstOfDecember, lastOfNovember, newYear - 1, newYear, firstOfDecember];
    expect(asked.map(monthOf)).toEqual(['2026-11', '2026-12', '2026-11', '2026-12', '2027-01', '2026-12']);
    expect(monthOf(Date.UTC(2024, 1, 29, 12))).toBe('2024-02');
  });

  it('ends a month where the next one starts', () => {
    expect(nextMonthStart(Date.UTC(2026, 11, 1))).toBe(Date.UTC(2027, 0, 1));
  });
});

describe('BillingService with shared budget holds (cluster mode)', () => {
  async function billingWith(budgetHolds: BudgetHolds) {
    const store = openSqliteStore(':memory:');
    await store.migrate();
    const tenant = await store.createTenant('shared-budgets');
    await store.addWalletTransaction({
      tenantId: tenant.id,
      kind: 'topup',
      amount: 1_000_000_000n,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
    await store.putBudget({
      scope: 'tenant',
      scopeId: tenant.id,
      tenantId: tenant.id,
      monthlyLimit: 1_000n,
      enforcement: 'hard',
      thresholds: [],
      webhookUrl: null,
      updatedAt: 0,
    });
    let fallbacks = 0;
    const billing = new BillingService(store, {
      priceBook: {
        currency: 'CNY',
        versions: [{ id: 'v', effective_from: '2020-01-01T00:00:00Z', models: { m: { input: '1', output: '1' } } }],
      },
      logger: pino({ level: 'silent' }),
      budgetHolds,
      onBudgetHoldFallback: () => {
        fallbacks += 1;
      },
    });
    await billing.init();
    return { billing, tenantId: tenant.id, fallbacks: () => fallbacks, close: () => store.close() };
  }

  it('holds on the shared store, settles there with the real spend, and refuses when it refuses', async () => {
    const calls: string[] = [];
    const shared: BudgetHolds = {
      hold: async (_tenant, month, scopes, amount) => {
        calls.push(`hold ${month} ${scopes.map((scope) => `${scope.scope}:${scope.limit}`).join()} ${amount}`);
        return amount > 500n ? { held: false, refusedBy: scopes[0]! } : { held: true };
      },
      settle: async (_tenant, _month, scopes, held, spent) => {
        calls.push(`settle ${scopes.map((scope) => scope.scope).join()} ${held} ${spent}`);
      },
      close: async () => undefined,
    };
    const { billing, tenantId, close } = await billingWith(shared);
    try {
      const at = Date.UTC(2026, 10, 15);
      const reservation = await billing.reserve(tenantId, 'key_1', 400n, at);
      expect(reservation?.sharedBudgets).toEqual([{ scope: 'tenant', scopeId: tenantId }]);
      billing.releaseBudgetHold(reservation!, 150n);
      await expect(billing.reserve(tenantId, 'key_1', 600n, at)).rejects.toBeInstanceOf(InsufficientQuotaError);
      expect(calls).toEqual(['hold 2026-11 tenant:1000 400', 'settle tenant 400 150', 'hold 2026-11 tenant:1000 600']);
    } finally {
      await close();
    }
  });

  it("falls back to this process's counts when the shared store fails, and counts the fallback", async () => {
    let attempts = 0;
    const failing: BudgetHolds = {
      hold: async () => {
        attempts += 1;
        throw new Error('connect ECONNREFUSED 127.0.0.1:6379');
      },
      settle: async () => undefined,
      close: async () => undefined,
    };
    const { billing, tenantId, fallbacks, close } = await billingWith(failing);
    try {
      const at = Date.UTC(2026, 10, 15);
      const first = await billing.reserve(tenantId, 'key_1', 700n, at);
      expect(first?.sharedBudgets).toBeUndefined();
      // This process's own hold of 700 still counts: 700 + 400 > 1000.
      await expect(billing.reserve(tenantId, 'key_1', 400n, at)).rejects.toBeInstanceOf(InsufficientQuotaError);
      expect(fallbacks()).toBe(2);
      // The second admission came within a second of the failure: it did not wait for the store again.
      expect(attempts).toBe(1);
    } finally {
      await close();
    }
  });
});
