/**
 * Fair share across processes: two schedulers (two gateway processes) share their VTC counters through a
 * FairShareStore, in memory and in Redis (one conformance suite), so a tenant served heavily through one process
 * waits behind a light tenant in the other.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { type FairShareStore, MemoryFairShareStore } from './fair-share-store.js';
import { FairShareSync } from './fair-share-sync.js';
import { RedisFairShareStore } from './redis-fair-share-store.js';
import type { SchedulerTicket } from './scheduler.js';
import { TieredScheduler } from './tiered-scheduler.js';

const prefix = `tgtest:${process.pid}:${Date.now()}:`;
const opened: FairShareStore[] = [];

function suite(name: string, open: () => FairShareStore) {
  describe(`FairShareStore on ${name}`, () => {
    it('adds deltas to shared totals that every process reads back', async () => {
      const first = open();
      const second = open();
      const scope = `m:flex:${Math.random().toString(36).slice(2)}`;
      expect(
        await first.sync(
          scope,
          new Map([
            ['a', 10],
            ['b', 0],
          ]),
        ),
      ).toEqual(new Map([['a', 10]]));
      expect(
        await second.sync(
          scope,
          new Map([
            ['a', 5],
            ['b', 2.5],
          ]),
        ),
      ).toEqual(
        new Map([
          ['a', 15],
          ['b', 2.5],
        ]),
      );
      expect(await first.sync(scope, new Map())).toEqual(
        new Map([
          ['a', 15],
          ['b', 2.5],
        ]),
      );
      expect(await first.sync(`${scope}:other`, new Map())).toEqual(new Map());
    });
  });
}

const memory = new MemoryFairShareStore();
suite('memory', () => memory);
suite('Redis', () => {
  const store = new RedisFairShareStore({ redis: 'redis://127.0.0.1:6379', keyPrefix: prefix });
  opened.push(store);
  return store;
});
afterAll(async () => {
  const cleanup = new RedisFairShareStore({ redis: 'redis://127.0.0.1:6379', keyPrefix: prefix });
  const redis = (cleanup as unknown as { redis: import('ioredis').Redis }).redis;
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  await cleanup.close();
  await Promise.all(opened.map((store) => store.close()));
});

describe('FairShareSync', () => {
  function process(clock: VirtualClock) {
    return new TieredScheduler({ clock, capacity: { sequences: 1, tokens: 1_000_000 } });
  }
  const job = (id: string, tenantId: string) => ({
    id,
    tenantId,
    serviceClass: 'default' as const,
    inputTokens: 100,
    maxOutputTokens: 100,
  });

  async function orderInSecondProcess(shared: boolean): Promise<string[]> {
    const clock = new VirtualClock();
    const store = new MemoryFairShareStore();
    const first = process(clock);
    const second = process(clock);
    const syncs = [
      new FairShareSync(new Map([['m', first]]), store, { clock }),
      new FairShareSync(new Map([['m', second]]), store, { clock }),
    ];
    // Both processes see both tenants once, so their counters are tracked from here on.
    for (const [index, scheduler] of [first, second].entries()) {
      for (const tenantId of ['heavy', 'light']) {
        const result = scheduler.submit(job(`warm-${index}-${tenantId}`, tenantId));
        if (result.outcome === 'dispatched') scheduler.complete(result.ticket, { inputTokens: 1, outputTokens: 1 });
      }
    }
    if (shared) for (const sync of syncs) await sync.syncOnce();
    // In the second process both tenants queue behind a running job, level with each other.
    const blocker = second.submit(job('blocker', 'other'));
    if (blocker.outcome !== 'dispatched') throw new Error('expected the blocker to run');
    const order: string[] = [];
    const queued: SchedulerTicket[] = [];
    for (const tenantId of ['heavy', 'light']) {
      const result = second.submit(job(`q-${tenantId}`, tenantId), {
        onDispatch: (ticket) => {
          order.push(ticket.job.tenantId);
          second.complete(ticket, { inputTokens: 1, outputTokens: 1 });
        },
      });
      if (result.outcome === 'queued') queued.push(result.ticket);
    }
    expect(queued).toHaveLength(2);
    // Meanwhile the first process serves the heavy tenant a lot.
    for (let index = 0; index < 50; index++) {
      const result = first.submit(job(`h${index}`, 'heavy'));
      if (result.outcome === 'dispatched') first.complete(result.ticket, { inputTokens: 1000, outputTokens: 1000 });
    }
    if (shared) for (const sync of syncs) await sync.syncOnce();
    second.complete(blocker.ticket, { inputTokens: 1, outputTokens: 1 });
    return order;
  }

  it('serves the light tenant first in the other process once counters are shared', async () => {
    expect(await orderInSecondProcess(false)).toEqual(['heavy', 'light']);
    expect(await orderInSecondProcess(true)).toEqual(['light', 'heavy']);
  });

  it('never lowers a counter below its local level', async () => {
    const clock = new VirtualClock();
    const scheduler = process(clock);
    const store = new MemoryFairShareStore();
    const sync = new FairShareSync(new Map([['m', scheduler]]), store, { clock });
    const result = scheduler.submit(job('a', 'tenant'));
    if (result.outcome === 'dispatched') scheduler.complete(result.ticket, { inputTokens: 500, outputTokens: 500 });
    const before = scheduler.fairShareCounters('default').get('tenant')!;
    await sync.syncOnce();
    await sync.syncOnce();
    expect(scheduler.fairShareCounters('default').get('tenant')).toBeGreaterThanOrEqual(before);
  });
});
