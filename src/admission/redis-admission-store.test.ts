import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { describeAdmissionStoreConformance } from './admission-store-conformance.js';
import { createRedisAdmissionStore, type RedisAdmissionStore } from './redis-admission-store.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const prefix = `tgtest:${process.pid}:${Math.random().toString(36).slice(2, 10)}:`;

/** Deletes every key under `keyPrefix` (never FLUSHALL: the Redis is shared). */
async function deleteKeys(keyPrefix: string): Promise<void> {
  const client = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    await client.quit();
  }
}

const clock = new VirtualClock(Date.UTC(2030, 0, 1, 9, 0, 0));
describeAdmissionStoreConformance('redis', {
  clock,
  open: () => createRedisAdmissionStore({ redis: REDIS_URL, keyPrefix: `${prefix}conformance:`, clock }),
  cleanup: () => deleteKeys(`${prefix}conformance:`),
});

describe('RedisAdmissionStore', () => {
  const inspector = new Redis(REDIS_URL);
  const stores: RedisAdmissionStore[] = [];
  afterAll(async () => {
    for (const store of stores) await store.close();
    await inspector.quit();
    await deleteKeys(prefix);
  });
  const open = async (keyPrefix: string, withClock?: VirtualClock): Promise<RedisAdmissionStore> => {
    const store = await createRedisAdmissionStore({ redis: REDIS_URL, keyPrefix, clock: withClock });
    stores.push(store);
    return store;
  };

  it('keeps every key of a request under the tenant hash tag, with an expiry', async () => {
    const keyPrefix = `${prefix}tags:`;
    const store = await open(keyPrefix);
    const result = await store.acquire({
      tenantId: 'ten_abc',
      scopes: [
        { id: 'tenant:ten_abc', limits: { rpm: 10, tpm: 1000, tpd: 10_000, concurrency: 5 } },
        { id: 'key:key_1', limits: { rpm: 5 } },
        { id: 'key:key_1:model:m', limits: { tpm: 500 } },
      ],
      tokens: 100,
      leaseMs: 60_000,
    });
    expect(result.ok).toBe(true);
    const keys = (await inspector.keys(`${keyPrefix}*`)).sort();
    expect(keys).toEqual(
      [
        'c:tenant:ten_abc',
        'd:tenant:ten_abc',
        'r:key:key_1',
        'r:tenant:ten_abc',
        't:key:key_1:model:m',
        't:tenant:ten_abc',
      ].map((suffix) => `${keyPrefix}{ten_abc}:${suffix}`),
    );
    for (const key of keys) {
      const ttl = await inspector.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(86_400_000 + 3_600_000);
    }
    expect(await inspector.pttl(`${keyPrefix}{ten_abc}:r:tenant:ten_abc`)).toBeLessThanOrEqual(62_000);
    expect(await inspector.pttl(`${keyPrefix}{ten_abc}:c:tenant:ten_abc`)).toBeGreaterThan(60_000);
  });

  it('reads time from Redis TIME when no clock is given', async () => {
    const store = await open(`${prefix}time:`);
    const scope = { id: 'tenant:ten_time', limits: { rpm: 3 } };
    const acquire = () => store.acquire({ tenantId: 'ten_time', scopes: [scope], tokens: 0, leaseMs: 1000 });
    const before = Date.now();
    const first = await acquire();
    const after = Date.now();
    if (!first.ok) throw new Error('expected an admission');
    // Redis runs on this machine: its TIME is this clock, to the millisecond (allow a little for truncation).
    expect(first.ticket.at).toBeGreaterThanOrEqual(before - 5);
    expect(first.ticket.at).toBeLessThanOrEqual(after + 5);
    await acquire();
    await acquire();
    const refused = await acquire();
    expect(refused).toMatchObject({ ok: false, reason: 'rpm' });
    if (refused.ok) return;
    expect(refused.retryAfterMs).toBeGreaterThan(60_000 - 1000);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(61_000);
  });

  it('rejects a non-integer token count before reaching Redis, without entering an outage', async () => {
    const store = await open(`${prefix}errors:`);
    await expect(
      store.acquire({ tenantId: 'ten_e', scopes: [{ id: 'x', limits: { rpm: 1 } }], tokens: 1.5, leaseMs: 1 }),
    ).rejects.toThrow(RangeError);
    expect(store.unavailable).toBe(false);
  });
});
