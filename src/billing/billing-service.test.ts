import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { InsufficientQuotaError, UnavailableError } from '../errors/gateway-error.js';
import { settlementOf, topUpFixture, usageEventFixture } from '../store/ledger-fixtures.js';
import type { BudgetRecord } from '../store/ledger-store.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import { ConfigSubject, InProcessInvalidationBus } from '../tenancy/invalidation-bus.js';
import { BillingService, type BillingServiceOptions, monthOf, nextMonthStart } from './billing-service.js';
import type { SpendChange } from './budget-alert-sink.js';
import type { BudgetHolds } from './budget-holds.js';
import { ReservationLeases } from './reservation-leases.js';
import { RedisVolumePositionStore } from './volume-position.js';

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
    // Years below 100 are years, not 1900 + year.
    expect(new Date(nextMonthStart(Date.parse('0042-12-01T00:00:00Z'))).toISOString()).toBe('0043-01-01T00:00:00.000Z');
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
      expect(reservation?.sharedBudgets).toEqual([{ scope: 'tenant', scopeId: tenantId, version: 0 }]);
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

describe('BillingService.sharedMonthSpend (cluster mode budget alerts)', () => {
  const AT = Date.UTC(2026, 10, 15, 12);

  /** Two gateway processes' billing on one ledger, each with its own connection to the shared spend counters. */
  async function twoProcesses() {
    const store = openSqliteStore(':memory:');
    await store.migrate();
    const tenant = await store.createTenant('alerting');
    // 100 nano-units settled before the counters exist: the seed must bring them in.
    await store.settle([
      settlementOf(
        usageEventFixture({
          requestId: 'req_before',
          tenantId: tenant.id,
          keyId: 'key_a',
          receivedAt: AT,
          inputListAmount: 100n,
        }),
      ),
    ]);
    const prefix = `tgtest:spend:${process.pid}:${Date.now()}:`;
    const counters = [0, 1].map(() => new RedisVolumePositionStore({ url: 'redis://127.0.0.1:6379', prefix }));
    const [first, second] = counters.map(
      (volumePositions) =>
        new BillingService(store, { priceBook: undefined, logger: pino({ level: 'silent' }), volumePositions }),
    ) as [BillingService, BillingService];
    const budget = (scope: 'tenant' | 'key', scopeId: string, updatedAt = 0): BudgetRecord => ({
      scope,
      scopeId,
      tenantId: tenant.id,
      monthlyLimit: 1_000n,
      enforcement: 'soft',
      thresholds: [50, 100],
      webhookUrl: null,
      updatedAt,
    });
    const change = (amount: bigint): SpendChange => ({
      tenantId: tenant.id,
      keyId: 'key_a',
      at: AT,
      // This process's own view, which the shared counts must replace.
      monthSpendBefore: { tenant: 7n, key: 7n },
      monthSpendAfter: { tenant: 7n + amount, key: 7n + amount },
    });
    const close = async () => {
      await Promise.all(counters.map((counter) => counter.close()));
      await store.close();
    };
    return { first, second, budget, change, tenantId: tenant.id, close };
  }

  it("counts every process's spend, seeded from the ledger, per budget", async () => {
    const { first, second, budget, change, tenantId, close } = await twoProcesses();
    try {
      const budgets = { tenant: budget('tenant', tenantId), key: budget('key', 'key_a') };
      const one = await first.sharedMonthSpend(change(300n), budgets);
      expect(one?.monthSpendBefore).toEqual({ tenant: 100n, key: 100n });
      expect(one?.monthSpendAfter).toEqual({ tenant: 400n, key: 400n });
      const two = await second.sharedMonthSpend(change(300n), budgets);
      expect(two?.monthSpendBefore).toEqual({ tenant: 400n, key: 400n });
      expect(two?.monthSpendAfter).toEqual({ tenant: 700n, key: 700n });
      // Only the tenant has a budget: the key keeps this process's own figures.
      const tenantOnly = await first.sharedMonthSpend(change(10n), { tenant: budgets.tenant });
      expect(tenantOnly?.monthSpendBefore).toEqual({ tenant: 700n, key: 7n });
      expect(tenantOnly?.monthSpendAfter).toEqual({ tenant: 710n, key: 17n });
    } finally {
      await close();
    }
  });

  it('hands 100 concurrent settlements from two processes adjacent, non-overlapping spans', async () => {
    const { first, second, budget, change, tenantId, close } = await twoProcesses();
    try {
      const budgets = { tenant: budget('tenant', tenantId) };
      const amounts = Array.from({ length: 100 }, (_, index) => BigInt(1 + (index % 9)));
      const results = await Promise.all(
        amounts.map((amount, index) => (index % 2 === 0 ? first : second).sharedMonthSpend(change(amount), budgets)),
      );
      const spans = results
        .map((result) => [result!.monthSpendBefore.tenant, result!.monthSpendAfter.tenant] as const)
        .sort((a, b) => (a[0] < b[0] ? -1 : 1));
      expect(spans[0]![0]).toBe(100n);
      for (let index = 1; index < spans.length; index++) expect(spans[index]![0]).toBe(spans[index - 1]![1]);
      expect(spans.at(-1)![1]).toBe(100n + amounts.reduce((sum, amount) => sum + amount, 0n));
    } finally {
      await close();
    }
  });

  it('starts a budget set again from the ledger, and answers undefined when there is nothing to share', async () => {
    const { first, budget, change, tenantId, close } = await twoProcesses();
    try {
      await first.sharedMonthSpend(change(500n), { tenant: budget('tenant', tenantId, 1) });
      // The same budget, changed later (a new `updatedAt`): a new counter, from the ledger's 100 again.
      const renewed = await first.sharedMonthSpend(change(5n), { tenant: budget('tenant', tenantId, 2) });
      expect(renewed?.monthSpendBefore.tenant).toBe(100n);
      expect(first.sharedMonthSpend(change(5n), {})).toBeUndefined();
      const aloneStore = openSqliteStore(':memory:');
      const alone = new BillingService(aloneStore, { priceBook: undefined, logger: pino({ level: 'silent' }) });
      expect(alone.sharedMonthSpend(change(5n), { tenant: budget('tenant', tenantId) })).toBeUndefined();
      await aloneStore.close();
    } finally {
      await close();
    }
  });
});

