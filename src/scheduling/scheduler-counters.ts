/** Counters both schedulers keep for `stats()` and `takeWaitSamples()`. */
import type { CapacityLedger } from './capacity-ledger.js';
import type { RefusalReason, SchedulerStats, ServiceClassStats } from './scheduler.js';
import { refusalReasons } from './scheduler.js';
import { type PerServiceClass, perServiceClass, type ServiceClass } from './service-class.js';

/** Mutable per-class counters plus a bounded buffer of queue-wait samples. */
export class SchedulerCounters {
  readonly classes: PerServiceClass<ServiceClassStats> = perServiceClass(() => ({
    queued: 0,
    queuedTokens: 0,
    running: 0,
    dispatched: 0,
    completed: 0,
    cancelled: 0,
    refused: Object.fromEntries(refusalReasons.map((reason) => [reason, 0])) as Record<RefusalReason, number>,
  }));
  private waits: PerServiceClass<number[]> = perServiceClass(() => []);

  /** @param waitSampleLimit samples kept per class between two `takeWaitSamples` calls (the oldest are dropped). */
  constructor(private readonly waitSampleLimit: number) {}

  recordWait(serviceClass: ServiceClass, waitMs: number): void {
    const samples = this.waits[serviceClass];
    // Halving in one go keeps the buffer amortised O(1) when nobody drains it.
    if (samples.length >= this.waitSampleLimit) samples.splice(0, Math.ceil(samples.length / 2));
    samples.push(waitMs);
  }

  takeWaitSamples(): PerServiceClass<number[]> {
    const taken = this.waits;
    this.waits = perServiceClass(() => []);
    return taken;
  }

  snapshot(ledger: CapacityLedger): SchedulerStats {
    return {
      capacity: { ...ledger.capacity },
      inFlight: { sequences: ledger.sequences, tokens: ledger.tokens },
      utilisation: ledger.utilisation(),
      classes: perServiceClass((serviceClass) => {
        const counters = this.classes[serviceClass];
        return { ...counters, refused: { ...counters.refused } };
      }),
    };
  }
}
