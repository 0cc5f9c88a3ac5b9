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
    expect(scheduler.admissionCeiling('flex')).toBe(0.9);
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
    expect(scheduler.admissionCeiling('flex')).toBe(0.9);
  });
});

describe('TieredScheduler: deadline promotion batch → flex', () => {
  it('gives a line promoted to flex capacity that batch lines cannot take, outside and inside an off-peak window', () => {
    for (const batchCeilingAt of [undefined, () => 0.88]) {
      const { submit, running, scheduler } = harness(batchCeilingAt === undefined ? {} : { batchCeilingAt });
      // Online work holds 5 of 20 slots; a backlog of batch lines fills the pool up to the batch ceiling.
      for (let index = 0; index < 5; index++) submit(job('online-tenant', 'default'), 60_000);
      for (let index = 0; index < 100; index++) submit(job('batch-tenant', 'batch'), 60_000);
      const batchSlots = Math.floor(scheduler.admissionCeiling('batch') * 20) - 5;
      expect(running('batch')).toBe(batchSlots);
      // Another batch line waits; the same line promoted to flex (its deadline nears) runs at once, in the band
      // between the batch and the flex ceiling (0.85 → 0.90 of 20 slots: one more sequence).
      expect(submit(job('batch-tenant', 'batch'), 60_000).outcome).toBe('queued');
      expect(scheduler.admissionCeiling('flex')).toBe(0.9);
      expect(submit(job('batch-tenant', 'flex'), 60_000).outcome).toBe('dispatched');
      expect(running('flex')).toBe(1);
      expect(submit(job('batch-tenant', 'flex'), 60_000).outcome).toBe('queued');
      expect(running('batch')).toBe(batchSlots);
    }
  });
});

describe('TieredScheduler: load-aware online headroom', () => {
  it('keeps free slots in proportion to online load: batch steps back at the peak and fills the trough', () => {
    const { clock, submit, running, scheduler } = harness({
      onlineHeadroom: { minimumSequences: 1, perOnlineSequence: 0.5 },
    });
    // Quiet: 1 free slot below default's 19 would allow 18, the static 0.85 (17) binds.
    for (let index = 0; index < 100; index++) submit(job('batch-tenant', 'batch'), 10_000);
    expect(running('batch')).toBe(17);
    expect(scheduler.admissionCeiling('batch')).toBe(0.85);
    // Online rises to 6 while the batch lines drain: 1 + 0.5 × 6 = 4 slots stay free, so batch refills only to 15.
    for (let index = 0; index < 6; index++) submit(job('online-tenant', 'default'), 60_000);
    expect(running('default')).toBe(2); // the rest wait for the batch lines to finish (never pre-empted)
    clock.advance(10_000);
    expect(running('default')).toBe(6);
    expect(scheduler.admissionCeiling('batch')).toBeCloseTo(0.75, 9);
    expect(running('batch')).toBe(9);
    expect(scheduler.stats().inFlight.sequences).toBe(15);
    // Online gone: batch takes the trough again, up to its static ceiling.
    clock.advance(60_000);
    expect(running('default')).toBe(0);
    expect(running('batch')).toBe(17);
  });

  it('never refuses a job as too large because of the load-aware headroom', () => {
    const { submit } = harness({
      capacity: { sequences: 20, tokens: 1_000 },
      onlineHeadroom: { minimumSequences: 0, perOnlineSequence: 10 },
    });
    for (let index = 0; index < 5; index++) submit(job('online-tenant', 'default'), 60_000);
    // 800 tokens fit batch's static 85% of 1,000; the load-aware ceiling is at its floor now, so it waits.
    const big = { ...job('batch-tenant', 'batch'), inputTokens: 700, maxOutputTokens: 100 };
    expect(submit(big, 1_000).outcome).toBe('queued');
  });

  it('rejects negative or non-finite headroom settings', () => {
    expect(() => harness({ onlineHeadroom: { perOnlineSequence: -1 } })).toThrow(RangeError);
    expect(() => harness({ onlineHeadroom: { minimumSequences: Number.NaN, perOnlineSequence: 0 } })).toThrow(
      RangeError,
    );
  });
});