describe('BillingService repricing', () => {
  it('rates and quotes requests received from a new version on at its prices and discounts, earlier ones as before', async () => {
    const store = openSqliteStore(':memory:');
    await store.migrate();
    const now = Date.parse('2026-03-10T12:00:00Z');
    const billing = new BillingService(store, {
      priceBook: {
        currency: 'CNY',
        versions: [
          {
            id: 'v1',
            effective_from: '2026-01-01T00:00:00Z',
            models: { m: { input: '0.8', output: '2' } },
            modifiers: { batch: { discount: '0.5' } },
            contracts: { ten_c: { discount: '0.2' } },
          },
        ],
      },
      logger: pino({ level: 'silent' }),
      clock: new VirtualClock(now),
    });
    try {
      await billing.init();
      const million = { input: { total: 1_000_000, cached: 0 }, output: { total: 1_000_000, reasoning: 0 } };
      const rate = (receivedAt: number, tenantId: string) =>
        billing.rate({
          requestId: `${tenantId}-${receivedAt}`,
          tenantId,
          keyId: null,
          model: 'm',
          deployment: null,
          receivedAt,
          batch: true,
          usage: { ...million, estimated: false },
        });
      const quote = (receivedAt: number) =>
        billing.quote({
          tenantId: 't',
          model: 'm',
          receivedAt,
          promptTokens: 1_000_000,
          maxOutputTokens: 1_000_000,
          batch: true,
        });
      // Rated and quoted under v1 first, so whatever rating keeps per version exists before the change.
      expect(rate(now, 't')?.amount).toBe(1_400_000_000n); // (0.8 + 2) × 50%
      expect(rate(now, 'ten_c')?.amount).toBe(1_120_000_000n); // then 20% off
      expect(quote(now)).toBe(1_400_000_000n);

      const from = now + 3_600_000;
      await billing.addPriceVersion({
        id: 'v2',
        effective_from: new Date(from).toISOString(),
        models: { m: { input: '1', output: '3' } },
        modifiers: { batch: { discount: '0.25' } },
        contracts: { ten_c: { discount: '0.1' } },
      });
      expect(rate(from - 1, 't')).toMatchObject({ priceVersion: 'v1', amount: 1_400_000_000n });
      expect(rate(from - 1, 'ten_c')?.amount).toBe(1_120_000_000n);
      expect(quote(from - 1)).toBe(1_400_000_000n);
      const repriced = rate(from, 't');
      expect(repriced).toMatchObject({ priceVersion: 'v2', amount: 3_000_000_000n, batchDiscount: -1_000_000_000n });
      expect(JSON.parse(repriced!.detail).modifiers).toMatchObject([{ kind: 'batch', discount: '0.25' }]);
      expect(rate(from, 'ten_c')).toMatchObject({ amount: 2_700_000_000n, contractDiscount: -300_000_000n });
      expect(quote(from)).toBe(3_000_000_000n);
    } finally {
      await store.close();
    }
  });
});

