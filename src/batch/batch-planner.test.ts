import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import type { SchedulerTicket } from '../scheduling/scheduler.js';
import { TieredScheduler } from '../scheduling/tiered-scheduler.js';
import { ReplicaEngine } from '../upstreams/simulated/replica-engine.js';
import {
  type BatchLineClass,
  type BatchProgress,
  inOffPeakWindow,
  type OffPeakWindow,
  parseMinuteOfDay,
  planBatchClass,
} from './batch-planner.js';

const second = 1_000;
const minute = 60 * second;

/** 36,000 tokens left at 10 tokens/s: P = 3,600 s to finish, S × P = 5,400 s with the default safety factor 1.5. */
function progress(timeLeftMs: number, extra: Partial<BatchProgress> = {}): BatchProgress {
  return {
    remainingLines: 100,
    remainingTokens: 36_000,
    now: 1_000_000,
    deadline: 1_000_000 + timeLeftMs,
    recentTokensPerSecond: 10,
    ...extra,
  };
}

describe('planBatchClass thresholds', () => {
  it('stays batch while the rest fits with the safety factor to spare (boundary included)', () => {
    expect(planBatchClass(progress(5_400_001))).toBe('batch');
    expect(planBatchClass(progress(5_400_000))).toBe('batch');
    expect(planBatchClass(progress(5_399_999))).toBe('flex');
  });

  it('promotes to flex while it fits at the observed rate, to default once it does not', () => {
    expect(planBatchClass(progress(3_600_001))).toBe('flex');
    expect(planBatchClass(progress(3_600_000))).toBe('flex');
    expect(planBatchClass(progress(3_599_999))).toBe('default');
  });

  it('runs at default within promoteToDefaultWithinMs of the deadline whatever the rate', () => {
    const fast = { remainingTokens: 10, recentTokensPerSecond: 1_000 }; // P = 10 ms
    expect(planBatchClass(progress(30 * minute + 1, fast))).toBe('batch');
    expect(planBatchClass(progress(30 * minute, fast))).toBe('default');
    expect(planBatchClass(progress(-5 * minute, fast))).toBe('default');
    expect(planBatchClass(progress(10 * minute + 1, fast), { promoteToDefaultWithinMs: 10 * minute })).toBe('batch');
    expect(planBatchClass(progress(10 * minute, fast), { promoteToDefaultWithinMs: 10 * minute })).toBe('default');
  });

  it('takes the safety factor from the options', () => {
    // S = 2: batch needs 2 × 3,600 s = 7,200 s left.
    expect(planBatchClass(progress(7_200_000), { safetyFactor: 2 })).toBe('batch');
    expect(planBatchClass(progress(7_199_999), { safetyFactor: 2 })).toBe('flex');
    // S = 1: no flex zone at all.
    expect(planBatchClass(progress(3_600_000), { safetyFactor: 1 })).toBe('batch');
    expect(planBatchClass(progress(3_599_999), { safetyFactor: 1 })).toBe('default');
  });

  it('projects only within projectWithinMs of the deadline', () => {
    // P = 3,600 s > T: default once projected, batch before the projection horizon.
    const late = progress(3_000_000);
    expect(planBatchClass(late, { projectWithinMs: 3_000_000 })).toBe('default');
    expect(planBatchClass(late, { projectWithinMs: 2_999_999 })).toBe('batch');
    expect(planBatchClass(progress(30 * minute), { projectWithinMs: 30 * minute })).toBe('default');
    expect(() => planBatchClass(late, { projectWithinMs: 29 * minute })).toThrow(RangeError);
  });

  it('keeps batch with no rate observed yet, until the last stretch', () => {
    expect(planBatchClass(progress(30 * minute + 1, { recentTokensPerSecond: 0 }))).toBe('batch');
    expect(planBatchClass(progress(30 * minute, { recentTokensPerSecond: 0 }))).toBe('default');
  });

  it('returns batch for a finished batch, even past its deadline', () => {
    expect(planBatchClass(progress(-1, { remainingLines: 0, remainingTokens: 0 }))).toBe('batch');
  });

  it('rejects malformed input', () => {
    expect(() => planBatchClass(progress(1, { remainingTokens: -1 }))).toThrow(RangeError);
    expect(() => planBatchClass(progress(1, { recentTokensPerSecond: Number.NaN }))).toThrow(RangeError);
    expect(() => planBatchClass(progress(1, { deadline: Number.POSITIVE_INFINITY }))).toThrow(RangeError);
    expect(() => planBatchClass(progress(1), { safetyFactor: 0.9 })).toThrow(RangeError);
    expect(() => planBatchClass(progress(1), { promoteToDefaultWithinMs: -1 })).toThrow(RangeError);
  });
});

