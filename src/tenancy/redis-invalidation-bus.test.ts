import { afterEach, describe, expect, it } from 'vitest';
import { RedisInvalidationBus } from './redis-invalidation-bus.js';

const buses: RedisInvalidationBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
});

describe('RedisInvalidationBus', () => {
  it('delivers a revocation published by one process to every other process', async () => {
    const channel = `tgtest:invalidations:${process.pid}:${Date.now()}`;
    const first = new RedisInvalidationBus({ url: 'redis://127.0.0.1:6379', channel });
    const second = new RedisInvalidationBus({ url: 'redis://127.0.0.1:6379', channel });
    buses.push(first, second);
    await Promise.all([first.ready(), second.ready()]);
    const seenByFirst: string[] = [];
    const seenBySecond: string[] = [];
    first.subscribe((keyId) => seenByFirst.push(keyId));
    second.subscribe((keyId) => seenBySecond.push(keyId));
    await first.publish('key_abc');
    // The publisher drops it at once; the other process when the message arrives.
    expect(seenByFirst).toContain('key_abc');
    for (const deadline = Date.now() + 10_000; seenBySecond.length === 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(seenBySecond).toEqual(['key_abc']);
  });
});