/**
 * A billing service on a new SQLite store with a tenant holding 1,000,000 (and a hard tenant budget of
 * `monthlyLimit`, if given), reserving under the owner `owner-a`.
 */
async function ownedBilling(monthlyLimit?: bigint, options: Partial<BillingServiceOptions> = {}) {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const tenantId = (await store.createTenant('owned')).id;
  await store.addWalletTransaction(topUpFixture(tenantId, 1_000_000n));
  if (monthlyLimit !== undefined) {
    await store.putBudget({
      scope: 'tenant',
      scopeId: tenantId,
      tenantId,
      monthlyLimit,
      enforcement: 'hard',
      thresholds: [],
      webhookUrl: null,
      updatedAt: 0,
    });
  }
  const billing = new BillingService(store, {
    priceBook: {
      currency: 'CNY',
      versions: [{ id: 'v', effective_from: '2020-01-01T00:00:00Z', models: { m: { input: '1', output: '1' } } }],
    },
    logger: pino({ level: 'silent' }),
    ...options,
  });
  await billing.init();
  billing.reservationOwner = 'owner-a';
  return { store, tenantId, billing };
}

describe('BillingService reserving under an owner', () => {
  it('gives back what a settlement the store skipped as a duplicate (a batch line run again) took from the lease', async () => {
    const { store, tenantId, billing } = await ownedBilling();
    try {
      const leases = new ReservationLeases(store, () => billing.reservationOwner, {
        logger: pino({ level: 'silent' }),
      });
      billing.leases = leases;
      const event = usageEventFixture({ requestId: 'req_line_0', tenantId, amount: 30n });
      const settle = async () => {
        const reservation = (await billing.reserve(tenantId, 'key', 100n, Date.now()))!;
        const released = billing.settledReservation(reservation, event.amount);
        await store.settle([settlementOf(event, { reservation: { tenantId, amount: released, owner: 'owner-a' } })]);
        return reservation;
      };
      await settle();
      // The line runs again under the same request id: the store skips its settlement, so what the lease counted as
      // spent with it is still held, until the runner releases the reservation.
      const again = await settle();
      await billing.release(again);
      const wallet = (await store.getWallet(tenantId))!;
      expect(wallet.reserved).toBe(leases.lease(tenantId).leased);
      await leases.stop();
      expect(await store.getWallet(tenantId)).toMatchObject({ reserved: 0n, balance: 1_000_000n - event.amount });
    } finally {
      await store.close();
    }
  });

  it('refuses with a retryable 503 when the store fails to reserve, and keeps no budget hold for it', async () => {
    // A hard budget covering exactly one request of 100.
    let refusals = 0;
    const { store, tenantId, billing } = await ownedBilling(100n, {
      onStoreUnavailable: () => {
        refusals += 1;
      },
    });
    try {
      let failures = 0;
      billing.onReservationStoreFailure = () => {
        failures += 1;
      };
      vi.spyOn(store, 'reserve').mockRejectedValueOnce(new Error('Connection terminated unexpectedly'));
      const refused = billing.reserve(tenantId, 'key', 100n, Date.now());
      await expect(refused).rejects.toBeInstanceOf(UnavailableError);
      await expect(refused).rejects.toMatchObject({ status: 503, code: 'billing_store_unavailable' });
      // Counted (a metric), and the owner's hold is in doubt: reported, for the keeper to retire the owner.
      expect(refusals).toBe(1);
      expect(failures).toBe(1);
      // The refused request holds nothing of the budget: the next one fits.
      const reservation = await billing.reserve(tenantId, 'key', 100n, Date.now());
      expect(reservation?.amount).toBe(100n);
      expect((await store.getWallet(tenantId))?.reserved).toBe(100n);
    } finally {
      await store.close();
    }
  });
});