describe('planBatchClass as the deadline approaches', () => {
  it('promotes a stalled batch step by step: batch → flex → default', () => {
    // Same work left (36,000 tokens at 10 tokens/s), deadline at 10,000 s: the class at each moment.
    const deadline = 10_000 * second;
    const at = (seconds: number) =>
      planBatchClass(progress(0, { now: seconds * second, deadline, recentTokensPerSecond: 10 }));
    const moments = [0, 4_600, 4_601, 6_400, 6_401, 8_199, 8_200, 9_999];
    // T = 10,000, 5,400 (= S × P), 5,399, 3,600 (= P), 3,599, 1,801, 1,800 (= 30 min), 1 s.
    const expected: BatchLineClass[] = ['batch', 'batch', 'flex', 'flex', 'default', 'default', 'default', 'default'];
    expect(moments.map(at)).toEqual(expected);
  });

  it('lets a batch that keeps pace return to batch class as its margin grows', () => {
    // 50,000 tokens at 10 tokens/s, deadline at 6,000 s: P = 5,000 − t, T = 6,000 − t; S × P ≤ T from t = 3,000 s.
    const at = (seconds: number) =>
      planBatchClass({
        remainingLines: 1,
        remainingTokens: 50_000 - 10 * seconds,
        now: seconds * second,
        deadline: 6_000 * second,
        recentTokensPerSecond: 10,
      });
    expect([0, 2_999, 3_000, 4_000].map(at)).toEqual(['flex', 'flex', 'batch', 'batch']);
  });
});

describe('inOffPeakWindow', () => {
  const day = Date.UTC(2024, 5, 3);
  const at = (hours: number, minutes: number, ms = 0) => day + (hours * 60 + minutes) * minute + ms;
  const crossing: OffPeakWindow[] = [{ start: '16:30', end: '00:30' }];

  it('covers a window that crosses midnight, start inclusive, end exclusive', () => {
    expect(inOffPeakWindow(at(16, 29, 59_999), crossing)).toBe(false);
    expect(inOffPeakWindow(at(16, 30), crossing)).toBe(true);
    expect(inOffPeakWindow(at(23, 59, 59_999), crossing)).toBe(true);
    expect(inOffPeakWindow(at(24, 0), crossing)).toBe(true);
    expect(inOffPeakWindow(at(24, 29, 59_999), crossing)).toBe(true);
    expect(inOffPeakWindow(at(24, 30), crossing)).toBe(false);
    expect(inOffPeakWindow(at(12, 0), crossing)).toBe(false);
    expect(inOffPeakWindow(-1, crossing)).toBe(true); // 1969-12-31T23:59:59.999Z
  });

  it('covers a window within one day and any of several windows', () => {
    const night: OffPeakWindow[] = [{ start: '01:00', end: '05:00' }];
    expect(inOffPeakWindow(at(0, 59, 59_999), night)).toBe(false);
    expect(inOffPeakWindow(at(1, 0), night)).toBe(true);
    expect(inOffPeakWindow(at(4, 59, 59_999), night)).toBe(true);
    expect(inOffPeakWindow(at(5, 0), night)).toBe(false);
    const two = [...night, { start: '12:00', end: '13:00' }];
    expect([at(2, 0), at(12, 30), at(13, 0), at(6, 0)].map((now) => inOffPeakWindow(now, two))).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });

  it('treats no window as never, start = end as all day, and 24:00 as the end of the day', () => {
    expect(inOffPeakWindow(at(3, 0), [])).toBe(false);
    expect(inOffPeakWindow(at(3, 0), [{ start: '08:00', end: '08:00' }])).toBe(true);
    expect(inOffPeakWindow(at(23, 59), [{ start: '22:00', end: '24:00' }])).toBe(true);
    expect(inOffPeakWindow(at(24, 0), [{ start: '22:00', end: '24:00' }])).toBe(false);
  });

  it('rejects malformed times', () => {
    for (const text of ['7:00', '25:00', '12:60', '24:01', 'ab:cd', '']) {
      expect(() => parseMinuteOfDay(text), text).toThrow(RangeError);
    }
    expect(parseMinuteOfDay('16:30')).toBe(990);
  });
});

