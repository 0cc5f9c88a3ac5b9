import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigSubject } from './invalidation-bus.js';
import { describeInvalidationBusConformance } from './invalidation-bus-conformance.js';
import { RedisInvalidationBus } from './redis-invalidation-bus.js';

const redisUrl = 'redis://127.0.0.1:6379';
const eventually = { timeout: 10_000, interval: 20 };

const buses: RedisInvalidationBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
});

function openBus(options: { channel: string; url?: string; connectionName?: string; onFailure?: () => void }) {
  const bus = new RedisInvalidationBus({
    url: options.url ?? redisUrl,
    channel: options.channel,
    logger: pino({ level: 'silent' }),
    ...(options.connectionName === undefined ? {} : { connectionName: options.connectionName }),
    ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }),
  });
  buses.push(bus);
  const seen: string[] = [];
  bus.subscribe((subject) => seen.push(subject));
  return { bus, seen };
}

describe('RedisInvalidationBus', () => {
  it('after its subscriber reconnects, has everyone drop what they cached meanwhile', async () => {
    const channel = `tgtest:reconnect:${process.pid}:${Date.now()}`;
    const name = `tgtest-bus-${process.pid}-${Date.now()}`;
    let failures = 0;
    const dropped = openBus({
      channel,
      connectionName: name,
      onFailure: () => {
        failures += 1;
      },
    });
    const other = openBus({ channel });
    await Promise.all([dropped.bus.ready(), other.bus.ready()]);
    const admin = new Redis(redisUrl);
    try {
      // Only this bus's connections: other tests' processes share this Redis.
      const list = (await admin.client('LIST')) as string;
      const ids = list
        .split('\n')
        .filter((line) => line.includes(` name=${name} `))
        .map((line) => /id=(\d+)/.exec(line)?.[1]);
      expect(ids.length).toBe(2);
      for (const id of ids) await admin.client('KILL', 'ID', id!);
    } finally {
      admin.disconnect();
    }
    await vi.waitFor(() => {
      expect(dropped.seen).toContain(ConfigSubject.all);
      expect(other.seen).toContain(ConfigSubject.all);
    }, eventually);
    await other.bus.publish('key_after');
    await vi.waitFor(() => expect(dropped.seen).toContain('key_after'), eventually);
    // The subscriber's lost connection was counted, once (the publisher sent nothing while it was down).
    expect(failures).toBe(1);
  });
});

describeInvalidationBusConformance('Redis pub/sub', {
  open: (channel) => openBus({ channel }).bus,
  openUnreachable: (channel, onFailure) =>
    // Port 9 (discard) on loopback: nothing listens there on these machines.
    openBus({ channel, url: 'redis://127.0.0.1:9', onFailure }).bus,
});
