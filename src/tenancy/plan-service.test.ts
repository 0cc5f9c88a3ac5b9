import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Plan } from '../admission/limits.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite-store.js';
import { ConfigSubject, InProcessInvalidationBus } from './invalidation-bus.js';
import { type PlanDefaults, PlanService } from './plan-service.js';

const defaults: PlanDefaults = { limits: { rpm: 60 }, tiers: ['default'], weight: 1 };
const plan = (rpm: number): Plan => ({ limits: { rpm }, tiers: ['default'], weight: 1 });

describe('PlanService', () => {
  let store: SqliteStore;
  let bus: InProcessInvalidationBus;
  /** Two processes on one store and one bus, each with its own cache. */
  let here: PlanService;
  let there: PlanService;

  beforeEach(async () => {
    store = openSqliteStore(':memory:');
    await store.migrate();
    bus = new InProcessInvalidationBus();
    here = new PlanService(store, defaults, { bus });
    there = new PlanService(store, defaults, { bus });
  });

  afterEach(async () => {
    here.close();
    there.close();
    await store.close();
  });

  it("applies a plan and a key's limits set through one process in the others at once, not when their cache expires", async () => {
    expect((await there.planFor('ten_a')).limits).toEqual({ rpm: 60 });
    expect(await there.limitsForKey('key_a')).toBeUndefined();
    await here.setTenantPlan('ten_a', plan(5));
    await here.setKeyLimits('key_a', { rpm: 2 });
    expect((await there.planFor('ten_a')).limits).toEqual({ rpm: 5 });
    expect(await there.limitsForKey('key_a')).toEqual({ rpm: 2 });
    expect((await here.planFor('ten_a')).limits).toEqual({ rpm: 5 });
  });

  it('drops every cached plan when the bus announces that anything may have changed (a reconnected bus)', async () => {
    await there.planFor('ten_a');
    await there.limitsForKey('key_a');
    // Written by a process whose message never came.
    await store.putSetting('plan:tenant:ten_a', JSON.stringify(plan(7)));
    await store.putSetting('limits:key:key_a', JSON.stringify({ rpm: 3 }));
    expect((await there.planFor('ten_a')).limits).toEqual({ rpm: 60 });
    await bus.publish(ConfigSubject.all);
    expect((await there.planFor('ten_a')).limits).toEqual({ rpm: 7 });
    expect(await there.limitsForKey('key_a')).toEqual({ rpm: 3 });
  });

  it('keeps the last plan read while the store fails, and refuses with a retryable 503 without one', async () => {
    let failing = false;
    const outcomes: string[] = [];
    const flaky = new PlanService(
      {
        getSetting: async (name) => {
          if (failing) throw new Error('Connection terminated unexpectedly');
          return store.getSetting(name);
        },
        putSetting: (name, value) => store.putSetting(name, value),
      },
      defaults,
      // Every read goes to the store.
      { bus, cacheTtlMs: 0, onStoreFailure: (_error, outcome) => outcomes.push(outcome) },
    );
    try {
      await here.setTenantPlan('ten_a', plan(5));
      expect((await flaky.planFor('ten_a')).limits).toEqual({ rpm: 5 });
      failing = true;
      expect((await flaky.planFor('ten_a')).limits).toEqual({ rpm: 5 });
      await expect(flaky.limitsForKey('key_a')).rejects.toMatchObject({ status: 503, code: 'store_unavailable' });
      // A change heard meanwhile drops what it had: refused until the store answers again.
      await bus.publish('plan:tenant:ten_a');
      await expect(flaky.planFor('ten_a')).rejects.toMatchObject({ status: 503, code: 'store_unavailable' });
      expect(outcomes).toEqual(['stale', 'refused', 'refused']);
      failing = false;
      expect((await flaky.planFor('ten_a')).limits).toEqual({ rpm: 5 });
    } finally {
      flaky.close();
    }
  });

  /** Another process whose store reads answer what they read only once released; it counts its reads. */
  function heldReads(): { slow: PlanService; reads: () => number; release: () => void } {
    let reads = 0;
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = new PlanService(
      {
        getSetting: async (name) => {
          reads++;
          const value = await store.getSetting(name);
          await held;
          return value;
        },
        putSetting: (name, value) => store.putSetting(name, value),
      },
      defaults,
      { bus },
    );
    return { slow, reads: () => reads, release };
  }

  it('does not cache a read that was in flight when a change was heard', async () => {
    const { slow, release } = heldReads();
    try {
      const reading = slow.planFor('ten_a');
      await here.setTenantPlan('ten_a', plan(9));
      release();
      // It read the old plan before the change, and answers it, but does not keep it.
      expect((await reading).limits).toEqual({ rpm: 60 });
      expect((await slow.planFor('ten_a')).limits).toEqual({ rpm: 9 });
    } finally {
      slow.close();
    }
  });

  it('shares one store read among the requests that find a plan stale, but not across a change', async () => {
    const { slow, reads, release } = heldReads();
    try {
      const before = Array.from({ length: 50 }, () => slow.planFor('ten_a'));
      await new Promise((resolve) => setImmediate(resolve));
      expect(reads()).toBe(1);
      await here.setTenantPlan('ten_a', plan(9));
      const after = slow.planFor('ten_a');
      expect(reads()).toBe(2);
      release();
      for (const read of await Promise.all(before)) expect(read.limits).toEqual({ rpm: 60 });
      expect((await after).limits).toEqual({ rpm: 9 });
      expect((await slow.planFor('ten_a')).limits).toEqual({ rpm: 9 });
      expect(reads()).toBe(2);
    } finally {
      slow.close();
    }
  });
});
