import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { FifoScheduler } from './fifo-scheduler.js';
import { shedProbability } from './load-shedding.js';
import type { Scheduler, SchedulerJob, SchedulerRefusal, SchedulerTicket, SubmitResult } from './scheduler.js';
import { createSeededRandom } from './seeded-random.js';
import type { ServiceClass } from './service-class.js';
import { TieredScheduler, type TieredSchedulerOptions } from './tiered-scheduler.js';

const never = { start: 1e9, full: 2e9, exponent: 1 };

let jobCounter = 0;
function job(tenantId: string, serviceClass: ServiceClass, extra: Partial<SchedulerJob> = {}): SchedulerJob {
  return { id: `job-${jobCounter++}`, tenantId, serviceClass, inputTokens: 100, maxOutputTokens: 100, ...extra };
}

interface Dispatch {
  tenantId: string;
  serviceClass: ServiceClass;
  submittedAt: number;
  dispatchedAt: number;
  tokens: number;
}

/**
 * Drives a scheduler the way the gateway would: a dispatched job runs for `holdMs` of virtual time, then completes
 * with `actualOutput` output tokens (default: its max).
 */
function createDriver(scheduler: Scheduler, clock: VirtualClock) {
  const dispatches: Dispatch[] = [];
  const refusals: SchedulerRefusal[] = [];
  const run = (ticket: SchedulerTicket, holdMs: number, actualOutput: number | undefined) => {
    const { job: submitted } = ticket;
    dispatches.push({
      tenantId: submitted.tenantId,
      serviceClass: submitted.serviceClass,
      submittedAt: ticket.submittedAt,
      dispatchedAt: clock.now(),
      tokens: submitted.inputTokens + (actualOutput ?? submitted.maxOutputTokens),
    });
    if (!Number.isFinite(holdMs)) return;
    clock.setTimer(holdMs, () => {
      scheduler.complete(ticket, {
        inputTokens: submitted.inputTokens,
        outputTokens: actualOutput ?? submitted.maxOutputTokens,
      });
    });
  };
  const submit = (submitted: SchedulerJob, holdMs: number, actualOutput?: number): SubmitResult => {
    const result = scheduler.submit(submitted, { onDispatch: (ticket) => run(ticket, holdMs, actualOutput) });
    if (result.outcome === 'dispatched') run(result.ticket, holdMs, actualOutput);
    if (result.outcome === 'refused') refusals.push(result.refusal);
    return result;
  };
  return { dispatches, refusals, submit };
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function tiered(options: Partial<TieredSchedulerOptions> & Pick<TieredSchedulerOptions, 'capacity'>) {
  const clock = new VirtualClock();
  const scheduler = new TieredScheduler({ clock, ...options });
  return { clock, scheduler, driver: createDriver(scheduler, clock) };
}

describe('TieredScheduler: classes and headroom', () => {
  it('keeps the last 15% of sequences from batch, 10% from flex, 5% from default, and lets priority take all', () => {
    const { scheduler, driver } = tiered({ capacity: { sequences: 20, tokens: 1_000_000 } });
    const batch = Array.from({ length: 20 }, () => driver.submit(job('b', 'batch'), Number.POSITIVE_INFINITY));
    expect(batch.filter((result) => result.outcome === 'dispatched')).toHaveLength(17); // 0.85 × 20
    const flex = Array.from({ length: 3 }, () => driver.submit(job('b', 'flex'), Number.POSITIVE_INFINITY));
    expect(flex.map((result) => result.outcome)).toEqual(['dispatched', 'queued', 'queued']); // 0.90 × 20 = 18

    const defaults = Array.from({ length: 3 }, () => driver.submit(job('c', 'default'), Number.POSITIVE_INFINITY));
    expect(defaults.map((result) => result.outcome)).toEqual(['dispatched', 'queued', 'queued']); // 0.95 × 20 = 19
    expect(driver.submit(job('a', 'priority'), Number.POSITIVE_INFINITY).outcome).toBe('dispatched');
    expect(scheduler.stats().inFlight.sequences).toBe(20);
    expect(driver.submit(job('a', 'priority'), Number.POSITIVE_INFINITY).outcome).toBe('queued');
    expect(scheduler.stats().classes).toMatchObject({
      priority: { running: 1, queued: 1 },
      default: { running: 1, queued: 2 },
      flex: { running: 1, queued: 2 },
      batch: { running: 17, queued: 3 },
    });
  });

  it('lists the ids of the queued jobs, not the running ones, and forgets a cancelled one', () => {
    const { scheduler } = tiered({ capacity: { sequences: 2, tokens: 1_000_000 } });
    const results = ['a', 'b', 'c', 'd'].map((id) => scheduler.submit(job('t', 'default', { id })));
    expect(results.map((result) => result.outcome)).toEqual(['dispatched', 'queued', 'queued', 'queued']);
    expect(scheduler.queuedJobIds()).toEqual(new Set(['b', 'c', 'd']));
    const queued = results[2]!;
    if (queued.outcome !== 'queued') throw new Error('expected a queued ticket');
    expect(scheduler.cancel(queued.ticket)).toBe(true);
    expect(scheduler.queuedJobIds()).toEqual(new Set(['b', 'd']));
  });

  it('applies the ceiling to tokens in flight too', () => {
    const { scheduler, driver } = tiered({ capacity: { sequences: 100, tokens: 1_000 } });
    const outcomes = Array.from(
      { length: 9 },
      () =>
        driver.submit(job('b', 'batch', { inputTokens: 50, maxOutputTokens: 50 }), Number.POSITIVE_INFINITY).outcome,
    );
    // 8 × 100 = 800 ≤ 850; a ninth would make 900 > 850.
    expect(outcomes.filter((outcome) => outcome === 'dispatched')).toHaveLength(8);
    const big = driver.submit(job('a', 'priority', { inputTokens: 150, maxOutputTokens: 50 }), 10);
    expect(big.outcome).toBe('dispatched');
    expect(scheduler.stats().inFlight.tokens).toBe(1_000);
    // Can never fit flex's 90% of 1000 tokens.
    const huge = driver.submit(job('b', 'flex', { inputTokens: 850, maxOutputTokens: 100 }), 10);
    expect(huge).toMatchObject({ outcome: 'refused', refusal: { reason: 'too_large', retryAfterMs: 0 } });
  });

  it('serves queued classes in priority order whatever their arrival order', () => {
    const { scheduler, clock, driver } = tiered({
      capacity: { sequences: 20, tokens: 1_000_000 },
      random: () => 0.999_999,
    });
    const running = Array.from({ length: 20 }, () => driver.submit(job('a', 'priority'), Number.POSITIVE_INFINITY));
    const order: ServiceClass[] = ['batch', 'flex', 'default', 'priority', 'batch', 'flex', 'default', 'priority'];
    for (const serviceClass of order) {
      expect(driver.submit(job(`t-${serviceClass}`, serviceClass), Number.POSITIVE_INFINITY).outcome).toBe('queued');
    }
    for (const result of running) {
      if (result.outcome !== 'dispatched') throw new Error('expected a dispatch');
      clock.advance(10);
      scheduler.complete(result.ticket, { inputTokens: 100, outputTokens: 100 });
    }
    const queued = driver.dispatches.slice(20).map((dispatch) => dispatch.serviceClass);
    expect(queued).toEqual(['priority', 'priority', 'default', 'default', 'flex', 'flex', 'batch', 'batch']);
  });

  it('refines capacity at run time and never pre-empts after a cut', () => {
    const { scheduler, driver } = tiered({ capacity: { sequences: 4, tokens: 1_000_000 } });
    const results = Array.from({ length: 6 }, () => driver.submit(job('a', 'priority'), Number.POSITIVE_INFINITY));
    expect(results.map((result) => result.outcome)).toEqual([
      'dispatched',
      'dispatched',
      'dispatched',
      'dispatched',
      'queued',
      'queued',
    ]);
    scheduler.setCapacity({ sequences: 5 });
    expect(scheduler.stats().inFlight.sequences).toBe(5);
    scheduler.setCapacity({ sequences: 3 });
    const first = results[0]!;
    if (first.outcome !== 'dispatched') throw new Error('expected a dispatch');
    scheduler.complete(first.ticket, { inputTokens: 100, outputTokens: 100 });
    // 4 running > 3: the queued job keeps waiting.
    expect(scheduler.stats()).toMatchObject({ inFlight: { sequences: 4 }, classes: { priority: { queued: 1 } } });
  });
});

describe('TieredScheduler: fair share inside a class', () => {
  // The whole pool for default, no wait limit, no shedding: these tests look at fairness alone.
  const noLimits = { default: { maxQueueWaitMs: Number.POSITIVE_INFINITY, shedding: never, admissionCeiling: 1 } };

  function floodAndLight(scheduler: Scheduler, clock: VirtualClock, untilMs: number) {
    const driver = createDriver(scheduler, clock);
    // 400 jobs of 300 weighted tokens at once; each runs 1.0–1.4 s on one of 8 slots (≈ 60 s of work).
    for (let index = 0; index < 400; index++) driver.submit(job('flood', 'default'), 1_000 + (index % 5) * 100);
    // The light tenant: one job every 500 ms for 30 s, ≈ 2.4 slots of 8, well below its half.
    for (let index = 0; index < 60; index++) {
      clock.setTimer(250 + index * 500, () => driver.submit(job('light', 'default'), 1_200));
    }
    clock.advanceTo(untilMs);
    const light = driver.dispatches.filter((dispatch) => dispatch.tenantId === 'light');
    return { driver, light, waits: light.map((dispatch) => dispatch.dispatchedAt - dispatch.submittedAt) };
  }

  it("leaves a light tenant's share and queue wait unaffected by a flooding one (FIFO does not)", () => {
    const clock = new VirtualClock();
    const scheduler = new TieredScheduler({ clock, capacity: { sequences: 8, tokens: 1_000_000 }, classes: noLimits });
    const { driver, light, waits } = floodAndLight(scheduler, clock, 30_500);
    expect(light).toHaveLength(60);
    expect(light.reduce((sum, dispatch) => sum + dispatch.tokens, 0)).toBe(60 * 200);
    // At most the next slot or two to free up: with 8 slots of ≈1.2 s that is a few hundred ms.
    expect(quantile(waits, 0.5)).toBeLessThanOrEqual(300);
    expect(Math.max(...waits)).toBeLessThanOrEqual(1_400);
    // The flood keeps the rest of the pool busy: 8 slots × 30 s / ≈1.2 s per job, minus the light tenant's jobs.
    const flood = driver.dispatches.filter(
      (dispatch) => dispatch.tenantId === 'flood' && dispatch.dispatchedAt <= 30_000,
    );
    expect(flood.length).toBeGreaterThan(8 * (30_000 / 1_400) - 60);

    const fifoClock = new VirtualClock();
    const fifo = floodAndLight(
      new FifoScheduler({ clock: fifoClock, capacity: { sequences: 8, tokens: 1_000_000 } }),
      fifoClock,
      120_000,
    );
    expect(fifo.light).toHaveLength(60);
    expect(quantile(fifo.waits, 0.5)).toBeGreaterThan(10_000);
  });

  it('lifts a tenant returning from idle to the smallest backlogged counter, so it banks no credit', () => {
    const { scheduler, clock, driver } = tiered({ capacity: { sequences: 2, tokens: 1_000_000 }, classes: noLimits });
    for (let index = 0; index < 10; index++) driver.submit(job('a', 'default'), 100);
    for (let index = 0; index < 400; index++) driver.submit(job('b', 'default'), 100);
    clock.advanceTo(5_000); // a's 10 jobs are long done; b has been served alone for seconds.
    const counters = scheduler.fairShareCounters('default');
    expect(counters.get('b')! - counters.get('a')!).toBeGreaterThan(50 * 300);

    const before = driver.dispatches.length;
    for (let index = 0; index < 40; index++) driver.submit(job('a', 'default'), 100);
    expect(scheduler.fairShareCounters('default').get('a')).toBe(scheduler.fairShareCounters('default').get('b'));
    clock.advanceTo(6_000); // 20 dispatches
    const next = driver.dispatches.slice(before, before + 20);
    expect(next).toHaveLength(20);
    expect(next.filter((dispatch) => dispatch.tenantId === 'a')).toHaveLength(10);
  });

  it('shares tokens in proportion to plan weights under contention', () => {
    const { clock, driver } = tiered({ capacity: { sequences: 3, tokens: 1_000_000 }, classes: noLimits });
    for (let index = 0; index < 300; index++) {
      driver.submit(job('heavy', 'default', { weight: 2 }), 100);
      driver.submit(job('normal', 'default', { weight: 1 }), 100);
    }
    clock.advanceTo(5_000); // 150 dispatches, both tenants still backlogged
    const served = (tenantId: string) =>
      driver.dispatches.filter((dispatch) => dispatch.tenantId === tenantId).reduce((sum, d) => sum + d.tokens, 0);
    expect(served('heavy') / served('normal')).toBeGreaterThan(1.9);
    expect(served('heavy') / served('normal')).toBeLessThan(2.1);
  });

  it('corrects the estimate charged at dispatch with the actual usage', () => {
    const { clock, driver } = tiered({ capacity: { sequences: 3, tokens: 1_000_000 }, classes: noLimits });
    for (let index = 0; index < 300; index++) {
      driver.submit(job('terse', 'default'), 100, 10); // reserves 100 output tokens, uses 10
      driver.submit(job('verbose', 'default'), 100, 100);
    }
    clock.advanceTo(10_000);
    const count = (tenantId: string) => driver.dispatches.filter((dispatch) => dispatch.tenantId === tenantId).length;
    // Equal charged cost per tenant: terse jobs cost 100 + 2 × 10, verbose 100 + 2 × 100, so 2.5 : 1 in jobs.
    expect(count('terse') / count('verbose')).toBeGreaterThan(2.3);
    expect(count('terse') / count('verbose')).toBeLessThan(2.7);
  });
});

describe('TieredScheduler: queue-wait limits', () => {
  it('refuses at once a job whose predicted wait exceeds its class limit, with a usable Retry-After', () => {
    const { scheduler, clock, driver } = tiered({
      capacity: { sequences: 4, tokens: 1_000_000 },
      initialHoldMs: 1_100,
      classes: { default: { shedding: never } },
    });
    for (let index = 0; index < 3; index++) driver.submit(job('b', 'default'), 1_000); // 0.95 × 4 → 3 slots
    // Drain rate of default when full: 0.95 × 4 slots / 1100 ms; the k-th queued job waits (k + 1) / rate.
    const msPerJob = 1_100 / (0.95 * 4);
    let queued = 0;
    let refused: SubmitResult | undefined;
    while (refused === undefined) {
      expect(scheduler.predictWaitMs('default', 'b')).toBeCloseTo((queued + 1) * msPerJob, 6);
      const result = driver.submit(job('b', 'default'), 1_000);
      if (result.outcome === 'refused') refused = result;
      else queued++;
    }
    expect(queued).toBe(Math.floor(5_000 / msPerJob));
    expect(clock.now()).toBe(0);
    expect(refused).toMatchObject({ outcome: 'refused', refusal: { reason: 'queue_wait', serviceClass: 'default' } });
    if (refused.outcome !== 'refused') throw new Error('unreachable');
    expect(refused.refusal.predictedWaitMs).toBeCloseTo((queued + 1) * msPerJob, 6);
    // predicted − limit is ≈210 ms, raised to the 1 s floor.
    expect(refused.refusal.retryAfterMs).toBe(1_000);
    expect(scheduler.stats().classes.default.refused.queue_wait).toBe(1);

    // A light tenant is not refused behind the flood: fair queuing puts it near the front.
    expect(driver.submit(job('light', 'default'), 1_000).outcome).toBe('queued');

    // Retrying after Retry-After finds the backlog drained enough.
    clock.advance(refused.refusal.retryAfterMs);
    expect(driver.submit(job('b', 'default'), 1_000).outcome).toBe('queued');
  });

  it('sets retryAfterMs to predicted wait − limit when that exceeds the floor', () => {
    const { driver } = tiered({
      capacity: { sequences: 4, tokens: 1_000_000 },
      initialHoldMs: 1_000,
      minRetryAfterMs: 0,
      classes: { priority: { maxQueueWaitMs: 60_000, shedding: never }, flex: { shedding: never } },
    });
    for (let index = 0; index < 4; index++) driver.submit(job('a', 'priority'), 1_000);
    for (let index = 0; index < 30; index++) driver.submit(job('a', 'priority'), 1_000);
    const result = driver.submit(job('b', 'flex'), 1_000);
    // 30 priority jobs ahead; flex drains 0.85 × 4 / 1000 ms less priority's 4 dispatches per 10 s.
    const rate = (0.85 * 4) / 1_000 - 4 / 10_000;
    expect(result).toMatchObject({ outcome: 'queued' });
    const limited = tiered({
      capacity: { sequences: 4, tokens: 1_000_000 },
      initialHoldMs: 1_000,
      minRetryAfterMs: 0,
      classes: { priority: { maxQueueWaitMs: 60_000, shedding: never }, default: { shedding: never } },
    });
    for (let index = 0; index < 34; index++) limited.driver.submit(job('a', 'priority'), 1_000);
    const refused = limited.driver.submit(job('b', 'default'), 1_000);
    const defaultRate = (0.95 * 4) / 1_000 - 4 / 10_000;
    const predicted = 31 / defaultRate;
    expect(refused).toMatchObject({ outcome: 'refused', refusal: { reason: 'queue_wait' } });
    if (refused.outcome !== 'refused') throw new Error('unreachable');
    expect(refused.refusal.predictedWaitMs).toBeCloseTo(predicted, 6);
    expect(refused.refusal.retryAfterMs).toBe(Math.ceil(predicted - 5_000));
    expect(31 / rate).toBeLessThan(60_000); // the flex job above was rightly queued
  });

  it('removes a queued job that overstays its limit (when the prediction was wrong) and refuses it', async () => {
    const { scheduler, clock, driver } = tiered({
      capacity: { sequences: 1, tokens: 1_000_000 },
      initialHoldMs: 1,
      classes: { batch: { shedding: never } },
    });
    driver.submit(job('a', 'priority'), Number.POSITIVE_INFINITY); // never completes
    const refusals: SchedulerRefusal[] = [];
    const result = scheduler.submit(job('a', 'priority'), { onRefuse: (_ticket, refusal) => refusals.push(refusal) });
    expect(result.outcome).toBe('queued');
    if (result.outcome !== 'queued') throw new Error('unreachable');
    const settled = result.ticket.settled();
    const batch = driver.submit(job('b', 'batch'), 10);
    clock.advance(999);
    expect(result.ticket.state).toBe('queued');
    clock.advance(1);
    expect(result.ticket.state).toBe('refused');
    expect(refusals).toMatchObject([{ reason: 'overstay', serviceClass: 'priority' }]);
    expect(refusals[0]!.retryAfterMs).toBeGreaterThanOrEqual(1_000);
    await expect(settled).resolves.toMatchObject({ outcome: 'refused', refusal: { reason: 'overstay' } });
    expect(scheduler.stats().classes.priority).toMatchObject({ queued: 0, refused: { overstay: 1 } });
    // Batch has no limit: still waiting a day later.
    clock.advance(86_400_000);
    expect(batch.outcome === 'queued' && batch.ticket.state).toBe('queued');
  });
});

describe('TieredScheduler: load shedding', () => {
  it('sheds flex and batch first, then default, then priority as saturation rises', () => {
    const clock = new VirtualClock();
    const scheduler = new TieredScheduler({
      clock,
      capacity: { sequences: 100, tokens: 1_000_000_000 },
      random: createSeededRandom(42),
      classes: {
        priority: { maxQueueWaitMs: Number.POSITIVE_INFINITY },
        default: { maxQueueWaitMs: Number.POSITIVE_INFINITY },
        flex: { maxQueueWaitMs: Number.POSITIVE_INFINITY },
      },
    });
    for (let index = 0; index < 100; index++) scheduler.submit(job('base', 'priority'));
    const probes = 2_000;
    const shedRate = (serviceClass: ServiceClass) => {
      let shed = 0;
      for (let index = 0; index < probes; index++) {
        const result = scheduler.submit(job('probe', serviceClass));
        if (result.outcome === 'refused') {
          expect(result.refusal.reason).toBe('shed');
          expect(result.refusal.retryAfterMs).toBeGreaterThanOrEqual(1_000);
          shed++;
        } else {
          scheduler.cancel(result.ticket);
        }
      }
      return shed / probes;
    };
    for (const backlog of [0, 25, 50, 75, 100, 150, 200, 250]) {
      while (scheduler.stats().classes.priority.queued < backlog) scheduler.submit(job('base', 'priority'));
      const saturation = (100 + backlog) / 100;
      const rates = {
        batch: shedRate('batch'),
        flex: shedRate('flex'),
        default: shedRate('default'),
        priority: shedRate('priority'),
      };
      // The documented curves, p = ((s − start) / (full − start))^3 clamped to [0, 1].
      const expected = {
        batch: Math.min(1, Math.max(0, saturation - 1) ** 3),
        flex: Math.min(1, Math.max(0, saturation - 1) ** 3),
        default: Math.min(1, Math.max(0, (saturation - 1.5) / 1.5) ** 3),
        priority: Math.min(1, Math.max(0, (saturation - 2) / 2) ** 3),
      };
      for (const serviceClass of ['batch', 'flex', 'default', 'priority'] as const) {
        expect(Math.abs(rates[serviceClass] - expected[serviceClass])).toBeLessThan(0.04);
      }
      expect(rates.flex).toBeGreaterThanOrEqual(rates.default);
      expect(rates.default).toBeGreaterThanOrEqual(rates.priority);
      if (backlog === 75) expect(rates.flex).toBeGreaterThan(rates.default + 0.3);
      if (backlog === 200) expect(rates.default).toBeGreaterThan(rates.priority + 0.2);
    }
  });

  it('sheds a batch flood without shedding priority or flex', () => {
    const clock = new VirtualClock();
    const scheduler = new TieredScheduler({ clock, capacity: { sequences: 100, tokens: 1_000_000_000 } });
    for (let index = 0; index < 100; index++) scheduler.submit(job('base', 'priority'));
    for (let index = 0; index < 5_000; index++) scheduler.submit(job('flood', 'batch'));
    const stats = scheduler.stats();
    expect(stats.classes.batch.refused.shed).toBeGreaterThan(4_800);
    expect(stats.classes.batch.queued).toBeLessThanOrEqual(100); // p = 1 at saturation 2
    expect(scheduler.saturation('priority')).toBe(1);
    for (const serviceClass of ['priority', 'flex'] as const) {
      expect(scheduler.submit(job('a', serviceClass)).outcome).toBe('queued');
    }
  });

  it('never sheds a job that can run at once', () => {
    const clock = new VirtualClock();
    const scheduler = new TieredScheduler({ clock, capacity: { sequences: 100, tokens: 1_000_000_000 } });
    for (let index = 0; index < 84; index++) scheduler.submit(job('base', 'priority'));
    expect(scheduler.submit(job('a', 'batch')).outcome).toBe('dispatched');
    expect(shedProbability(0.5, { start: 1, full: 2, exponent: 3 })).toBe(0);
    expect(shedProbability(1.5, { start: 1, full: 2, exponent: 3 })).toBe(0.125);
    expect(shedProbability(2.5, { start: 1, full: 2, exponent: 3 })).toBe(1);
  });
});

describe('TieredScheduler: options and tickets', () => {
  it('rejects inconsistent policies and malformed jobs', () => {
    const clock = new VirtualClock();
    const capacity = { sequences: 4, tokens: 1_000 };
    expect(() => new TieredScheduler({ clock, capacity, classes: { flex: { admissionCeiling: 0.99 } } })).toThrow(
      RangeError,
    );
    expect(() => new TieredScheduler({ clock, capacity, classes: { flex: { shedding: { full: 0.5 } } } })).toThrow(
      RangeError,
    );
    expect(() => new TieredScheduler({ clock, capacity: { sequences: 0, tokens: 1 } })).toThrow(RangeError);
    const scheduler = new TieredScheduler({ clock, capacity });
    expect(() => scheduler.submit(job('a', 'default', { inputTokens: -1 }))).toThrow(RangeError);
    expect(() => scheduler.submit(job('a', 'default', { weight: 0 }))).toThrow(RangeError);
  });

  it('resolves settled() on dispatch, reports waits, and ignores foreign or finished tickets', async () => {
    const { scheduler, clock } = tiered({ capacity: { sequences: 1, tokens: 1_000 } });
    const first = scheduler.submit(job('a', 'default'));
    const second = scheduler.submit(job('a', 'default'));
    if (first.outcome !== 'dispatched' || second.outcome !== 'queued') throw new Error('unexpected outcomes');
    clock.advance(300);
    expect(scheduler.complete(first.ticket, { inputTokens: 100, outputTokens: 50 })).toBe(true);
    expect(scheduler.complete(first.ticket, { inputTokens: 100, outputTokens: 50 })).toBe(false);
    await expect(second.ticket.settled()).resolves.toEqual({ outcome: 'dispatched' });
    expect(second.ticket.dispatchedAt).toBe(300);
    expect(scheduler.takeWaitSamples().default).toEqual([0, 300]);
    expect(scheduler.takeWaitSamples().default).toEqual([]);
    const other = new TieredScheduler({ clock, capacity: { sequences: 1, tokens: 1_000 } });
    expect(other.cancel(second.ticket)).toBe(false);
    expect(scheduler.cancel(second.ticket)).toBe(true);
    expect(scheduler.stats()).toMatchObject({ inFlight: { sequences: 0, tokens: 0 }, utilisation: 0 });
  });

  it('refuses queued tickets with `closed` on close()', () => {
    const { scheduler } = tiered({ capacity: { sequences: 1, tokens: 1_000 } });
    scheduler.submit(job('a', 'default'));
    const reasons: string[] = [];
    scheduler.submit(job('a', 'default'), { onRefuse: (_ticket, refusal) => reasons.push(refusal.reason) });
    scheduler.close();
    expect(reasons).toEqual(['closed']);
    expect(scheduler.submit(job('a', 'default'))).toMatchObject({ outcome: 'refused', refusal: { reason: 'closed' } });
  });
});
