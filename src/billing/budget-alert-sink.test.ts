import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { SettledSpendEvent } from './alerts/alert-service.js';
import { budgetAlertSink, type SpendChange } from './budget-alert-sink.js';

const change: SpendChange = {
  tenantId: 'ten_a',
  keyId: 'key_a',
  at: Date.UTC(2026, 10, 15),
  monthSpendBefore: { tenant: 10n, key: 5n },
  monthSpendAfter: { tenant: 30n, key: 25n },
};

/** A sink over recording fakes; `shared` is what `sharedMonthSpend` answers. */
function sinkWith(shared: () => Promise<SpendChange> | undefined, mayAlert = true) {
  const evaluated: SettledSpendEvent[] = [];
  const sharedCalls: unknown[] = [];
  const warnings: string[] = [];
  let done: () => void = () => {};
  const next = new Promise<void>((resolve) => {
    done = resolve;
  });
  const sink = budgetAlertSink({
    alerts: {
      mayAlert: () => mayAlert,
      budgetsFor: () => ({}),
      onSettled: async (event) => {
        evaluated.push(event);
        done();
        return [];
      },
    },
    billing: {
      currency: 'CNY',
      sharedMonthSpend: (spend, budgets) => {
        sharedCalls.push([spend, budgets]);
        return shared();
      },
    },
    logger: pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) }),
  });
  return { sink, evaluated, sharedCalls, warnings, next };
}

describe('budgetAlertSink', () => {
  it('evaluates the spend across processes when there are shared counts', async () => {
    const across: SpendChange = {
      ...change,
      monthSpendBefore: { tenant: 900n, key: 5n },
      monthSpendAfter: { tenant: 920n, key: 25n },
    };
    const { sink, evaluated, next } = sinkWith(() => Promise.resolve(across));
    sink.onSettled(change);
    await next;
    expect(evaluated).toEqual([{ ...across, currency: 'CNY' }]);
  });

  it("evaluates this process's spend without shared counts, and when they fail (with a warning)", async () => {
    const alone = sinkWith(() => undefined);
    alone.sink.onSettled(change);
    await alone.next;
    expect(alone.evaluated).toEqual([{ ...change, currency: 'CNY' }]);

    const failing = sinkWith(() => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')));
    failing.sink.onSettled(change);
    await failing.next;
    expect(failing.evaluated).toEqual([{ ...change, currency: 'CNY' }]);
    expect(failing.warnings.join('')).toContain('shared budget spend unavailable');
  });

  it('does nothing for a tenant and key without a budget', async () => {
    const { sink, evaluated, sharedCalls } = sinkWith(() => Promise.resolve(change), false);
    sink.onSettled(change);
    await new Promise((resolve) => setImmediate(resolve));
    expect(sharedCalls).toEqual([]);
    expect(evaluated).toEqual([]);
  });
});
