import { describe, expect, it } from 'vitest';
import type { CatalogModel, Deployment } from '../catalog/catalog.js';
import { VirtualClock } from '../clock/clock.js';
import type { Upstream, UpstreamLoad } from '../upstreams/upstream.js';
import { CapacityRefiner, effectiveSequences } from './capacity-refiner.js';
import { TieredScheduler } from './tiered-scheduler.js';

function upstream(name: string, load: () => UpstreamLoad | undefined): Upstream {
  return {
    name,
    complete: () => Promise.reject(new Error('unused')),
    stream: () => Promise.reject(new Error('unused')),
    load: async () => load(),
    close: async () => undefined,
  };
}

function deployment(up: Upstream, sequences: number): Deployment {
  return {
    id: `${up.name}/m`,
    upstream: up,
    upstreamModel: 'm',
    capacity: { sequences, tokens: 1_000_000 },
    weight: 1,
  };
}

/** A model `m` on `deployments`, its scheduler at their configured capacity, and a refiner over both. */
function refinedModel(deployments: Deployment[]) {
  const model: CatalogModel = {
    name: 'm',
    kind: 'chat',
    contextWindow: 8192,
    maxOutputTokens: 1024,
    created: 0,
    deployments,
  };
  const clock = new VirtualClock();
  const sequences = deployments.reduce((sum, each) => sum + each.capacity.sequences, 0);
  const scheduler = new TieredScheduler({ clock, capacity: { sequences, tokens: 2_000_000 } });
  const refiner = new CapacityRefiner([model], new Map([['m', scheduler]]), { clock });
  return { scheduler, refiner };
}

describe('CapacityRefiner', () => {
  it('scales a deployment by running / (running + waiting) while its upstream keeps a queue, and restores it after', async () => {
    let reported: UpstreamLoad | undefined = { running: 30, waiting: 10 };
    const busy = upstream('busy', () => reported);
    const silent = upstream('silent', () => undefined);
    const { scheduler, refiner } = refinedModel([deployment(busy, 64), deployment(silent, 16)]);

    await refiner.refresh();
    // One poll with a queue is not enough.
    expect(scheduler.capacity.sequences).toBe(80);
    await refiner.refresh();
    // 64 × 30/40 = 48 for the queueing upstream, 16 kept for the silent one.
    expect(scheduler.capacity.sequences).toBe(48 + 16);

    reported = { running: 20, waiting: 0 };
    await refiner.refresh();
    expect(scheduler.capacity.sequences).toBe(80);
  });

  it('ignores a queue seen once, such as a burst read in the middle of an engine step', async () => {
    const loads: UpstreamLoad[] = [
      { running: 1, waiting: 39 },
      { running: 40, waiting: 0 },
      { running: 2, waiting: 30 },
      { running: 40, waiting: 0 },
    ];
    const { scheduler, refiner } = refinedModel([
      deployment(
        upstream('bursty', () => loads.shift()),
        64,
      ),
    ]);
    for (let poll = 0; poll < 4; poll++) {
      await refiner.refresh();
      expect(scheduler.capacity.sequences).toBe(64);
    }
  });

  it('takes the milder of two queued readings and never goes below one sequence', () => {
    expect(effectiveSequences(64, { running: 30, waiting: 10 }, { running: 10, waiting: 30 })).toBe(48);
    expect(effectiveSequences(64, { running: 10, waiting: 30 }, { running: 30, waiting: 10 })).toBe(48);
    expect(effectiveSequences(64, { running: 0, waiting: 100 }, { running: 0, waiting: 100 })).toBe(1);
    expect(effectiveSequences(64, undefined, { running: 0, waiting: 100 })).toBe(64);
    expect(effectiveSequences(64, { running: 0, waiting: 100 }, undefined)).toBe(64);
    expect(effectiveSequences(10, { running: 5, waiting: 5 }, { running: 5, waiting: 5 })).toBe(5);
  });
});