describe('deadline promotion on a simulated replica (VirtualClock + ReplicaEngine + TieredScheduler)', () => {
  const never = { start: 1e9, full: 2e9, exponent: 1 };
  const lineCount = 2_000;
  const promptTokens = 100;
  const outputTokens = 200;
  const windowMs = 600 * second;
  const ratePeriodMs = 10 * second;

  /**
   * One replica of 8 slots; batch may use 2 of them, flex 4, default all 8 (ceilings 0.25 / 0.5 / 1). A light online
   * priority stream runs beside the batch. The runner keeps 8 lines submitted and plans each line's class when it
   * submits it, with the output tokens/s of the last 10 s smoothed (EWMA, ½ weight on the newest period).
   */
  function runBatch(promote: boolean) {
    const clock = new VirtualClock(0);
    const engine = new ReplicaEngine({ max_batch: 8 }, { clock });
    const scheduler = new TieredScheduler({
      clock,
      capacity: { sequences: 8, tokens: engine.profile.kv_tokens },
      classes: {
        default: { admissionCeiling: 1, maxQueueWaitMs: Number.POSITIVE_INFINITY, shedding: never },
        flex: { admissionCeiling: 0.5, maxQueueWaitMs: Number.POSITIVE_INFINITY, shedding: never },
        batch: { admissionCeiling: 0.25, shedding: never },
      },
    });
    const deadline = windowMs;
    const byClass: Record<BatchLineClass, number> = { batch: 0, flex: 0, default: 0 };
    let submitted = 0;
    let done = 0;
    let finishedAt: number | undefined;
    let tokensThisPeriod = 0;
    let rate = 0;

    const run = (ticket: SchedulerTicket, onDone: () => void) => {
      engine.submit({
        promptTokens: ticket.job.inputTokens,
        outputTokens: ticket.job.maxOutputTokens,
        onDone: () => {
          scheduler.complete(ticket, { inputTokens: ticket.job.inputTokens, outputTokens: ticket.job.maxOutputTokens });
          onDone();
        },
      });
    };
    const submitLines = () => {
      while (submitted - done < 8 && submitted < lineCount) {
        const remainingLines = lineCount - done;
        const serviceClass = promote
          ? planBatchClass(
              {
                remainingLines,
                remainingTokens: remainingLines * outputTokens,
                now: clock.now(),
                deadline,
                recentTokensPerSecond: rate,
              },
              { promoteToDefaultWithinMs: minute },
            )
          : 'batch';
        byClass[serviceClass]++;
        submitted++;
        const onDone = () => {
          done++;
          tokensThisPeriod += outputTokens;
          if (done === lineCount) finishedAt = clock.now();
          submitLines();
        };
        const job = { id: `line-${submitted}`, tenantId: 'batch', serviceClass, inputTokens: promptTokens };
        const result = scheduler.submit(
          { ...job, maxOutputTokens: outputTokens },
          { onDispatch: (ticket) => run(ticket, onDone) },
        );
        if (result.outcome === 'dispatched') run(result.ticket, onDone);
        expect(result.outcome).not.toBe('refused');
      }
    };
    const measure = () => {
      const sample = tokensThisPeriod / (ratePeriodMs / second);
      rate = rate === 0 ? sample : 0.5 * rate + 0.5 * sample;
      tokensThisPeriod = 0;
      if (finishedAt === undefined) clock.setTimer(ratePeriodMs, measure);
    };
    clock.setTimer(ratePeriodMs, measure);
    // Online: one short priority request every 500 ms.
    const online = () => {
      const result = scheduler.submit(
        { id: 'online', tenantId: 'online', serviceClass: 'priority', inputTokens: 50, maxOutputTokens: 20 },
        { onDispatch: (ticket) => run(ticket, () => {}) },
      );
      if (result.outcome === 'dispatched') run(result.ticket, () => {});
      if (finishedAt === undefined) clock.setTimer(500, online);
    };
    clock.setTimer(0, online);
    submitLines();
    let doneByDeadline = 0;
    clock.setTimer(deadline, () => {
      doneByDeadline = done;
    });
    clock.runUntilIdle(2 * windowMs);
    return { finishedAt, doneByDeadline, byClass };
  }

  it('misses the 600 s window at batch class alone', () => {
    const { finishedAt, doneByDeadline, byClass } = runBatch(false);
    expect(byClass).toEqual({ batch: lineCount, flex: 0, default: 0 });
    expect(finishedAt).toBeGreaterThan(windowMs);
    expect(doneByDeadline).toBeLessThan(lineCount);
  });

  it('keeps the window when the planner promotes the lines that would be late', () => {
    const { finishedAt, doneByDeadline, byClass } = runBatch(true);
    expect(finishedAt).toBeLessThanOrEqual(windowMs);
    expect(doneByDeadline).toBe(lineCount);
    // It started at batch class and was promoted only as far as needed: not every line ran above batch.
    expect(byClass.batch).toBeGreaterThan(0);
    expect(byClass.flex + byClass.default).toBeGreaterThan(0);
    expect(byClass.batch + byClass.flex + byClass.default).toBe(lineCount);
  });
});
