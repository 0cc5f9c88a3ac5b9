import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { topUpFixture } from '../store/ledger-fixtures.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import { exitedOwners, ReservationOwnerKeeper } from './reservation-owner-keeper.js';

async function walletStore() {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const tenant = await store.createTenant('owners');
  await store.addWalletTransaction(topUpFixture(tenant.id, 100n));
  return { store, tenantId: tenant.id };
}

/**
 * A keeper on a virtual clock (6 s timeout) that registered its owner and stopped beating: each test then moves the
 * clock and beats with `tick` itself.
 */
async function stoppedKeeper() {
  const { store, tenantId } = await walletStore();
  const clock = { now: 1_000_000 };
  const billing = { reservationOwner: undefined as string | undefined };
  const changes: string[] = [];
  const keeper = new ReservationOwnerKeeper(store, billing, {
    timeoutMs: 6_000,
    logger: pino({ level: 'silent' }),
    now: () => clock.now,
    onOwnerChange: (reason) => changes.push(reason),
  });
  await keeper.start();
  await keeper.stop();
  return { store, tenantId, clock, billing, keeper, changes };
}

describe('ReservationOwnerKeeper', () => {
  it('gives reservations an owner, keeps it alive, and sweeps a silent one', async () => {
    const { store, tenantId } = await walletStore();
    let now = 1_000_000;
    const logger = pino({ level: 'silent' });
    const first = { reservationOwner: undefined as string | undefined };
    const second = { reservationOwner: undefined as string | undefined };
    const keeperA = new ReservationOwnerKeeper(store, first, { timeoutMs: 6_000, logger, now: () => now });
    const keeperB = new ReservationOwnerKeeper(store, second, { timeoutMs: 6_000, logger, now: () => now });
    await keeperA.start();
    await keeperB.start();
    expect(first.reservationOwner).toBe(keeperA.ownerId);
    expect(second.reservationOwner).toBe(keeperB.ownerId);
    expect(keeperA.ownerId).not.toBe(keeperB.ownerId);
    await keeperA.stop();
    await keeperB.stop();
    expect(await store.reserve(tenantId, 30n, first.reservationOwner)).toBe(true);
    expect(await store.reserve(tenantId, 20n, second.reservationOwner)).toBe(true);

    // B beats within the timeout, A does not: B's next beat sweeps A's hold, and only A's.
    now += 5_000;
    await keeperB.tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(50n);
    now += 2_000;
    await keeperB.tick();
    expect(second.reservationOwner).toBe(keeperB.ownerId);
    expect((await store.getWallet(tenantId))?.reserved).toBe(20n);
  });

  it('keeps its owner after a stall of a whole timeout when no process swept it: its reservations stay', async () => {
    const { store, tenantId, clock, billing, keeper, changes } = await stoppedKeeper();
    const owner = billing.reservationOwner!;
    expect(await store.reserve(tenantId, 30n, owner)).toBe(true);
    // Silent for longer than the timeout (a store outage for every process, a stopped event loop), but no other
    // process swept it: its renewal finds its row, and its own sweep then finds it alive.
    clock.now += 6_001;
    await keeper.tick();
    expect(billing.reservationOwner).toBe(owner);
    expect(changes).toEqual([]);
    expect((await store.getWallet(tenantId))?.reserved).toBe(30n);
  });

  it('reserves under a new owner when another process swept it while its heartbeats stalled', async () => {
    const { store, tenantId, clock, billing, keeper, changes } = await stoppedKeeper();
    const before = billing.reservationOwner!;
    expect(await store.reserve(tenantId, 30n, before)).toBe(true);
    // Another process, beating on time, sweeps the silent owner.
    clock.now += 6_001;
    const other = { reservationOwner: undefined as string | undefined };
    const sweeper = new ReservationOwnerKeeper(store, other, {
      timeoutMs: 6_000,
      logger: pino({ level: 'silent' }),
      now: () => clock.now,
    });
    await sweeper.tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
    // The stalled process's next beat finds its owner gone and takes a new one.
    await keeper.tick();
    expect(billing.reservationOwner).not.toBe(before);
    expect(changes).toEqual(['late']);
    // A late release of the swept reservation releases nothing of the new owner's.
    expect(await store.reserve(tenantId, 40n, billing.reservationOwner)).toBe(true);
    await store.release(tenantId, 30n, before);
    expect((await store.getWallet(tenantId))?.reserved).toBe(40n);
    await sweeper.stop();
  });

  it('reserves under a new owner after a failed store call, and the old hold is swept after the timeout', async () => {
    const { store, tenantId, clock, billing, keeper, changes } = await stoppedKeeper();
    const before = billing.reservationOwner!;
    // A reservation whose connection broke after the commit: held in the store, counted by no request.
    expect(await store.reserve(tenantId, 30n, before)).toBe(true);
    keeper.retire();
    clock.now += 1_000;
    await keeper.tick();
    const after = billing.reservationOwner!;
    expect(after).not.toBe(before);
    expect(changes).toEqual(['retired']);
    expect((await store.getWallet(tenantId))?.reserved).toBe(30n);
    // Once: the next beats keep the new owner.
    clock.now += 1_000;
    await keeper.tick();
    expect(billing.reservationOwner).toBe(after);
    expect(changes).toEqual(['retired']);
    // The old owner beats no more: swept once its last beat is a timeout old, while the new one lives on.
    expect(await store.reserve(tenantId, 5n, after)).toBe(true);
    clock.now += 4_500;
    await keeper.tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(5n);
    expect(billing.reservationOwner).toBe(after);
  });

  it('keeps a retired owner alive while requests reserved under it are in flight, then lets it be swept', async () => {
    const { store, tenantId, clock, billing, keeper } = await stoppedKeeper();
    const inFlight = new Map<string, number>();
    const counted = Object.assign(billing, { reservationsInFlight: (owner: string) => inFlight.get(owner) ?? 0 });
    const before = counted.reservationOwner!;
    // A long stream's reservation under the owner, then a store call on its holds fails.
    expect(await store.reserve(tenantId, 30n, before)).toBe(true);
    inFlight.set(before, 1);
    keeper.retire();
    clock.now += 1_000;
    await keeper.tick();
    const after = counted.reservationOwner!;
    expect(after).not.toBe(before);
    // Far past the timeout, beating every second: the stream's 30 stay reserved, so no other request can spend them.
    for (let beat = 0; beat < 20; beat++) {
      clock.now += 1_000;
      await keeper.tick();
    }
    expect((await store.getWallet(tenantId))?.reserved).toBe(30n);
    expect(await store.listReservationOwners(clock.now)).toEqual(expect.arrayContaining([before, after]));
    // The stream ended: the old owner beats no more, and once its last beat is a timeout old its hold is swept (a
    // settlement would have released it already; here it gives back what a failed call left in doubt).
    inFlight.delete(before);
    clock.now += 1_000;
    await keeper.tick();
    expect(await store.listReservationOwners(clock.now)).toEqual([after]);
    clock.now += 6_000;
    await keeper.tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
  });

  it('sweeps at once the owner of a process of this host that has exited (embedded mode)', async () => {
    const { store, tenantId } = await walletStore();
    const exited = spawnSync(process.execPath, ['-e', '']).pid;
    const gone = `${hostname()}:${exited}:0000`;
    const elsewhere = `another-host:${exited}:0000`;
    expect(exitedOwners([gone, elsewhere, `${hostname()}:${process.pid}:0000`])).toEqual([gone]);
    // Its heartbeat is fresh: only the exit tells it is gone.
    await store.heartbeatReservationOwner(gone, 1_000_000);
    expect(await store.reserve(tenantId, 30n, gone)).toBe(true);
    const billing = { reservationOwner: undefined as string | undefined };
    const options = { timeoutMs: 60_000, logger: pino({ level: 'silent' }), now: () => 1_000_000 };
    await new ReservationOwnerKeeper(store, billing, options).tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(30n);
    await new ReservationOwnerKeeper(store, billing, { ...options, sameHost: true }).tick();
    expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
  });
});
