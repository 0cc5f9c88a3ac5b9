/**
 * A circuit breaker for one deployment, on a `Clock`. Closed: requests pass and outcomes are counted. It opens after
 * `failureThreshold` consecutive failures, or when the failure rate over the last `errorRateWindowMs` exceeds
 * `errorRateThreshold` (once the window holds `errorRateMinimumRequests` outcomes). Open: nothing passes for the
 * cool-down. Then half-open: exactly one probe passes; its success closes the circuit, its failure opens it again
 * with a cool-down twice as long (up to `maxOpenMs`).
 */
import type { Clock } from '../clock/clock.js';
import { assertNever } from '../errors/assert-never.js';

/** The breaker's states. */
export const circuitStates = ['closed', 'open', 'half-open'] as const;
/** One of `circuitStates`. */
export type CircuitState = (typeof circuitStates)[number];

/** Options of `CircuitBreaker`. */
export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. Default 5. */
  failureThreshold?: number;
  /** Failure fraction (0–1) over the window that opens the circuit. Default 0.5. */
  errorRateThreshold?: number;
  /** Length of the error-rate window, ms. Default 30000. */
  errorRateWindowMs?: number;
  /** Outcomes the window must hold before its rate can open the circuit. Default 20. */
  errorRateMinimumRequests?: number;
  /** First cool-down of an open circuit, ms. Default 10000. */
  openMs?: number;
  /** Longest cool-down after repeated failed probes, ms. Default 60000. */
  maxOpenMs?: number;
}

/** The breaker's state for snapshots. */
export interface CircuitSnapshot {
  state: CircuitState;
  /** Failures since the last success. */
  consecutiveFailures: number;
  /** Failure fraction over the window (0 when it is empty). */
  errorRate: number;
  /** Outcomes in the window. */
  windowRequests: number;
  /** When an open circuit turns half-open, epoch ms; `null` unless open. */
  openUntil: number | null;
}

/** Number of buckets the error-rate window is split into. */
const windowBuckets = 10;

interface Bucket {
  /** Start of the bucket's time slice, ms. */
  start: number;
  successes: number;
  failures: number;
}

/** One deployment's breaker. */
export class CircuitBreaker {
  private readonly failureThreshold: number;
  private readonly errorRateThreshold: number;
  private readonly windowMs: number;
  private readonly minimumRequests: number;
  private readonly openMs: number;
  private readonly maxOpenMs: number;
  private current: CircuitState = 'closed';
  private consecutive = 0;
  private openedUntil = 0;
  private nextOpenMs: number;
  private probeInFlight = false;
  private readonly buckets: Bucket[] = [];

  constructor(
    private readonly clock: Clock,
    options: CircuitBreakerOptions = {},
  ) {
    this.failureThreshold = positive(options.failureThreshold ?? 5, 'failureThreshold');
    this.errorRateThreshold = options.errorRateThreshold ?? 0.5;
    this.windowMs = positive(options.errorRateWindowMs ?? 30_000, 'errorRateWindowMs');
    this.minimumRequests = positive(options.errorRateMinimumRequests ?? 20, 'errorRateMinimumRequests');
    this.openMs = positive(options.openMs ?? 10_000, 'openMs');
    this.maxOpenMs = Math.max(this.openMs, options.maxOpenMs ?? 60_000);
    this.nextOpenMs = this.openMs;
  }

  /** The state now (an open circuit whose cool-down has passed reads as half-open). */
  get state(): CircuitState {
    if (this.current === 'open' && this.clock.now() >= this.openedUntil) {
      this.current = 'half-open';
      this.probeInFlight = false;
    }
    return this.current;
  }

  /** Whether a request may be sent now: closed, or half-open with the probe slot free. */
  admits(): boolean {
    const state = this.state;
    switch (state) {
      case 'closed':
        return true;
      case 'open':
        return false;
      case 'half-open':
        return !this.probeInFlight;
      default:
        return assertNever(state);
    }
  }

  /**
   * Notes that a request was sent. Returns whether it is the half-open probe, whose outcome decides the state; a
   * request that is not the probe still counts while the circuit is closed.
   */
  start(): boolean {
    if (this.state !== 'half-open' || this.probeInFlight) return false;
    this.probeInFlight = true;
    return true;
  }

  /** A request (or probe) succeeded, or failed in a way that shows the deployment is alive. */
  recordSuccess(probe: boolean): void {
    const state = this.state;
    if (state === 'half-open') {
      if (!probe) return;
      this.close();
      return;
    }
    if (state === 'open') return;
    this.consecutive = 0;
    this.bucket().successes++;
  }

  /** A request (or probe) failed in a way that counts against the deployment. */
  recordFailure(probe: boolean): void {
    const state = this.state;
    if (state === 'half-open') {
      if (!probe) return;
      this.open(Math.min(this.maxOpenMs, this.nextOpenMs * 2));
      return;
    }
    // Late failures of requests sent before the circuit opened change nothing.
    if (state === 'open') return;
    this.consecutive++;
    this.bucket().failures++;
    if (this.consecutive >= this.failureThreshold) {
      this.open(this.openMs);
      return;
    }
    const { successes, failures } = this.windowTotals();
    const total = successes + failures;
    if (total >= this.minimumRequests && failures / total > this.errorRateThreshold) this.open(this.openMs);
  }

  /** The probe ended without a verdict (cancelled): the next request may probe instead. */
  releaseProbe(probe: boolean): void {
    if (probe) this.probeInFlight = false;
  }

  snapshot(): CircuitSnapshot {
    const state = this.state;
    const { successes, failures } = this.windowTotals();
    const total = successes + failures;
    return {
      state,
      consecutiveFailures: this.consecutive,
      errorRate: total === 0 ? 0 : failures / total,
      windowRequests: total,
      openUntil: state === 'open' ? this.openedUntil : null,
    };
  }

  private open(coolDownMs: number): void {
    this.current = 'open';
    this.nextOpenMs = coolDownMs;
    this.openedUntil = this.clock.now() + coolDownMs;
    this.probeInFlight = false;
    // The window restarts after recovery: the failures that opened the circuit must not reopen it at once.
    this.buckets.length = 0;
  }

  private close(): void {
    this.current = 'closed';
    this.consecutive = 0;
    this.nextOpenMs = this.openMs;
    this.probeInFlight = false;
    this.buckets.length = 0;
  }

  /** The bucket for now, creating it and dropping buckets that left the window. */
  private bucket(): Bucket {
    const width = this.windowMs / windowBuckets;
    const start = Math.floor(this.clock.now() / width) * width;
    this.prune();
    const last = this.buckets[this.buckets.length - 1];
    if (last !== undefined && last.start === start) return last;
    const bucket: Bucket = { start, successes: 0, failures: 0 };
    this.buckets.push(bucket);
    return bucket;
  }

  private windowTotals(): { successes: number; failures: number } {
    this.prune();
    let successes = 0;
    let failures = 0;
    for (const bucket of this.buckets) {
      successes += bucket.successes;
      failures += bucket.failures;
    }
    return { successes, failures };
  }

  private prune(): void {
    const width = this.windowMs / windowBuckets;
    const oldest = this.clock.now() - this.windowMs;
    while (this.buckets.length > 0 && this.buckets[0]!.start + width <= oldest) this.buckets.shift();
  }
}

function positive(value: number, name: string): number {
  if (!(value > 0)) throw new RangeError(`${name} must be positive, got ${value}`);
  return value;
}
