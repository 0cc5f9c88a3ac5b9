/**
 * Wallet reservations leased in chunks, for workers sharing one SQLite file.
 *
 * Without leases every priced request wrote its reservation to the wallet row (and its owner's hold) before it ran:
 * a write transaction on the serving thread per request, taking turns at the file's one write lock with the other
 * workers' writes. With a lease, a worker reserves a chunk under its owner once (`LedgerStore.reserve`) and takes
 * its requests' reservations out of the chunk in memory, in one synchronous step each, so no two of its requests can
 * both take the last of it. Across workers nothing more is admitted than the wallet covers: every worker admits only
 * against what it leased, and leasing is the store's atomic conditional reservation.
 *
 * - A request's reservation is `used` of the lease until the request ends. Its settlement then releases what it
 *   spent (at most what it reserved) from the owner's hold and the wallet's `reserved`, in the transaction that
 *   charges it: the spent money leaves the lease with the charge, and the rest of the reservation stays leased for
 *   the next request (`settled`).
 * - A lease grows when a request does not fit: by what is missing plus `headroomRequests` requests of its size, or,
 *   when the wallet cannot cover that, by exactly what is missing; when it cannot cover even that, the request is
 *   refused here. It also grows, in the background, once it has room for fewer than two more requests of the size
 *   just taken, so that requests rarely wait for the store (and `BillingService` tries once more after a settle round, in which every worker gives back what
 *   it does not use: `returnUnused`).
 * - Every `returnIntervalMs` a worker gives back what it leased beyond twice the most it used since the last time,
 *   so an idle worker holds nothing and a busy one does not lease again for every request.
 * - A worker that dies leaves its leases in its owner's holds: `ReservationOwnerKeeper` releases them. When this
 *   process's owner changes (it was late and may have been swept, or a failed store call retired it), its leases
 *   under the old owner end: what no request uses goes back from the old owner's hold at once, and each request in
 *   flight under it gives back its whole reservation when it ends. A hold the sweep emptied already gives nothing
 *   (the store's release from a hold takes only what the hold has), and what the old hold has beyond what was
 *   counted here (a call that committed before its connection broke) goes when the old owner is swept.
 *
 * (Written here: no library keeps per-tenant quota leases against our store's reservations.)
 */
import type { Logger } from '../observability/logger.js';
import type { LedgerStore, Nano } from '../store/ledger-store.js';

/** Options of `ReservationLeases`. */
export interface ReservationLeasesOptions {
  /** Requests of the size of the one that did not fit added to a growing lease. Default 8. */
  headroomRequests?: number;
  /** How often unused leases are given back, ms. Default 250. */
  returnIntervalMs?: number;
  logger: Logger;
  /**
   * Called when the store fails a lease's growth or return: the owner's hold may then differ from the leases here
   * (the call may have committed before its connection broke). See `ReservationOwnerKeeper.retire`.
   */
  onStoreFailure?: () => void;
  /** Called for every store write that reserves funds for a lease (a metric: how rarely the store is asked). */
  onLeaseGrown?: () => void;
}

/** A lease with room for fewer than this many more requests of the size just taken grows in the background. */
const LOW_WATER_REQUESTS = 2n;

/** One tenant's lease under the current owner. */
interface Lease {
  /** Held in the store under the owner (never less than here: the store is released after this is lowered). */
  leased: Nano;
  /** Taken by requests in flight. */
  used: Nano;
  /** The most `used` since the last return. */
  peak: Nano;
  /** A store reservation growing the lease, which other requests of the tenant wait for. */
  growing: Promise<void> | undefined;
}

/** What a reservation taken from a lease needs to be ended: its tenant, amount and the owner it was leased under. */
export interface LeasedReservation {
  tenantId: string;
  amount: Nano;
  owner?: string;
  /** Set by `settled`: what its settlement releases in the store. A reservation ends here once. */
  settledRelease?: Nano;
}

/** Per-tenant wallet leases of this process (see the module comment). */
export class ReservationLeases {
  private readonly headroomRequests: bigint;
  private readonly returnIntervalMs: number;
  private readonly logger: Logger;
  private readonly onStoreFailure: () => void;
  private readonly onLeaseGrown: (() => void) | undefined;
  private readonly leases = new Map<string, Lease>();
  /** The owner the leases are held under; they are forgotten when `owner()` changes. */
  private leasedUnder: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  /**
   * Gives-back still writing to the store. A full return waits for them too: one started by the periodic return a
   * moment before has already lowered its lease here, and its funds are not back in the wallet until it commits.
   */
  private readonly givingBack = new Set<Promise<void>>();

