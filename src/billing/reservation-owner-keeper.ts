/**
 * Wallet reservations that outlive their process. With several processes on one store (cluster mode, or workers on
 * one SQLite file) a reservation is a share of the wallet's `reserved`; a process killed with requests in flight
 * would leave their shares reserved, and the tenant's spendable funds lower, for good.
 *
 * So each such process reserves under an owner id (`BillingService.reservationOwner`), which adds every
 * reservation to the owner's hold in the same step (`LedgerStore.reserve`), and keeps the owner alive with a
 * heartbeat. Every heartbeat also sweeps: the holds of owners silent for longer than the timeout are released
 * (`LedgerStore.sweepReservationOwners`), whichever process notices first. A dead owner's settlements that arrive
 * later (its journal drained by a replacement, its stream checkpoints recovered) find no hold and release nothing
 * twice.
 *
 * Each heartbeat renews the owner's row (`renewReservationOwner`), atomically with sweeps. A process whose heartbeats
 * stalled for longer than the timeout (a store outage, a stopped event loop) keeps its owner if no process swept it
 * meanwhile (its holds are intact, its requests in flight stay reserved); if one did, the renewal finds no row, and
 * it takes a new owner id, so that its new reservations are not released by the releases of the ones the sweep
 * already released.
 *
 * A process also takes a new owner id after a store call on its holds failed (`retire`): a reservation or release
 * whose connection broke may have committed or not, so the owner's hold may no longer match what the process counts.
 * The old owner beats on while requests reserved under it are in flight (a long stream's reservation must stay in the
 * wallet's `reserved` until the stream is settled, or other requests could spend the same funds); once the last has
 * ended it beats no more and is swept after the timeout, which gives back whatever its hold really held.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../observability/logger.js';
import type { LedgerStore } from '../store/ledger-store.js';

/** Options of `ReservationOwnerKeeper`. */
export interface ReservationOwnerKeeperOptions {
  /** How long an owner may go without a heartbeat before it is swept as dead, ms. */
  timeoutMs: number;
  logger: Logger;
  /** Time source, epoch ms. Default `Date.now`. */
  now?: () => number;
  /**
   * Every owner runs on this host (embedded mode: workers on one SQLite file): an owner whose process has exited is
   * swept at the next heartbeat, without waiting for its timeout. Default false.
   */
  sameHost?: boolean;
  /** Called when this process takes a new owner id, with the reason (see the module comment). */
  onOwnerChange?: (reason: 'late' | 'retired') => void;
}

/** Heartbeats per timeout: a live owner misses several before it counts as dead. */
const HEARTBEATS_PER_TIMEOUT = 6;

/** Keeps this process's reservation owner alive and sweeps the dead ones. */
export class ReservationOwnerKeeper {
  private readonly timeoutMs: number;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly sameHost: boolean;
  private readonly onOwnerChange: (reason: 'late' | 'retired') => void;
  private owner: string;
  /** Whether `owner` has a row in the store (registered by a first heartbeat). */
  private registered = false;
  /** Set by `retire`: the next heartbeat takes a new owner id. */
  private retiring = false;
  /** Retired owners that still beat: requests reserved under them are in flight. */
  private readonly retiredInUse = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly store: Pick<
      LedgerStore,
      'heartbeatReservationOwner' | 'renewReservationOwner' | 'sweepReservationOwners' | 'listReservationOwners'
    >,
    private readonly billing: {
      reservationOwner: string | undefined;
      /** Requests in flight whose reservations are in `owner`'s hold. Default: none. */
      reservationsInFlight?(owner: string): number;
    },
    options: ReservationOwnerKeeperOptions,
  ) {
    this.timeoutMs = options.timeoutMs;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.sameHost = options.sameHost ?? false;
    this.onOwnerChange = options.onOwnerChange ?? (() => undefined);
    this.owner = newOwnerId();
  }

  /** The owner id reservations are taken under now. */
  get ownerId(): string {
    return this.owner;
  }

  /** Registers the owner, sweeps once, and from then on beats every `timeoutMs / 6`. Reservations get the owner. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.tick(), Math.max(1, Math.floor(this.timeoutMs / HEARTBEATS_PER_TIMEOUT)));
    this.timer.unref();
  }

  /** Stops beating (the owner is swept once its timeout passes; by then its requests have settled). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /**
   * The store failed a call on this owner's holds, so they may differ from what this process counts: the next
   * heartbeat takes a new owner id, and the old owner is swept once its timeout passes (see the module comment).
   */
  retire(): void {
    this.retiring = true;
  }

  /** One heartbeat and sweep; what the timer runs (exposed for tests). */
  tick(): Promise<void> {
    this.running ??= this.beat().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async beat(): Promise<void> {
    const now = this.now();
    try {
      if (this.retiring) {
        // A failed store call left this owner's holds in doubt: new reservations go under a new owner, and the old
        // one beats on while requests reserved under it are in flight; its sweep then settles the doubt.
        this.retiredInUse.add(this.owner);
        this.changeOwner('retired');
        this.retiring = false;
      }
      if (this.registered && !(await this.store.renewReservationOwner(this.owner, now))) {
        // Swept as dead while its heartbeats stalled (a store outage, a stopped event loop): its holds were released,
        // so new reservations go under a new owner, which no release of an old reservation can take from.
        this.changeOwner('late');
      }
      if (!this.registered) {
        await this.store.heartbeatReservationOwner(this.owner, now);
        this.registered = true;
      }
      this.billing.reservationOwner = this.owner;
      for (const owner of this.retiredInUse) {
        const inFlight = (this.billing.reservationsInFlight?.(owner) ?? 0) > 0;
        if (!inFlight || !(await this.store.renewReservationOwner(owner, now))) this.retiredInUse.delete(owner);
      }
      const exited = this.sameHost ? exitedOwners(await this.store.listReservationOwners()) : [];
      const swept = await this.store.sweepReservationOwners(now - this.timeoutMs, exited);
      if (swept.owners > 0) {
        this.logger.warn(
          { owners: swept.owners, released: swept.released.toString() },
          'released the wallet reservations of gateway processes that stopped',
        );
      }
    } catch (error: unknown) {
      this.logger.error({ err: error }, 'reservation owner heartbeat failed');
      if (this.billing.reservationOwner === undefined) throw error;
    }
  }

  private changeOwner(reason: 'late' | 'retired'): void {
    const previous = this.owner;
    this.owner = newOwnerId();
    this.registered = false;
    this.onOwnerChange(reason);
    this.logger.warn(
      { previous, owner: this.owner },
      reason === 'late'
        ? 'this process was swept as dead while its heartbeats stalled: reserving under a new owner'
        : 'a store call on reservation holds failed: reserving under a new owner',
    );
  }
}

/** `host:pid:random`: unique per process start, and tells an operator (and `exitedOwners`) which process it was. */
function newOwnerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/** The owners among `owners` started on this host by a process that no longer runs. */
export function exitedOwners(owners: readonly string[]): string[] {
  const prefix = `${hostname()}:`;
  return owners.filter((owner) => {
    if (!owner.startsWith(prefix)) return false;
    const pid = Number(owner.slice(prefix.length).split(':')[0]);
    return Number.isInteger(pid) && pid > 0 && !processRuns(pid);
  });
}

function processRuns(pid: number): boolean {
  try {
    // Signal 0 checks that the process exists without signalling it.
    process.kill(pid, 0);
    return true;
  } catch (error: unknown) {
    // EPERM: it exists, owned by someone else.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
