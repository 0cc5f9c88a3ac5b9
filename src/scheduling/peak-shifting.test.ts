import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import type { SchedulerJob, SchedulerTicket } from './scheduler.js';
import type { ServiceClass } from './service-class.js';
import { TieredScheduler, type TieredSchedulerOptions } from './tiered-scheduler.js';

const never = { start: 1e9, full: 2e9, exponent: 1 };

let jobCounter = 0;
function job(tenantId: string, serviceClass: ServiceClass): SchedulerJob {
  return { id: `job-${jobCounter++}`, tenantId, serviceClass, inputTokens: 100, maxOutputTokens: 100 };
}

interface DispatchEvent {
  serviceClass: ServiceClass;
  at: number;
  /** Online (default-class) jobs still waiting right after this dispatch. */
  onlineQueuedAfter: number;
}

/** A scheduler whose dispatched jobs complete after `holdMs(job)` of virtual time; every dispatch is logged. */
function harness(options: Partial<TieredSchedulerOptions> = {}) {
  const clock = new VirtualClock();
  const scheduler = new TieredScheduler({
    clock,
    capacity: { sequences: 20, tokens: 1_000_000 },
    classes: { batch: { shedding: never }, default: { shedding: never, maxQueueWaitMs: 60_000 } },
    ...options,
  });
  const events: DispatchEvent[] = [];
  const run = (ticket: SchedulerTicket, holdMs: number) => {
    events.push({
      serviceClass: ticket.job.serviceClass,
      at: clock.now(),
      onlineQueuedAfter: scheduler.stats().classes.default.queued,
    });
    clock.setTimer(holdMs, () => scheduler.complete(ticket, { inputTokens: 100, outputTokens: 100 }));
  };
  const submit = (submitted: SchedulerJob, holdMs: number) => {
    const result = scheduler.submit(submitted, { onDispatch: (ticket) => run(ticket, holdMs) });
    if (result.outcome === 'dispatched') run(result.ticket, holdMs);
    return result;
  };
  const running = (serviceClass: ServiceClass) => scheduler.stats().classes[serviceClass].running;
  return { clock, scheduler, events, submit, running };
}

describe('TieredScheduler: batch yields to online load and resumes', () => {
  it('gives the very next dispatch after online work queues to online and no slot to batch while it waits', () => {
    const { clock, scheduler, events, submit, running } = harness();
    // 200 batch lines of 1–1.5 s each: 17 run (0.85 × 20), the rest wait.
    for (let index = 0; index < 200; index++) submit(job('batch-tenant', 'batch'), 1_000 + ((index * 37) % 500));
    expect(running('batch')).toBe(17);
    clock.advance(5_000);
    expect(running('batch')).toBe(17);

    // Online rises: 12 requests of 5 s at once. Two fit in the headroom (19 = 0.95 × 20), ten must wait.
    const burstAt = clock.now();
    const online = Array.from({ length: 12 }, () => submit(job('online-tenant', 'default'), 5_000));
    expect(online.map((result) => result.outcome)).toEqual([
      ...Array(2).fill('dispatched'),
      ...Array(10).fill('queued'),
    ]);
    expect(scheduler.stats().classes.default.queued).toBe(10);
    const mark = events.length;

    // Let slots free up (only batch lines are finishing now) and look at every decision made.
    while (scheduler.stats().classes.default.queued > 0) clock.advance(10);
    const duringBurst = events.slice(mark);
    expect(duringBurst).toHaveLength(10);
    // The first decision after the online jobs queued went to online, and so did every one until none waited.
    expect(duringBurst.map((event) => event.serviceClass)).toEqual(Array(10).fill('default'));
    expect(duringBurst.at(-1)!.onlineQueuedAfter).toBe(0);

    // Every batch line running at the burst has finished 1.5 s later; batch refilled only up to the ceiling:
    // 12 online + 5 batch = 17 = 0.85 × 20.
    clock.advance(1_500);
    expect(running('default')).toBe(12);
    expect(running('batch')).toBe(5);
    expect(events.filter((event) => event.serviceClass === 'batch' && event.at > burstAt).length).toBeGreaterThan(0);

    // Online falls (its jobs finish, none arrive): batch takes the pool back up to its ceiling.
    clock.advance(5_000);
    expect(running('default')).toBe(0);
    expect(running('batch')).toBe(17);
    // Over the whole run, no batch line was dispatched while an online job was waiting.
    expect(events.filter((event) => event.serviceClass === 'batch' && event.onlineQueuedAfter > 0)).toEqual([]);
  });

  it('never dispatches a batch line while online work waits, under a sustained random online load', () => {
    const { clock, events, submit, running } = harness();
    for (let index = 0; index < 2_000; index++) submit(job('batch-tenant', 'batch'), 800 + ((index * 53) % 700));
    // Online load in waves: heavy for 10 s (more than the pool), quiet for 10 s, three times.
    for (let wave = 0; wave < 3; wave++) {
      for (let index = 0; index < 100; index++) {
        clock.setTimer(wave * 20_000 + index * 100, () => submit(job('online-tenant', 'default'), 2_500));
      }
    }
    const batchRunningAtQuietEnd: number[] = [];
    for (let wave = 0; wave < 3; wave++) {
      clock.setTimer(wave * 20_000 + 19_999, () => batchRunningAtQuietEnd.push(running('batch')));
    }
    clock.advance(60_000);
    const onlineWaited = events.filter((event) => event.onlineQueuedAfter > 0);
    expect(onlineWaited.length).toBeGreaterThan(0); // the waves did make online work wait
    expect(events.filter((event) => event.serviceClass === 'batch' && event.onlineQueuedAfter > 0)).toEqual([]);
    expect(batchRunningAtQuietEnd).toEqual([17, 17, 17]);
  });
});