  constructor(
    private readonly store: Pick<LedgerStore, 'reserve' | 'release'>,
    private readonly owner: () => string | undefined,
    options: ReservationLeasesOptions,
  ) {
    this.headroomRequests = BigInt(Math.max(0, Math.trunc(options.headroomRequests ?? 8)));
    this.returnIntervalMs = options.returnIntervalMs ?? 250;
    this.logger = options.logger;
    this.onStoreFailure = options.onStoreFailure ?? (() => undefined);
    this.onLeaseGrown = options.onLeaseGrown;
  }

  /** Starts giving back unused leases every `returnIntervalMs`. */
  start(): void {
    this.timer ??= setInterval(() => void this.returnUnused(true), this.returnIntervalMs);
    this.timer.unref();
  }

  /** Stops the timer and gives back every unused lease. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.returnUnused(false);
  }

  /** Leased and used amounts of a tenant, for tests and metrics. */
  lease(tenantId: string): { leased: Nano; used: Nano } {
    const lease = this.current().get(tenantId);
    return { leased: lease?.leased ?? 0n, used: lease?.used ?? 0n };
  }

  /**
   * Takes `amount` out of the tenant's lease, growing it first when it does not fit. Resolves with the owner the
   * lease is held under, or undefined when the wallet cannot cover the request (nothing is taken then); rejects with
   * the store's error when the lease had to grow and the store failed (nothing is taken then either).
   */
  async reserve(tenantId: string, amount: Nano): Promise<string | undefined> {
    for (;;) {
      const owner = this.owner();
      if (owner === undefined) return undefined;
      const leases = this.current();
      let lease = leases.get(tenantId);
      if (lease === undefined) {
        lease = { leased: 0n, used: 0n, peak: 0n, growing: undefined };
        leases.set(tenantId, lease);
      }
      if (lease.leased - lease.used >= amount) {
        lease.used += amount;
        if (lease.used > lease.peak) lease.peak = lease.used;
        // Running low: grow it now, in the background, so the next requests do not wait for the store.
        if (lease.growing === undefined && lease.leased - lease.used < amount * LOW_WATER_REQUESTS) {
          this.growing(tenantId, lease, owner, 0n, amount).catch((error: unknown) => {
            // The requests that need the growth try the store again themselves.
            this.logger.error({ err: error, tenantId }, 'could not lease wallet funds');
          });
        }
        return owner;
      }
      if (lease.growing !== undefined) {
        await lease.growing;
        continue;
      }
      if (!(await this.growing(tenantId, lease, owner, amount - (lease.leased - lease.used), amount))) {
        return undefined;
      }
    }
  }

  /** Gives back a reservation whose request spent nothing (it failed before any usage). */
  release(reservation: LeasedReservation): void {
    const { owner } = reservation;
    if (owner === undefined || owner === this.leasedUnder || reservation.settledRelease !== undefined) {
      this.settled(reservation, 0n);
      return;
    }
    // Leased under an earlier owner: no lease here takes it back, so its hold gives it back.
    reservation.settledRelease = reservation.amount;
    void this.giveBack(reservation.tenantId, reservation.amount, owner);
  }

  /**
   * Ends a reservation when its request is settled: its amount is no longer used, and what it spent (at most its
   * amount) leaves the lease. Returns the amount its settlement releases from the owner's hold and the wallet.
   */
  settled(reservation: LeasedReservation, spent: Nano): Nano {
    if (reservation.settledRelease !== undefined) return reservation.settledRelease;
    if (reservation.owner !== undefined && reservation.owner !== this.leasedUnder) {
      // Leased under an earlier owner, whose leases ended: all of it leaves that owner's hold with the settlement.
      reservation.settledRelease = reservation.amount;
      return reservation.amount;
    }
    const released = spent < reservation.amount ? (spent > 0n ? spent : 0n) : reservation.amount;
    reservation.settledRelease = released;
    if (reservation.owner === undefined) return released;
    const lease = this.leases.get(reservation.tenantId);
    if (lease === undefined) return released;
    lease.used -= reservation.amount;
    lease.leased -= released;
    return released;
  }

