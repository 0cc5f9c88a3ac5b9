import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { temporaryDirectory } from '../../test/support/temporary-directory.js';
import { settlementOf, topUpFixture, usageEventFixture } from '../store/ledger-fixtures.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite-store.js';
import { ReservationLeases } from './reservation-leases.js';

const logger = pino({ level: 'silent' });

/** Two stores on one SQLite file (two workers), a tenant whose wallet holds `funds`, and an owner each. */
async function twoWorkers(funds: bigint) {
  const path = join(temporaryDirectory('tollgate-leases-'), 'tollgate.db');
  const stores: SqliteStore[] = [openSqliteStore(path), openSqliteStore(path)];
  await stores[0]!.migrate();
  const tenant = await stores[0]!.createTenant('leases');
  await stores[0]!.addWalletTransaction(topUpFixture(tenant.id, funds));
  const owners = ['worker-a', 'worker-b'];
  const leases = stores.map((store, index) => new ReservationLeases(store, () => owners[index], { logger }));
  const wallet = async () => (await stores[0]!.getWallet(tenant.id))!;
  return { stores, leases, tenantId: tenant.id, wallet, close: () => Promise.all(stores.map((each) => each.close())) };
}

describe('ReservationLeases', () => {
  it('admits no more through two workers than the wallet covers, and all of it once unused leases are back', async () => {
    const { leases, tenantId, wallet, close } = await twoWorkers(20n);
    const first = await Promise.all(Array.from({ length: 60 }, (_, index) => leases[index % 2]!.reserve(tenantId, 1n)));
    const admitted = first.filter((owner) => owner !== undefined).length;
    expect(admitted).toBeLessThanOrEqual(20);
    const used = () => leases.reduce((sum, lease) => sum + lease.lease(tenantId).used, 0n);
    expect(used()).toBe(BigInt(admitted));
    // What the workers leased is reserved in the wallet: never more than it holds.
    const leased = leases.reduce((sum, lease) => sum + lease.lease(tenantId).leased, 0n);
    expect((await wallet()).reserved).toBe(leased);
    expect(leased).toBeLessThanOrEqual(20n);

    // A settle round: each gives back what it does not use, and the refused can have the rest, exactly.
    await Promise.all(leases.map((lease) => lease.returnUnused()));
    expect((await wallet()).reserved).toBe(BigInt(admitted));
    const second = await Promise.all(
      Array.from({ length: 60 - admitted }, (_, index) => leases[index % 2]!.reserve(tenantId, 1n)),
    );
    expect(admitted + second.filter((owner) => owner !== undefined).length).toBe(20);
    expect(used()).toBe(20n);
    expect(await leases[0]!.reserve(tenantId, 1n)).toBeUndefined();
    await close();
  });

  it('writes to the store when a lease grows or goes back, not per request, and keeps the store in step', async () => {
    const { stores, leases, tenantId, wallet, close } = await twoWorkers(1_000_000n);
    const lease = leases[0]!;
    const reserve = vi.spyOn(stores[0]!, 'reserve');
    const release = vi.spyOn(stores[0]!, 'release');
    let spent = 0n;
    for (let request = 0; request < 100; request++) {
      // Four in flight at a time, each reserving 100 and spending 30.
      const owners = await Promise.all([0, 1, 2, 3].map(() => lease.reserve(tenantId, 100n)));
      expect(owners).toEqual(['worker-a', 'worker-a', 'worker-a', 'worker-a']);
      const settlements = owners.map((owner, index) => {
        const reservation = { tenantId, amount: 100n, owner };
        const released = lease.settled(reservation, 30n);
        expect(released).toBe(30n);
        const event = usageEventFixture({ requestId: `req_${request}_${index}`, tenantId, amount: 30n });
        return settlementOf(event, { reservation: { tenantId, amount: released, owner: owner! } });
      });
      spent += 120n;
      await stores[0]!.settle(settlements);
      // The wallet reserves exactly what the lease holds: the spent part left with each charge.
      expect((await wallet()).reserved).toBe(lease.lease(tenantId).leased);
    }
    // 400 requests; the spent 30 of each leaves the lease, which grows again by 8 requests' worth when it runs
    // short: one store write per ~27 requests instead of one per request.
    expect(reserve.mock.calls.length).toBeGreaterThan(0);
    expect(reserve.mock.calls.length).toBeLessThanOrEqual(400 / 20);
    expect(release).not.toHaveBeenCalled();
    expect((await wallet()).balance).toBe(1_000_000n - spent);
    await lease.stop();
    expect(lease.lease(tenantId)).toEqual({ leased: 0n, used: 0n });
    expect((await wallet()).reserved).toBe(0n);
    await close();
  });

  it('grows a lease running low in the background, before a request has to wait for it', async () => {
    const { stores, leases, tenantId, wallet, close } = await twoWorkers(1_000n);
    const lease = leases[0]!;
    const reserve = vi.spyOn(stores[0]!, 'reserve');
    // The first grows it to 10 + 8 × 10; the eighth leaves room for one more, and starts growing it by 80.
    for (let index = 0; index < 8; index++) expect(await lease.reserve(tenantId, 10n)).toBe('worker-a');
    expect(reserve).toHaveBeenCalledTimes(2);
    await vi.waitFor(async () => expect((await wallet()).reserved).toBe(170n));
    expect(lease.lease(tenantId)).toEqual({ leased: 170n, used: 80n });
    for (let index = 0; index < 7; index++) expect(await lease.reserve(tenantId, 10n)).toBe('worker-a');
    expect(reserve).toHaveBeenCalledTimes(2);
    await close();
  });

  it('keeps twice the recent peak on a periodic return, and ends a reservation once', async () => {
    const { leases, tenantId, wallet, close } = await twoWorkers(1_000n);
    const lease = leases[0]!;
    const reservations = [];
    for (let index = 0; index < 3; index++) {
      const owner = await lease.reserve(tenantId, 10n);
      reservations.push({ tenantId, amount: 10n, owner: owner! });
    }
    // Grown once by 10 + 8 × 10 = 90, then by what was missing: 3 in use.
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 30n });
    for (const reservation of reservations.slice(1)) lease.release(reservation);
    lease.release(reservations[1]!);
    expect(lease.lease(tenantId).used).toBe(10n);
    await lease.returnUnused(true);
    // The peak since the last return was 30: 60 kept.
    expect(lease.lease(tenantId).leased).toBe(60n);
    expect((await wallet()).reserved).toBe(60n);
    await lease.returnUnused(true);
    // The peak since then was 10: 20 kept.
    expect((await wallet()).reserved).toBe(20n);
    expect(lease.settled(reservations[0]!, 4n)).toBe(4n);
    expect(lease.settled(reservations[0]!, 4n)).toBe(4n);
    expect(lease.lease(tenantId)).toEqual({ leased: 16n, used: 0n });
    await close();
  });

  it('has a full return wait for a periodic return still writing, so the funds are back when it resolves', async () => {
    const { stores, leases, tenantId, wallet, close } = await twoWorkers(1_000n);
    const lease = leases[0]!;
    // A request that spent nothing: its lease is all unused again.
    lease.release({ tenantId, amount: 10n, owner: (await lease.reserve(tenantId, 10n))! });
    // The periodic return's store write is held up, as on a loaded machine.
    let letGo = () => {};
    const held = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    const release = stores[0]!.release.bind(stores[0]!);
    const spy = vi.spyOn(stores[0]!, 'release').mockImplementationOnce(async (...args) => {
      await held;
      return release(...args);
    });
    const periodic = lease.returnUnused(true);
    // It lowered the lease already; the funds are still reserved in the wallet.
    expect(lease.lease(tenantId).leased).toBeLessThan(80n);
    let full = false;
    const round = lease.returnUnused(false).then(() => {
      full = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(full).toBe(false);
    letGo();
    await round;
    // Resolved only once everything this process leased and does not use is back in the wallet.
    expect((await wallet()).reserved).toBe(0n);
    await periodic;
    spy.mockRestore();
    await close();
  });

  it('forgets its leases when its owner changes, and a reservation of the old owner ends without touching them', async () => {
    const { stores, tenantId, wallet, close } = await twoWorkers(1_000n);
    let owner = 'worker-a';
    const lease = new ReservationLeases(stores[0]!, () => owner, { logger });
    const old = { tenantId, amount: 10n, owner: (await lease.reserve(tenantId, 10n))! };
    expect(lease.lease(tenantId).leased).toBe(90n);
    // Swept as dead (its heartbeat stalled): the store released its holds, and it reserves under a new owner.
    await stores[0]!.sweepReservationOwners(Number.MAX_SAFE_INTEGER);
    owner = 'worker-a2';
    expect(await lease.reserve(tenantId, 10n)).toBe('worker-a2');
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 10n });
    lease.settled(old, 10n);
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 10n });
    expect((await wallet()).reserved).toBe(90n);
    await close();
  });

  it('ends the leases of an owner that was retired while alive: unused at once, in flight as each request ends', async () => {
    const { stores, tenantId, wallet, close } = await twoWorkers(1_000n);
    let owner = 'worker-a';
    const lease = new ReservationLeases(stores[0]!, () => owner, { logger });
    const settledOld = { tenantId, amount: 10n, owner: (await lease.reserve(tenantId, 10n))! };
    const failedOld = { tenantId, amount: 10n, owner: (await lease.reserve(tenantId, 10n))! };
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 20n });
    // Retired (a failed store call), not swept: the old owner's hold still has its 90.
    owner = 'worker-a2';
    expect(await lease.reserve(tenantId, 10n)).toBe('worker-a2');
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 10n });
    // The old lease's unused 70 went back at once; the two requests in flight keep their 20.
    await vi.waitFor(async () => expect((await wallet()).reserved).toBe(90n + 20n));
    // One ends having spent 4: its whole 10 leaves the old hold with its settlement, not just the 4.
    const released = lease.settled(settledOld, 4n);
    expect(released).toBe(10n);
    const event = usageEventFixture({ requestId: 'req_old_owner', tenantId, amount: 4n });
    await stores[0]!.settle([settlementOf(event, { reservation: { tenantId, amount: released, owner: 'worker-a' } })]);
    // The other fails before any usage: its 10 goes back from the old hold too.
    lease.release(failedOld);
    await vi.waitFor(async () => expect((await wallet()).reserved).toBe(90n));
    expect(await wallet()).toMatchObject({ balance: 1_000n - 4n, reserved: 90n });
    // Nothing is left for the old owner's sweep, and the new lease is untouched.
    await stores[0]!.heartbeatReservationOwner('worker-a2', Date.now());
    expect(await stores[0]!.sweepReservationOwners(0, ['worker-a'])).toEqual({ owners: 1, released: 0n });
    expect((await wallet()).reserved).toBe(90n);
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 10n });
    await close();
  });

  it('rejects a reservation when the store fails to grow the lease, and reports the failure, even in the background', async () => {
    const { stores, tenantId, wallet, close } = await twoWorkers(1_000n);
    let failures = 0;
    const lease = new ReservationLeases(stores[0]!, () => 'worker-a', {
      logger,
      onStoreFailure: () => {
        failures += 1;
      },
    });
    const reserve = vi.spyOn(stores[0]!, 'reserve').mockRejectedValueOnce(new Error('Connection terminated'));
    // Not the wallet that cannot cover it (undefined): the store's error, for a retryable answer.
    await expect(lease.reserve(tenantId, 10n)).rejects.toThrow('Connection terminated');
    expect(failures).toBe(1);
    expect(lease.lease(tenantId)).toEqual({ leased: 0n, used: 0n });
    // The store is back: the next request grows the lease.
    expect(await lease.reserve(tenantId, 10n)).toBe('worker-a');
    // A growth in the background that fails rejects nothing and is reported.
    reserve.mockRejectedValueOnce(new Error('Connection terminated'));
    for (let index = 0; index < 7; index++) expect(await lease.reserve(tenantId, 10n)).toBe('worker-a');
    await vi.waitFor(() => expect(failures).toBe(2));
    expect(lease.lease(tenantId)).toEqual({ leased: 90n, used: 80n });
    expect((await wallet()).reserved).toBe(90n);
    // A return of the unused 10 that fails is reported too: it may have committed.
    vi.spyOn(stores[0]!, 'release').mockRejectedValueOnce(new Error('Connection terminated'));
    await lease.returnUnused();
    expect(failures).toBe(3);
    await close();
  });
});
