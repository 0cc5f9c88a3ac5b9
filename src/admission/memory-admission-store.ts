import type { Clock } from '../clock/clock.js';
import type {
  AcquireRequest,
  AcquireResult,
  AdmissionStore,
  AdmissionTicket,
  RateLimitState,
  WindowState,
} from './admission-store.js';
import { DAY_MS, type LimitField, type RateWindow, type RateWindowOptions, rateWindow } from './limits.js';

/** Options of `MemoryAdmissionStore`. */
export interface MemoryAdmissionStoreOptions extends RateWindowOptions {
  /** Source of time (a `VirtualClock` in tests). */
  clock: Clock;
  /** Upper bound of a concurrency refusal's `retryAfterMs`, ms. Default 1000. */
  concurrencyRetryMs?: number;
  /** Idle counters are swept after this many acquires. Default 4096. */
  sweepEvery?: number;
}

/**
 * The in-process `AdmissionStore` (embedded mode, and the per-process fallback of the Redis store when it fails
 * open). Atomicity comes from JavaScript's single thread: `acquire` checks every counter and then takes from every
 * counter without yielding. Counters are fixed-size rings, so the hot path allocates only the ticket and the result.
 */
export class MemoryAdmissionStore implements AdmissionStore {
  private readonly clock: Clock;
  private readonly window: RateWindow;
  private readonly concurrencyRetryMs: number;
  private readonly sweepEvery: number;
  private readonly counters = new Map<string, ScopeCounters>();
  private readonly ticketPrefix = `m${Math.random().toString(36).slice(2, 10)}-`;
  private sequence = 0;
  private acquiresSinceSweep = 0;
  // The refusal being built by the running `acquireNow` (synchronous, so one scratch slot suffices and no closure or
  // object is allocated per call).
  private refusedReason: LimitField | undefined;
  private refusedScope = '';
  private refusedRetryAfterMs = 0;

  constructor(options: MemoryAdmissionStoreOptions) {
    this.clock = options.clock;
    this.window = rateWindow(options);
    this.concurrencyRetryMs = options.concurrencyRetryMs ?? 1000;
    this.sweepEvery = options.sweepEvery ?? 4096;
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    return this.acquireNow(request);
  }

  /** `acquire` without the promise, for callers that know the store is in-process. */
  acquireNow(request: AcquireRequest): AcquireResult {
    checkTokens(request.tokens);
    if (++this.acquiresSinceSweep >= this.sweepEvery) this.sweep();
    const now = this.clock.now();
    const { bucketMs, buckets } = this.window;
    const bucket = Math.floor(now / bucketMs);
    const day = Math.floor(now / DAY_MS);
    const tokens = request.tokens;

    this.resetRefusal();

    for (const scope of request.scopes) {
      const limits = scope.limits;
      const counters = this.countersOf(scope.id);
      if (limits.rpm !== undefined) {
        const window = counters.requestWindow(buckets);
        window.advance(bucket);
        if (window.total + 1 > limits.rpm) {
          this.refuse('rpm', scope.id, window.retryAfterMs(1, limits.rpm, now, bucketMs, this.window.windowMs));
        }
      }
      if (limits.tpm !== undefined) {
        const window = counters.tokenWindow(buckets);
        window.advance(bucket);
        if (window.total + tokens > limits.tpm) {
          this.refuse('tpm', scope.id, window.retryAfterMs(tokens, limits.tpm, now, bucketMs, this.window.windowMs));
        }
      }
      if (limits.tpd !== undefined) {
        if (counters.day !== day) {
          counters.day = day;
          counters.dayTokens = 0;
        }
        if (counters.dayTokens + tokens > limits.tpd) this.refuse('tpd', scope.id, (day + 1) * DAY_MS - now);
      }
      if (limits.concurrency !== undefined) {
        const leases = counters.leaseMap();
        if (leases.size >= limits.concurrency) pruneLeases(leases, now);
        if (leases.size + 1 > limits.concurrency) {
          this.refuse('concurrency', scope.id, Math.min(earliestExpiry(leases) - now, this.concurrencyRetryMs));
        }
      }
    }

    if (this.refusedReason !== undefined) {
      return {
        ok: false,
        reason: this.refusedReason,
        scope: this.refusedScope,
        retryAfterMs: this.refusedRetryAfterMs,
        state: this.stateOf(request, now, day),
      };
    }

    const ticket: AdmissionTicket = {
      id: `${this.ticketPrefix}${++this.sequence}`,
      tenantId: request.tenantId,
      at: now,
      scopes: request.scopes,
      chargedTokens: tokens,
      leaseHeld: true,
      rolledBack: false,
    };
    const leaseUntil = now + request.leaseMs;
    for (const scope of request.scopes) {
      const limits = scope.limits;
      const counters = this.countersOf(scope.id);
      if (limits.rpm !== undefined) counters.requests!.add(bucket, 1);
      if (limits.tpm !== undefined) counters.tokens!.add(bucket, tokens);
      if (limits.tpd !== undefined) counters.dayTokens += tokens;
      if (limits.concurrency !== undefined) counters.leases!.set(ticket.id, leaseUntil);
    }
    return { ok: true, ticket, state: this.stateOf(request, now, day) };
  }