  /**
   * Gives back unused leases to the wallet: with `keepRecent`, what each lease holds beyond twice the most it used
   * since the last return; otherwise everything unused (a billing read or a refusal elsewhere waits for this).
   * Never rejects.
   */
  async returnUnused(keepRecent = false): Promise<void> {
    // A full return is what a refusal elsewhere waits for: a lease growing now is given back once it has grown.
    if (!keepRecent) await Promise.all([...this.leases.values()].map((lease) => lease.growing));
    this.current(); // ends the leases of an owner that changed
    const owner = this.leasedUnder;
    if (owner === undefined) {
      if (!keepRecent) await Promise.all(this.givingBack);
      return;
    }
    const returns: Promise<void>[] = keepRecent ? [] : [...this.givingBack];
    for (const [tenantId, lease] of this.leases) {
      if (lease.growing !== undefined) continue;
      const keep = keepRecent ? maxOf(lease.used, 2n * lease.peak) : lease.used;
      lease.peak = lease.used;
      const unused = lease.leased - keep;
      if (unused <= 0n) {
        if (lease.leased === 0n) this.leases.delete(tenantId);
        continue;
      }
      // Lowered here first: the store then holds more than this process counts on, never less.
      lease.leased -= unused;
      returns.push(this.giveBack(tenantId, unused, owner));
    }
    await Promise.all(returns);
  }

  /** The leases under the current owner; those under an earlier one end here (see the module comment). */
  private current(): Map<string, Lease> {
    const owner = this.owner();
    if (owner !== this.leasedUnder) {
      const previous = this.leasedUnder;
      if (previous !== undefined) {
        for (const [tenantId, lease] of this.leases) {
          const unused = lease.leased - lease.used;
          if (unused > 0n) void this.giveBack(tenantId, unused, previous);
        }
      }
      this.leases.clear();
      this.leasedUnder = owner;
    }
    return this.leases;
  }

  /**
   * Releases `amount` from `owner`'s hold and the wallet; never rejects. What fails stays in the hold until the
   * owner is swept; a failure under the owner still current then also retires it (`onStoreFailure`), since the
   * release may have committed. (An earlier owner's leases ended already.)
   */
  private giveBack(tenantId: string, amount: Nano, owner: string): Promise<void> {
    const given = this.store
      .release(tenantId, amount, owner)
      .catch((error: unknown) => {
        this.logger.error({ err: error, tenantId }, 'could not give back an unused wallet lease');
        if (owner === this.leasedUnder) this.onStoreFailure();
      })
      .finally(() => this.givingBack.delete(given));
    this.givingBack.add(given);
    return given;
  }

  /**
   * Grows the lease (see `grow`), with the other requests of the tenant waiting for it. Rejects when the store fails:
   * that is not a wallet that cannot cover a request, and must not be answered as one.
   */
  private growing(tenantId: string, lease: Lease, owner: string, missing: Nano, amount: Nano): Promise<boolean> {
    const grown = this.grow(tenantId, lease, owner, missing, amount);
    grown.catch(() => this.onStoreFailure());
    lease.growing = grown.then(
      () => undefined,
      () => undefined,
    );
    return grown.finally(() => {
      lease.growing = undefined;
    });
  }

  /**
   * Reserves `missing` plus `headroomRequests` requests of `amount` under the owner, or when the wallet cannot cover
   * that and something is missing, exactly what is missing; adds what it got to the lease.
   */
  private async grow(tenantId: string, lease: Lease, owner: string, missing: Nano, amount: Nano): Promise<boolean> {
    const withHeadroom = missing + amount * this.headroomRequests;
    if (withHeadroom > missing && (await this.store.reserve(tenantId, withHeadroom, owner))) {
      this.add(tenantId, lease, owner, withHeadroom);
      return true;
    }
    if (missing > 0n && (await this.store.reserve(tenantId, missing, owner))) {
      this.add(tenantId, lease, owner, missing);
      return true;
    }
    return false;
  }

  /** Adds a grown amount to the lease, or gives it back when the owner changed while the store reserved it. */
  private add(tenantId: string, lease: Lease, owner: string, amount: Nano): void {
    this.onLeaseGrown?.();
    if (owner === this.leasedUnder) lease.leased += amount;
    else void this.giveBack(tenantId, amount, owner);
  }
}

function maxOf(a: Nano, b: Nano): Nano {
  return a > b ? a : b;
}
