/**
 * Refines each model's scheduling capacity with what its upstreams report (the simulated replica's and vLLM's
 * running/waiting counts). Configured capacity is an upper bound; when an upstream reports requests waiting in its
 * own queue, the deployment is fuller than the gateway thinks (another model shares the replicas, or another
 * gateway sends to it), so its share of the model's capacity is scaled by running ÷ (running + waiting). Work then
 * waits in the gateway's class-aware, fair queue instead of the upstream's FIFO. When the upstream's queue empties,
 * the configured capacity comes back. Upstreams that report nothing keep their configured capacity.
 *
 * A queue seen once is not evidence: requests that arrive during an engine step wait for the next one, so a burst
 * read mid-step shows few running and many waiting (1 running, 39 waiting would cut 64 sequences to 1) although the
 * batch has room. A deployment is scaled down only when two polls in a row saw a queue, and then by the milder of
 * the two readings.
 */
import type { CatalogModel } from '../catalog/catalog.js';
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Upstream, UpstreamLoad } from '../upstreams/upstream.js';
import type { Scheduler } from './scheduler.js';

/** Options of `CapacityRefiner`. */
export interface CapacityRefinerOptions {
  /** How often upstreams are asked, ms. Default 2000. */
  intervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/** Periodically adjusts the schedulers' capacity to the upstreams' reported load. */
export class CapacityRefiner {
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private timer: ClockTimer | undefined;
  /** Each upstream's load at the previous poll. */
  private previous = new Map<Upstream, UpstreamLoad | undefined>();

  constructor(
    private readonly models: readonly CatalogModel[],
    private readonly schedulers: ReadonlyMap<string, Scheduler>,
    private readonly options: CapacityRefinerOptions = {},
  ) {
    this.clock = options.clock ?? new RealClock();
    this.intervalMs = options.intervalMs ?? 2000;
  }

  start(): void {
    const tick = () => {
      this.timer = this.clock.setTimer(this.intervalMs, tick);
      this.refresh().catch((error: unknown) => this.options.logger?.warn({ err: error }, 'capacity refresh failed'));
    };
    this.timer = this.clock.setTimer(this.intervalMs, tick);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Asks every upstream once and sets each model's capacity. Returns the sequences set per model. */
  async refresh(): Promise<Map<string, number>> {
    const upstreams = new Set<Upstream>();
    for (const model of this.models) for (const deployment of model.deployments) upstreams.add(deployment.upstream);
    const loads = new Map<Upstream, UpstreamLoad | undefined>();
    await Promise.all(
      [...upstreams].map(async (upstream) => {
        try {
          loads.set(upstream, await upstream.load?.());
        } catch {
          loads.set(upstream, undefined);
        }
      }),
    );
    const result = new Map<string, number>();
    for (const model of this.models) {
      const scheduler = this.schedulers.get(model.name);
      if (scheduler === undefined) continue;
      let sequences = 0;
      for (const deployment of model.deployments) {
        const { upstream } = deployment;
        sequences += effectiveSequences(
          deployment.capacity.sequences,
          this.previous.get(upstream),
          loads.get(upstream),
        );
      }
      scheduler.setCapacity({ sequences: Math.max(1, sequences) });
      result.set(model.name, sequences);
    }
    this.previous = loads;
    return result;
  }
}

/**
 * A deployment's sequences given its upstream's load at the previous and the latest poll: scaled by
 * running ÷ (running + waiting) only when both saw a queue, by the larger of the two factors.
 */
export function effectiveSequences(
  configured: number,
  previous: UpstreamLoad | undefined,
  latest: UpstreamLoad | undefined,
): number {
  if (previous === undefined || latest === undefined || previous.waiting <= 0 || latest.waiting <= 0) {
    return configured;
  }
  // Cross-multiplied, so the milder reading is chosen and scaled without rounding a quotient first.
  const milder =
    previous.running * (latest.running + latest.waiting) > latest.running * (previous.running + previous.waiting)
      ? previous
      : latest;
  return Math.max(1, Math.floor((configured * milder.running) / (milder.running + milder.waiting)));
}
