/**
 * Predicts how long a new job would wait in its class's queue, so a job that would miss its class's limit is refused
 * at once instead of timing out later.
 *
 * predicted wait = (jobs ahead + 1) / drain rate of the class, where
 * - jobs ahead = every job queued in a higher class + the jobs fair queuing serves first inside the job's own class
 *   (`FairQueue.jobsAhead`);
 * - drain rate = how many jobs per ms the full pool hands to this class: by Little's law a full pool completes
 *   `slots / hold` jobs per ms, with `slots = ceiling × min(capacity.sequences, capacity.tokens / mean reserved
 *   tokens)` and `hold` the mean time a job runs (EWMA over completions, seeded with `initialHoldMs`); the recent
 *   dispatch rate of the higher classes (sliding window) is taken off, since that capacity never reaches this class,
 *   but the class always keeps at least 5% of it.
 *
 * It ignores higher-class jobs that arrive during the wait, so it errs on the short side; the overstay timer is the
 * backstop.
 */
import type { Clock } from '../clock/clock.js';
import type { PoolCapacity } from './scheduler.js';
import { type PerServiceClass, perServiceClass, type ServiceClass, serviceClasses } from './service-class.js';

/** Options of a `WaitEstimator`. */
export interface WaitEstimatorOptions {
  /** Mean run time of a job assumed before any completed, ms. */
  initialHoldMs: number;
  /** Window over which the higher classes' dispatch rate is measured, ms. */
  rateWindowMs: number;
}

// Weight of the newest sample in the EWMAs: about the last 40 jobs matter.
const smoothing = 0.05;
// A class is never predicted to get less than this share of the pool's drain rate.
const minimumShare = 0.05;

/** Running estimates of job hold time, job size and per-class dispatch rate. */
export class WaitEstimator {
  private meanHoldMs: number;
  private meanReservedTokens: number | undefined;
  private readonly dispatchTimes: PerServiceClass<{ times: number[]; head: number }> = perServiceClass(() => ({
    times: [],
    head: 0,
  }));

  constructor(
    private readonly clock: Clock,
    private readonly options: WaitEstimatorOptions,
  ) {
    this.meanHoldMs = options.initialHoldMs;
  }

  /** Mean time a job runs, ms. */
  get holdMs(): number {
    return this.meanHoldMs;
  }

  recordDispatch(serviceClass: ServiceClass, reservedTokens: number): void {
    this.meanReservedTokens =
      this.meanReservedTokens === undefined
        ? reservedTokens
        : this.meanReservedTokens + smoothing * (reservedTokens - this.meanReservedTokens);
    this.dispatchTimes[serviceClass].times.push(this.clock.now());
    this.recentDispatches(serviceClass);
  }

  recordCompletion(holdMs: number): void {
    this.meanHoldMs += smoothing * (Math.max(0, holdMs) - this.meanHoldMs);
  }

  /** Jobs per ms the full pool hands to `serviceClass` (whose admission ceiling is `ceiling`). */
  drainRate(serviceClass: ServiceClass, capacity: Readonly<PoolCapacity>, ceiling: number): number {
    const slotsByTokens =
      this.meanReservedTokens === undefined || this.meanReservedTokens === 0
        ? capacity.sequences
        : capacity.tokens / this.meanReservedTokens;
    const full = (ceiling * Math.min(capacity.sequences, slotsByTokens)) / Math.max(this.meanHoldMs, 1e-3);
    let higher = 0;
    for (const other of serviceClasses) {
      if (other === serviceClass) break;
      higher += this.recentDispatches(other) / this.options.rateWindowMs;
    }
    return Math.max(full - higher, full * minimumShare);
  }

  /** Predicted queue wait of a job with `jobsAhead` jobs before it, ms. */
  predictWaitMs(
    jobsAhead: number,
    serviceClass: ServiceClass,
    capacity: Readonly<PoolCapacity>,
    ceiling: number,
  ): number {
    return (jobsAhead + 1) / this.drainRate(serviceClass, capacity, ceiling);
  }

  private recentDispatches(serviceClass: ServiceClass): number {
    const window = this.dispatchTimes[serviceClass];
    const since = this.clock.now() - this.options.rateWindowMs;
    while (window.head < window.times.length && window.times[window.head]! < since) window.head++;
    if (window.head > 1024 && window.head * 2 > window.times.length) {
      window.times = window.times.slice(window.head);
      window.head = 0;
    }
    return window.times.length - window.head;
  }
}