describe('TieredScheduler: time-dependent batch ceiling (off-peak windows)', () => {
  // Off peak during the first hour of every 2 hours of virtual time.
  const offPeak = (now: number) => Math.floor(now / 3_600_000) % 2 === 0;

  it('lets batch use more of the pool while the window is open and falls back when it closes', () => {
    const { clock, submit, running, scheduler } = harness({
      batchCeilingAt: (now) => (offPeak(now) ? 0.95 : 0.5),
    });
    for (let index = 0; index < 20_000; index++) submit(job('batch-tenant', 'batch'), 10_000);
    expect(running('batch')).toBe(19); // ⌊0.95 × 20⌋ during the window
    expect(scheduler.admissionCeiling('batch')).toBe(0.95);
    // Flex may always use at least what batch may.
    expect(scheduler.admissionCeiling('flex')).toBe(0.95);
    clock.advanceTo(3_600_000 + 10_500); // window closed; running lines finish, none replaced above 10
    expect(running('batch')).toBe(10);
    expect(scheduler.admissionCeiling('flex')).toBe(0.85);
    clock.advanceTo(7_200_000 + 10_500); // open again
    expect(running('batch')).toBe(19);
  });

  it('caps the batch ceiling at the default class ceiling, so online work keeps its headroom', () => {
    const { submit, running, scheduler } = harness({ batchCeilingAt: () => 1 });
    for (let index = 0; index < 100; index++) submit(job('batch-tenant', 'batch'), 1_000);
    expect(running('batch')).toBe(19);
    expect(submit(job('vip', 'priority'), 1_000).outcome).toBe('dispatched');
    expect(scheduler.admissionCeiling('batch')).toBe(0.95);
  });

  it('rejects a ceiling outside (0, 1]', () => {
    const { submit } = harness({ batchCeilingAt: () => 0 });
    expect(() => submit(job('batch-tenant', 'batch'), 1_000)).toThrow(RangeError);
    const other = harness({ batchCeilingAt: () => 1.2 });
    expect(() => other.submit(job('batch-tenant', 'batch'), 1_000)).toThrow(RangeError);
  });

  it('leaves every class at its static policy without the option', () => {
    const { scheduler, submit, running } = harness();
    for (let index = 0; index < 100; index++) submit(job('batch-tenant', 'batch'), 1_000);
    expect(running('batch')).toBe(17);
    expect(scheduler.admissionCeiling('batch')).toBe(0.85);
    expect(scheduler.admissionCeiling('flex')).toBe(0.85);
  });
});