describe('BillingService counting the requests in flight under each owner', () => {
  for (const leased of [false, true]) {
    it(`counts a reservation until it is settled or released, once however often it is ended${leased ? ' (leases)' : ''}`, async () => {
      const { store, tenantId, billing } = await ownedBilling();
      const leases = leased
        ? new ReservationLeases(store, () => billing.reservationOwner, { logger: pino({ level: 'silent' }) })
        : undefined;
      billing.leases = leases;
      try {
        const first = (await billing.reserve(tenantId, 'key', 100n, Date.now()))!;
        const second = (await billing.reserve(tenantId, 'key', 100n, Date.now()))!;
        expect(billing.reservationsInFlight('owner-a')).toBe(2);
        // The keeper retires the owner: new reservations go under the next one, the old ones stay counted.
        billing.reservationOwner = 'owner-b';
        const third = (await billing.reserve(tenantId, 'key', 100n, Date.now()))!;
        expect([billing.reservationsInFlight('owner-a'), billing.reservationsInFlight('owner-b')]).toEqual([2, 1]);
        billing.settledReservation(first, 40n);
        await billing.release(second);
        expect(billing.reservationsInFlight('owner-a')).toBe(0);
        // Ended again (a duplicate settlement's release): not counted twice.
        await billing.release(first);
        billing.settledReservation(second, 0n);
        expect([billing.reservationsInFlight('owner-a'), billing.reservationsInFlight('owner-b')]).toEqual([0, 1]);
        await billing.release(third);
        expect(billing.reservationsInFlight('owner-b')).toBe(0);
      } finally {
        await leases?.stop();
        await store.close();
      }
    });
  }
});

describe('BillingService on the invalidation bus', () => {
  it('reloads prices and budgets when the bus announces that anything may have changed (a reconnected bus)', async () => {
    const store = openSqliteStore(':memory:');
    await store.migrate();
    const bus = new InProcessInvalidationBus();
    const billing = new BillingService(store, {
      priceBook: {
        currency: 'CNY',
        versions: [{ id: 'v1', effective_from: '2020-01-01T00:00:00Z', models: { m: { input: '1', output: '1' } } }],
      },
      logger: pino({ level: 'silent' }),
      bus,
    });
    try {
      await billing.init();
      const reloaded: BudgetRecord[][] = [];
      billing.onBudgetsReloaded = (budgets) => reloaded.push([...budgets]);
      const tenant = await store.createTenant('missed-changes');
      // Written by another process while this one's bus was not listening: no message came for them.
      await store.insertPriceVersion({
        id: 'v2',
        effectiveFrom: Date.UTC(2030, 0, 1),
        document: JSON.stringify({
          id: 'v2',
          effective_from: '2030-01-01T00:00:00Z',
          models: { m: { input: '2', output: '2' } },
        }),
      });
      await store.putBudget({
        scope: 'tenant',
        scopeId: tenant.id,
        tenantId: tenant.id,
        monthlyLimit: 5n,
        enforcement: 'hard',
        thresholds: [],
        webhookUrl: null,
        updatedAt: 0,
      });
      expect(billing.priceBook?.versions.map((version) => version.id)).toEqual(['v1']);
      await bus.publish(ConfigSubject.all);
      await vi.waitFor(() => {
        expect(billing.priceBook?.versions.map((version) => version.id)).toEqual(['v1', 'v2']);
        expect(reloaded.at(-1)?.map((budget) => budget.scopeId)).toEqual([tenant.id]);
      });
    } finally {
      billing.stop();
      await store.close();
    }
  });
});
