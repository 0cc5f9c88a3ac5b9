/**
 * Keeps the VTC counters of this process's schedulers in step with every other process's (see `FairShareStore`).
 * Per model and class: the change of each tenant's local counter since the last sync is pushed, the shared totals come
 * back, and a local counter behind the shared total is raised to it (never lowered: that would bank credit). A
 * tenant first seen here contributes only its changes from then on (its starting level — the idle-return lift — is
 * local bookkeeping, not service).
 */
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import type { Logger } from '../observability/logger.js';
import type { FairShareStore } from './fair-share-store.js';
import { serviceClasses } from './service-class.js';
import type { TieredScheduler } from './tiered-scheduler.js';

/** Options of `FairShareSync`. */
export interface FairShareSyncOptions {
  /** Sync period, ms. Default 250. */
  intervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/** Periodic fair-share sync across processes. */
export class FairShareSync {
  private readonly clock: Clock;
  private readonly intervalMs: number;
  /** Local counter value after the last sync, by `model|class|tenant`. */
  private readonly synced = new Map<string, number>();
  private timer: ClockTimer | undefined;
  private running = false;

  constructor(
    private readonly schedulers: ReadonlyMap<string, TieredScheduler>,
    private readonly store: FairShareStore,
    private readonly options: FairShareSyncOptions = {},
  ) {
    this.clock = options.clock ?? new RealClock();
    this.intervalMs = options.intervalMs ?? 250;
  }

  start(): void {
    const tick = () => {
      this.timer = this.clock.setTimer(this.intervalMs, tick);
      this.syncOnce().catch((error: unknown) => this.options.logger?.warn({ err: error }, 'fair-share sync failed'));
    };
    this.timer = this.clock.setTimer(this.intervalMs, tick);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** One round of push-and-pull for every model and class. */
  async syncOnce(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const [model, scheduler] of this.schedulers) {
        for (const serviceClass of serviceClasses) {
          const local = scheduler.fairShareCounters(serviceClass);
          if (local.size === 0) continue;
          const deltas = new Map<string, number>();
          for (const [tenantId, counter] of local) {
            const previous = this.synced.get(`${model}|${serviceClass}|${tenantId}`);
            // A tenant first seen here sends nothing yet: its starting level is local bookkeeping, not service.
            if (previous !== undefined && counter !== previous) deltas.set(tenantId, counter - previous);
          }
          const totals = await this.store.sync(`${model}:${serviceClass}`, deltas);
          // Counters may have moved while the round trip was in flight: those moves stay and are sent next time.
          for (const tenantId of scheduler.fairShareCounters(serviceClass).keys()) {
            const key = `${model}|${serviceClass}|${tenantId}`;
            const sent = local.get(tenantId);
            if (sent === undefined) continue;
            const total = totals.get(tenantId);
            if (total === undefined) {
              // Nobody has charged this tenant in the shared totals yet: from here on its changes are sent.
              this.synced.set(key, sent);
              continue;
            }
            // Raise to the shared total when other processes served the tenant more (never lower a counter: that
            // would bank credit), keeping what was charged here while the round trip was in flight.
            if (total > sent) {
              scheduler.adjustFairShare(serviceClass, tenantId, total - sent);
              this.synced.set(key, total);
            } else {
              this.synced.set(key, sent);
            }
          }
        }
      }
    } finally {
      this.running = false;
    }
  }
}