  async reconcile(ticket: AdmissionTicket, actualTokens: number): Promise<void> {
    checkTokens(actualTokens);
    if (ticket.rolledBack) return;
    this.adjust(ticket, 0, actualTokens - ticket.chargedTokens);
    ticket.chargedTokens = actualTokens;
  }

  async release(ticket: AdmissionTicket): Promise<void> {
    if (!ticket.leaseHeld) return;
    ticket.leaseHeld = false;
    for (const scope of ticket.scopes) {
      if (scope.limits.concurrency !== undefined) this.counters.get(scope.id)?.leases?.delete(ticket.id);
    }
  }

  async rollback(ticket: AdmissionTicket): Promise<void> {
    if (ticket.rolledBack) return;
    await this.release(ticket);
    this.adjust(ticket, -1, -ticket.chargedTokens);
    ticket.rolledBack = true;
    ticket.chargedTokens = 0;
  }

  async close(): Promise<void> {
    this.counters.clear();
  }

  /** Number of scopes with live counters (for tests of the sweep). */
  get scopeCount(): number {
    return this.counters.size;
  }

  private resetRefusal(): void {
    this.refusedReason = undefined;
    this.refusedRetryAfterMs = 0;
  }

  /** Records a failed check; the one that frees up last is reported. */
  private refuse(reason: LimitField, scope: string, retryAfterMs: number): void {
    if (this.refusedReason === undefined || retryAfterMs > this.refusedRetryAfterMs) {
      this.refusedReason = reason;
      this.refusedScope = scope;
      this.refusedRetryAfterMs = retryAfterMs;
    }
  }

  private adjust(ticket: AdmissionTicket, requestDelta: number, tokenDelta: number): void {
    if (requestDelta === 0 && tokenDelta === 0) return;
    const now = this.clock.now();
    const bucket = Math.floor(now / this.window.bucketMs);
    const day = Math.floor(now / DAY_MS);
    const takenBucket = Math.floor(ticket.at / this.window.bucketMs);
    const takenDay = Math.floor(ticket.at / DAY_MS);
    for (const scope of ticket.scopes) {
      const limits = scope.limits;
      const counters = this.countersOf(scope.id);
      if (limits.rpm !== undefined && requestDelta !== 0) {
        counters.requestWindow(this.window.buckets).adjust(takenBucket, bucket, requestDelta);
      }
      if (limits.tpm !== undefined && tokenDelta !== 0) {
        counters.tokenWindow(this.window.buckets).adjust(takenBucket, bucket, tokenDelta);
      }
      if (limits.tpd !== undefined && tokenDelta !== 0) {
        if (counters.day !== day) {
          counters.day = day;
          counters.dayTokens = 0;
        }
        if (takenDay === day) counters.dayTokens = Math.max(0, counters.dayTokens + tokenDelta);
        else if (tokenDelta > 0) counters.dayTokens += tokenDelta;
      }
    }
  }

  private countersOf(id: string): ScopeCounters {
    let counters = this.counters.get(id);
    if (counters === undefined) {
      counters = new ScopeCounters();
      this.counters.set(id, counters);
    }
    return counters;
  }

  private stateOf(request: AcquireRequest, now: number, day: number): RateLimitState {
    const state: RateLimitState = {};
    const { bucketMs } = this.window;
    for (const scope of request.scopes) {
      const limits = scope.limits;
      const counters = this.counters.get(scope.id);
      if (counters === undefined) continue;
      if (limits.rpm !== undefined && counters.requests !== undefined) {
        const remaining = Math.max(0, limits.rpm - counters.requests.total);
        // When the next request would be admitted (see `WindowState.resetMs`): now while one remains, else once the
        // oldest take has left the window.
        const resetMs =
          remaining > 0 ? 0 : counters.requests.retryAfterMs(1, limits.rpm, now, bucketMs, this.window.windowMs);
        if (moreConstraining(state.requests, remaining, resetMs)) {
          state.requests = { limit: limits.rpm, remaining, resetMs };
        }
      }
      if (limits.tpm !== undefined && counters.tokens !== undefined) {
        const remaining = Math.max(0, limits.tpm - counters.tokens.total);
        const resetMs = counters.tokens.resetMs(now, bucketMs);
        if (moreConstraining(state.tokens, remaining, resetMs)) {
          state.tokens = { limit: limits.tpm, remaining, resetMs };
        }
      }
      if (limits.tpd !== undefined) {
        const used = counters.day === day ? counters.dayTokens : 0;
        const remaining = Math.max(0, limits.tpd - used);
        const resetMs = used > 0 ? (day + 1) * DAY_MS - now : 0;
        if (moreConstraining(state.tokensPerDay, remaining, resetMs)) {
          state.tokensPerDay = { limit: limits.tpd, remaining, resetMs };
        }
      }
    }
    return state;
  }

