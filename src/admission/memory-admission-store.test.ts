import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { describeAdmissionStoreConformance } from './admission-store-conformance.js';
import { MemoryAdmissionStore } from './memory-admission-store.js';

const clock = new VirtualClock(Date.UTC(2030, 0, 1, 9, 0, 0));
const shared = new MemoryAdmissionStore({ clock });

describeAdmissionStoreConformance('memory', { clock, open: async () => shared });

describe('MemoryAdmissionStore', () => {
  it('sweeps the counters of scopes that hold no usage any more', async () => {
    const sweepClock = new VirtualClock(Date.UTC(2030, 0, 1, 9, 0, 0));
    const store = new MemoryAdmissionStore({ clock: sweepClock, sweepEvery: 10 });
    for (let i = 0; i < 9; i++) {
      await store.acquire({ tenantId: 't', scopes: [{ id: `key:${i}`, limits: { rpm: 5 } }], tokens: 0, leaseMs: 1 });
    }
    expect(store.scopeCount).toBe(9);
    sweepClock.advance(62_000);
    // The 10th acquire sweeps first: the nine idle scopes go, the new one stays.
    const result = await store.acquire({
      tenantId: 't',
      scopes: [{ id: 'key:new', limits: { rpm: 5 } }],
      tokens: 0,
      leaseMs: 1,
    });
    expect(result.ok).toBe(true);
    expect(store.scopeCount).toBe(1);
  });

  it('keeps a scope whose window still counts usage through a sweep', async () => {
    const sweepClock = new VirtualClock(Date.UTC(2030, 0, 1, 9, 0, 0));
    const store = new MemoryAdmissionStore({ clock: sweepClock, sweepEvery: 3 });
    const scope = { id: 'tenant:busy', limits: { rpm: 2 } };
    await store.acquire({ tenantId: 'busy', scopes: [scope], tokens: 0, leaseMs: 1 });
    await store.acquire({ tenantId: 'busy', scopes: [scope], tokens: 0, leaseMs: 1 });
    sweepClock.advance(30_000);
    const third = await store.acquire({ tenantId: 'busy', scopes: [scope], tokens: 0, leaseMs: 1 });
    expect(third).toMatchObject({ ok: false, reason: 'rpm' });
  });

  it('uses a configurable window', async () => {
    const windowClock = new VirtualClock(10_000);
    const store = new MemoryAdmissionStore({ clock: windowClock, windowMs: 2000, bucketMs: 100 });
    const scope = { id: 'tenant:w', limits: { rpm: 3 } };
    for (let i = 0; i < 3; i++) await store.acquire({ tenantId: 'w', scopes: [scope], tokens: 0, leaseMs: 1 });
    // Taken in bucket 100 (10 000 ms / 100), back at the start of bucket 100 + 20 + 1.
    expect(await store.acquire({ tenantId: 'w', scopes: [scope], tokens: 0, leaseMs: 1 })).toMatchObject({
      ok: false,
      retryAfterMs: 2100,
    });
  });

  it('rejects a window that is not a multiple of its bucket', () => {
    expect(() => new MemoryAdmissionStore({ clock: new VirtualClock(), windowMs: 1500, bucketMs: 1000 })).toThrow(
      /multiple/,
    );
  });
});