  /** Drops the counters of scopes that hold no usage any more, so ids of departed keys do not accumulate. */
  private sweep(): void {
    this.acquiresSinceSweep = 0;
    const now = this.clock.now();
    const bucket = Math.floor(now / this.window.bucketMs);
    const day = Math.floor(now / DAY_MS);
    for (const [id, counters] of this.counters) {
      counters.requests?.advance(bucket);
      counters.tokens?.advance(bucket);
      if (counters.leases !== undefined) pruneLeases(counters.leases, now);
      const idle =
        (counters.requests === undefined || counters.requests.total === 0) &&
        (counters.tokens === undefined || counters.tokens.total === 0) &&
        (counters.day !== day || counters.dayTokens === 0) &&
        (counters.leases === undefined || counters.leases.size === 0);
      if (idle) this.counters.delete(id);
    }
  }
}

/** The counters of one scope, each created when a limit first needs it. */
class ScopeCounters {
  requests: SlidingCounter | undefined;
  tokens: SlidingCounter | undefined;
  /** UTC day index `dayTokens` belongs to. */
  day = 0;
  dayTokens = 0;
  /** Ticket id → lease expiry (ms). */
  leases: Map<string, number> | undefined;

  requestWindow(buckets: number): SlidingCounter {
    if (this.requests === undefined) this.requests = new SlidingCounter(buckets);
    return this.requests;
  }

  tokenWindow(buckets: number): SlidingCounter {
    if (this.tokens === undefined) this.tokens = new SlidingCounter(buckets);
    return this.tokens;
  }

  leaseMap(): Map<string, number> {
    if (this.leases === undefined) this.leases = new Map();
    return this.leases;
  }
}

/**
 * A sliding window of `buckets + 1` sub-bucket counters in a ring: bucket `x` lives in slot `x mod (buckets + 1)`,
 * and moving to a new bucket clears the slots of buckets that left the window, so `total` stays exact in O(1)
 * amortized time.
 */
class SlidingCounter {
  total = 0;
  /** Newest bucket seen; the window is `latest − buckets … latest`. */
  private latest = Number.NEGATIVE_INFINITY;
  private readonly counts: Float64Array;

  constructor(private readonly buckets: number) {
    this.counts = new Float64Array(buckets + 1);
  }

  advance(bucket: number): void {
    if (bucket <= this.latest) return;
    const size = this.buckets + 1;
    if (bucket - this.latest >= size) {
      this.counts.fill(0);
      this.total = 0;
    } else {
      for (let x = this.latest + 1; x <= bucket; x++) {
        const slot = x % size;
        this.total -= this.counts[slot]!;
        this.counts[slot] = 0;
      }
    }
    this.latest = bucket;
  }

  add(bucket: number, amount: number): void {
    // `advance(bucket)` ran in the same acquire, so `bucket` is the newest; the clock never runs backwards here.
    this.counts[Math.max(bucket, this.latest) % (this.buckets + 1)]! += amount;
    this.total += amount;
  }

  /** Adds `delta` to bucket `taken` if it is still counted; otherwise charges a positive `delta` to `current`. */
  adjust(taken: number, current: number, delta: number): void {
    this.advance(current);
    if (taken >= this.latest - this.buckets && taken <= this.latest) {
      const slot = taken % (this.buckets + 1);
      const next = Math.max(0, this.counts[slot]! + delta);
      this.total += next - this.counts[slot]!;
      this.counts[slot] = next;
    } else if (delta > 0) {
      this.add(current, delta);
    }
  }

  /** When `need` more would fit under `limit`: the moment enough of the oldest buckets have left the window. */
  retryAfterMs(need: number, limit: number, now: number, bucketMs: number, windowMs: number): number {
    if (need > limit) return windowMs;
    const excess = this.total + need - limit;
    let freed = 0;
    const size = this.buckets + 1;
    for (let x = this.latest - this.buckets; x <= this.latest; x++) {
      freed += this.counts[x % size]!;
      if (freed >= excess) return (x + size) * bucketMs - now;
    }
    return (this.latest + size) * bucketMs - now;
  }

  /** Time until the newest non-empty bucket leaves the window, ms. */
  resetMs(now: number, bucketMs: number): number {
    const size = this.buckets + 1;
    for (let x = this.latest; x >= this.latest - this.buckets; x--) {
      if (this.counts[x % size]! > 0) return (x + size) * bucketMs - now;
    }
    return 0;
  }
}

/**
 * Whether a scope's window is reported instead of `current`: it has less remaining, or as little and resets later (of
 * several exhausted scopes, the one that frees up last decides when a request is admitted).
 */
function moreConstraining(current: WindowState | undefined, remaining: number, resetMs: number): boolean {
  return (
    current === undefined ||
    remaining < current.remaining ||
    (remaining === current.remaining && resetMs > current.resetMs)
  );
}

function pruneLeases(leases: Map<string, number>, now: number): void {
  for (const [id, until] of leases) if (until <= now) leases.delete(id);
}

function earliestExpiry(leases: Map<string, number>): number {
  let earliest = Number.POSITIVE_INFINITY;
  for (const until of leases.values()) if (until < earliest) earliest = until;
  return earliest;
}

function checkTokens(tokens: number): void {
  if (!Number.isInteger(tokens) || tokens < 0) throw new RangeError(`tokens must be an integer ≥ 0, got ${tokens}`);
}
