/**
 * The scheduler of issue 4: service classes in priority order with headroom, weighted fair share between tenants
 * inside a class, queue-wait limits enforced at submission, and probabilistic load shedding. Pure: time comes only
 * from the `Clock`, randomness only from the injected `random`.
 *
 * Dispatch order: the highest class with queued work first; inside it the job `FairQueue` picks. A class is dispatched
 * only while the pool stays within its admission ceiling; when the chosen job does not fit, nothing below it is
 * dispatched either (a small lower-class job never overtakes a large higher-class one).
 *
 * Submission of a job that cannot run at once: shed with probability `shedProbability(saturation of its class)`
 * (see load-shedding.ts), else refused when the predicted queue wait exceeds its class's limit (see
 * wait-estimator.ts), else queued with a timer that refuses it if it overstays that limit anyway.
 */
import type { Clock } from '../clock/clock.js';
import { assertNever } from '../errors/assert-never.js';
import { CapacityLedger } from './capacity-ledger.js';
import { FairQueue } from './fair-queue.js';
import { JobTicket, ownedTicket, validateJob } from './job-ticket.js';
import { checkSheddingCurve, type SheddingCurve, shedProbability } from './load-shedding.js';
import type {
  ActualUsage,
  PoolCapacity,
  RefusalReason,
  Scheduler,
  SchedulerJob,
  SchedulerRefusal,
  SchedulerStats,
  SchedulerTicket,
  SubmitHandlers,
  SubmitResult,
} from './scheduler.js';
import { SchedulerCounters } from './scheduler-counters.js';
import { createSeededRandom } from './seeded-random.js';
import {
  type PerServiceClass,
  perServiceClass,
  type ServiceClass,
  serviceClasses,
  serviceClassRank,
} from './service-class.js';
import { WaitEstimator } from './wait-estimator.js';

/** How one service class is admitted. */
export interface ServiceClassPolicy {
  /** Longest a job may wait in the queue, ms; `Number.POSITIVE_INFINITY` for no limit. */
  maxQueueWaitMs: number;
  /**
   * Fraction of the pool's capacity (sequences and tokens alike) this class may fill: the rest is headroom kept free
   * for higher classes. In sequences that is ⌊ceiling × capacity⌋ but at least 1, so a tiny pool still serves every
   * class. In (0, 1] and non-increasing from `priority` to `batch`.
   */
  admissionCeiling: number;
  /** When jobs of this class are shed. */
  shedding: SheddingCurve;
}

/**
 * Defaults: priority waits ≤ 1 s and may use the whole pool; default ≤ 5 s and leaves 5% to priority; flex ≤ 60 s and
 * leaves 10%; batch waits without limit and leaves 15%. Flex sits above batch so that a batch line promoted to flex
 * (its deadline nears) gets capacity batch lines cannot take. Shedding (saturation where it starts → where it sheds
 * everything, k = 3): flex and batch 1 → 2, default 1.5 → 3, priority 2 → 4.
 */
export const defaultServiceClassPolicies: Readonly<PerServiceClass<Readonly<ServiceClassPolicy>>> = Object.freeze({
  priority: { maxQueueWaitMs: 1_000, admissionCeiling: 1, shedding: { start: 2, full: 4, exponent: 3 } },
  default: { maxQueueWaitMs: 5_000, admissionCeiling: 0.95, shedding: { start: 1.5, full: 3, exponent: 3 } },
  flex: { maxQueueWaitMs: 60_000, admissionCeiling: 0.9, shedding: { start: 1, full: 2, exponent: 3 } },
  batch: {
    maxQueueWaitMs: Number.POSITIVE_INFINITY,
    admissionCeiling: 0.85,
    shedding: { start: 1, full: 2, exponent: 3 },
  },
});

/** Overrides of one class's policy. */
export interface ServiceClassPolicyOverride {
  /** See `ServiceClassPolicy.maxQueueWaitMs`. */
  maxQueueWaitMs?: number;
  /** See `ServiceClassPolicy.admissionCeiling`. */
  admissionCeiling?: number;
  /** See `ServiceClassPolicy.shedding`. */
  shedding?: Partial<SheddingCurve>;
}

/**
 * Headroom for online bursts sized to the online load, not only a fixed share of the pool: a quiet hour needs a few
 * free slots, a peak hour many more (bursts of real traffic grow with its level).
 */
export interface OnlineHeadroomOptions {
  /** Sequences always kept free for online work below the `default` class's ceiling, ≥ 0. Default 0. */
  minimumSequences?: number;
  /** Extra sequences kept free per online sequence running (0.4: 40% of what online uses now), ≥ 0. */
  perOnlineSequence: number;
}

/** Options of a `TieredScheduler`. */
export interface TieredSchedulerOptions {
  /** Time source (a `VirtualClock` in tests and experiments). */
  clock: Clock;
  /** Initial capacity of the pool; refine with `setCapacity`. */
  capacity: PoolCapacity;
  /** Uniform [0, 1) source for shedding decisions. Default: `createSeededRandom(1)`. */
  random?: () => number;
  /** Per-class overrides of `defaultServiceClassPolicies`. */
  classes?: Partial<Record<ServiceClass, ServiceClassPolicyOverride>>;
  /** Fair-share charge per prompt token. Default 1. */
  inputTokenWeight?: number;
  /** Fair-share charge per output token. Default 2. */
  outputTokenWeight?: number;
  /** Mean run time of a job assumed until jobs complete, ms. Default 2000. */
  initialHoldMs?: number;
  /** Window over which recent dispatch rates are measured, ms. Default 10000. */
  rateWindowMs?: number;
  /** Smallest `retryAfterMs` of a retryable refusal, ms. Default 1000. */
  minRetryAfterMs?: number;
  /** Largest `retryAfterMs`, ms. Default 60000. */
  maxRetryAfterMs?: number;
  /** Queue-wait samples kept per class between two `takeWaitSamples` calls. Default 4096. */
  waitSampleLimit?: number;
  /**
   * The batch class's admission ceiling as a function of time (ms since the epoch), replacing
   * `policies.batch.admissionCeiling`: how operators' off-peak windows give batch more of the pool. Read at every
   * dispatch decision; a value must be in (0, 1] and is capped at the `default` class's ceiling, so online work always
   * keeps its headroom over batch. The `flex` class is dispatched up to at least the same ceiling, so a line promoted
   * from batch to flex never has less room than it had. A rise takes effect at the next dispatch decision (the next
   * submission or completion). Default: none, the static policy applies.
   */
  batchCeilingAt?: (now: number) => number;
  /**
   * Load-aware headroom: batch lines are dispatched only while at least `minimumSequences + perOnlineSequence × online`
   * sequences stay free below the `default` class's ceiling, online being the running sequences of `priority` and
   * `default`. It lowers (never raises) the batch ceiling of the moment, so with a generous `batchCeilingAt` batch
   * fills the troughs and steps back at the peak. Jobs are never refused `too_large` because of it. Default: none.
   */
  onlineHeadroom?: OnlineHeadroomOptions;
}

/** Classes, headroom, fair share and shedding over one pool. */
export class TieredScheduler implements Scheduler {
  /** The resolved per-class policies. */
  readonly policies: Readonly<PerServiceClass<Readonly<ServiceClassPolicy>>>;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly ledger: CapacityLedger;
  private readonly queues: PerServiceClass<FairQueue<JobTicket>> = perServiceClass(() => new FairQueue());
  private readonly counters: SchedulerCounters;
  private readonly estimator: WaitEstimator;
  private readonly inputTokenWeight: number;
  private readonly outputTokenWeight: number;
  private readonly minRetryAfterMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly batchCeilingAt: ((now: number) => number) | undefined;
  private readonly onlineHeadroom: Required<OnlineHeadroomOptions> | undefined;
  private sequence = 0;
  private dispatching = false;
  private dispatchAgain = false;
  private closed = false;

  constructor(options: TieredSchedulerOptions) {
    this.clock = options.clock;
    this.random = options.random ?? createSeededRandom(1);
    this.ledger = new CapacityLedger(options.capacity);
    this.policies = resolvePolicies(options.classes ?? {});
    this.counters = new SchedulerCounters(options.waitSampleLimit ?? 4_096);
    this.estimator = new WaitEstimator(this.clock, {
      initialHoldMs: options.initialHoldMs ?? 2_000,
      rateWindowMs: options.rateWindowMs ?? 10_000,
    });
    this.inputTokenWeight = options.inputTokenWeight ?? 1;
    this.outputTokenWeight = options.outputTokenWeight ?? 2;
    this.minRetryAfterMs = options.minRetryAfterMs ?? 1_000;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.batchCeilingAt = options.batchCeilingAt;
    if (options.onlineHeadroom !== undefined) {
      const { minimumSequences = 0, perOnlineSequence } = options.onlineHeadroom;
      if (!(minimumSequences >= 0 && perOnlineSequence >= 0 && Number.isFinite(minimumSequences + perOnlineSequence))) {
        throw new RangeError('onlineHeadroom: minimumSequences and perOnlineSequence must be finite numbers ≥ 0');
      }
      this.onlineHeadroom = { minimumSequences, perOnlineSequence };
    }
  }

  get capacity(): Readonly<PoolCapacity> {
    return this.ledger.capacity;
  }

  submit(job: SchedulerJob, handlers?: SubmitHandlers): SubmitResult {
    validateJob(job);
    const serviceClass = job.serviceClass;
    const policy = this.policies[serviceClass];
    const ceiling = this.admissionCeiling(serviceClass);
    const ticket = new JobTicket(this, { ...job }, this.clock.now(), this.sequence++, handlers);
    if (this.closed) return { outcome: 'refused', refusal: this.refusal(serviceClass, 'closed', 0) };
    if (!this.ledger.canEverFit(ticket.reservedTokens, this.configuredCeiling(serviceClass))) {
      return { outcome: 'refused', refusal: this.refusal(serviceClass, 'too_large', 0) };
    }
    const virtualCost = this.cost(job.inputTokens, job.maxOutputTokens) / ticket.weight;
    if (this.queuedAtOrAbove(serviceClass) === 0 && this.ledger.fits(ticket.reservedTokens, ceiling)) {
      this.queues[serviceClass].chargeDispatchedDirectly(job.tenantId, virtualCost);
      ticket.chargedVirtual = virtualCost;
      this.start(ticket);
      return { outcome: 'dispatched', ticket };
    }

    const predictedWaitMs = this.predictWaitMs(serviceClass, job.tenantId);
    const shedding = shedProbability(this.saturation(serviceClass), policy.shedding);
    if (shedding > 0 && this.random() < shedding) {
      return { outcome: 'refused', refusal: this.refusal(serviceClass, 'shed', predictedWaitMs) };
    }
    if (predictedWaitMs > policy.maxQueueWaitMs) {
      return { outcome: 'refused', refusal: this.refusal(serviceClass, 'queue_wait', predictedWaitMs) };
    }

    this.queues[serviceClass].enqueue(ticket, job.tenantId, virtualCost);
    ticket.chargedVirtual = virtualCost;
    const counters = this.counters.classes[serviceClass];
    counters.queued++;
    counters.queuedTokens += ticket.reservedTokens;
    if (Number.isFinite(policy.maxQueueWaitMs)) {
      ticket.overstayTimer = this.clock.setTimer(policy.maxQueueWaitMs, () => this.onOverstay(ticket));
    }
    // The job waits behind others of its class or higher, so it cannot be the one dispatched here.
    this.dispatchQueued();
    return { outcome: 'queued', ticket };
  }

  complete(ticket: SchedulerTicket, actual: ActualUsage): boolean {
    const owned = ownedTicket(this, ticket);
    if (owned === undefined || owned.state !== 'running') return false;
    this.finish(owned, 'completed', actual);
    this.counters.classes[owned.job.serviceClass].completed++;
    this.estimator.recordCompletion(this.clock.now() - owned.dispatchedAt!);
    this.dispatchQueued();
    return true;
  }

  cancel(ticket: SchedulerTicket, actual?: ActualUsage): boolean {
    const owned = ownedTicket(this, ticket);
    if (owned === undefined) return false;
    const serviceClass = owned.job.serviceClass;
    if (owned.state === 'queued') {
      this.unqueue(owned);
      owned.state = 'cancelled';
      owned.settle({ outcome: 'cancelled' });
    } else if (owned.state === 'running') {
      this.finish(owned, 'cancelled', actual);
    } else {
      return false;
    }
    this.counters.classes[serviceClass].cancelled++;
    // A cancelled head may have been what blocked the queue.
    this.dispatchQueued();
    return true;
  }

  setCapacity(capacity: Partial<PoolCapacity>): void {
    this.ledger.setCapacity(capacity);
    for (const serviceClass of serviceClasses) {
      const ceiling = this.configuredCeiling(serviceClass);
      for (const ticket of this.queues[serviceClass].items()) {
        if (!this.ledger.canEverFit(ticket.reservedTokens, ceiling)) this.refuseQueued(ticket, 'too_large', 0);
      }
    }
    this.dispatchQueued();
  }

  stats(): SchedulerStats {
    return this.counters.snapshot(this.ledger);
  }

  takeWaitSamples(): PerServiceClass<number[]> {
    return this.counters.takeWaitSamples();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const serviceClass of serviceClasses) {
      for (const ticket of this.queues[serviceClass].items()) this.refuseQueued(ticket, 'closed', 0);
    }
  }

  /**
   * Demand at or above `serviceClass` relative to the pool: the larger of (running + queued) sequences / capacity and
   * (running + queued) tokens / capacity, counting queued jobs of this class and higher only.
   */
  saturation(serviceClass: ServiceClass): number {
    const rank = serviceClassRank(serviceClass);
    let sequences = this.ledger.sequences;
    let tokens = this.ledger.tokens;
    for (const other of serviceClasses) {
      if (serviceClassRank(other) > rank) break;
      sequences += this.counters.classes[other].queued;
      tokens += this.counters.classes[other].queuedTokens;
    }
    const { capacity } = this.ledger;
    return Math.max(sequences / capacity.sequences, tokens / capacity.tokens);
  }

  /** Predicted queue wait of a new job of `tenantId` in `serviceClass` (see wait-estimator.ts), ms. */
  predictWaitMs(serviceClass: ServiceClass, tenantId: string): number {
    let ahead = this.queues[serviceClass].jobsAhead(tenantId);
    for (const other of serviceClasses) {
      if (other === serviceClass) break;
      ahead += this.queues[other].size;
    }
    return this.estimator.predictWaitMs(ahead, serviceClass, this.ledger.capacity, this.admissionCeiling(serviceClass));
  }

  /**
   * The admission ceiling `serviceClass` is dispatched up to now: its policy's, except for batch (and flex, which never
   * gets less than batch) when `batchCeilingAt` is set, and for batch, lowered by `onlineHeadroom` when set.
   */
  admissionCeiling(serviceClass: ServiceClass): number {
    const ceiling = this.configuredCeiling(serviceClass);
    if (serviceClass !== 'batch' || this.onlineHeadroom === undefined) return ceiling;
    const { minimumSequences, perOnlineSequence } = this.onlineHeadroom;
    const classes = this.counters.classes;
    const online = classes.priority.running + classes.default.running;
    const sequences = this.ledger.capacity.sequences;
    const free = minimumSequences + perOnlineSequence * online;
    const loadCeiling = (this.policies.default.admissionCeiling * sequences - free) / sequences;
    // Never below one sequence's share: the ledger lets every class run one sequence anyway.
    return Math.min(ceiling, Math.max(1 / sequences, loadCeiling));
  }

  /** The ceiling of `serviceClass` from its policy and `batchCeilingAt`, before `onlineHeadroom`. */
  private configuredCeiling(serviceClass: ServiceClass): number {
    const configured = this.policies[serviceClass].admissionCeiling;
    if (this.batchCeilingAt === undefined || (serviceClass !== 'batch' && serviceClass !== 'flex')) return configured;
    const wanted = this.batchCeilingAt(this.clock.now());
    if (!(wanted > 0 && wanted <= 1))
      throw new RangeError(`batchCeilingAt must return a value in (0, 1], got ${wanted}`);
    const batch = Math.min(wanted, this.policies.default.admissionCeiling);
    return serviceClass === 'batch' ? batch : Math.max(configured, batch);
  }

  /**
   * Ids of the jobs waiting in the queue now, every class (not the running ones). For a caller that withdraws its own
   * queued work, e.g. a cancelled batch, by cancelling those tickets; cost O(queued jobs).
   */
  queuedJobIds(): Set<string> {
    const ids = new Set<string>();
    for (const serviceClass of serviceClasses) {
      for (const ticket of this.queues[serviceClass].items()) ids.add(ticket.job.id);
    }
    return ids;
  }

  /** The fair-share counters (virtual tokens served) of one class, by tenant. */
  fairShareCounters(serviceClass: ServiceClass): Map<string, number> {
    return this.queues[serviceClass].counters();
  }

  /**
   * Moves a tenant's fair-share counter by `delta` virtual tokens (cluster sync: tokens other processes served it).
   * A tenant this scheduler never queued is left alone.
   */
  adjustFairShare(serviceClass: ServiceClass, tenantId: string, delta: number): void {
    this.queues[serviceClass].charge(tenantId, delta);
  }

  private cost(inputTokens: number, outputTokens: number): number {
    return this.inputTokenWeight * inputTokens + this.outputTokenWeight * outputTokens;
  }

  private queuedAtOrAbove(serviceClass: ServiceClass): number {
    let queued = 0;
    for (const other of serviceClasses) {
      queued += this.queues[other].size;
      if (other === serviceClass) break;
    }
    return queued;
  }

  private dispatchQueued(): void {
    // A handler that calls back in (complete, cancel, submit) only asks for another pass of the loop running above it.
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    this.dispatching = true;
    try {
      do {
        this.dispatchAgain = false;
        this.dispatchPass();
      } while (this.dispatchAgain);
    } finally {
      this.dispatching = false;
    }
  }

  private dispatchPass(): void {
    for (const serviceClass of serviceClasses) {
      const queue = this.queues[serviceClass];
      const ceiling = this.admissionCeiling(serviceClass);
      for (let next = queue.peek(); next !== undefined; next = queue.peek()) {
        if (!this.ledger.fits(next.reservedTokens, ceiling)) return;
        queue.dispatch(next);
        const counters = this.counters.classes[serviceClass];
        counters.queued--;
        counters.queuedTokens -= next.reservedTokens;
        this.start(next);
        next.handlers?.onDispatch?.(next);
      }
    }
  }

  private start(ticket: JobTicket): void {
    const serviceClass = ticket.job.serviceClass;
    const now = this.clock.now();
    this.ledger.take(ticket.reservedTokens);
    ticket.state = 'running';
    ticket.dispatchedAt = now;
    const counters = this.counters.classes[serviceClass];
    counters.running++;
    counters.dispatched++;
    this.counters.recordWait(serviceClass, now - ticket.submittedAt);
    this.estimator.recordDispatch(serviceClass, ticket.reservedTokens);
    ticket.settle({ outcome: 'dispatched' });
  }

  private finish(ticket: JobTicket, state: 'completed' | 'cancelled', actual: ActualUsage | undefined): void {
    this.ledger.release(ticket.reservedTokens);
    ticket.state = state;
    this.counters.classes[ticket.job.serviceClass].running--;
    if (actual !== undefined) {
      for (const value of [actual.inputTokens, actual.outputTokens]) {
        if (!Number.isFinite(value) || value < 0) throw new RangeError(`Actual token counts must be ≥ 0, got ${value}`);
      }
      // Correct the estimate charged at dispatch with what the request really used.
      const actualVirtual = this.cost(actual.inputTokens, actual.outputTokens) / ticket.weight;
      this.queues[ticket.job.serviceClass].charge(ticket.job.tenantId, actualVirtual - ticket.chargedVirtual);
      ticket.chargedVirtual = actualVirtual;
    }
  }

  private unqueue(ticket: JobTicket): void {
    const serviceClass = ticket.job.serviceClass;
    this.queues[serviceClass].remove(ticket);
    const counters = this.counters.classes[serviceClass];
    counters.queued--;
    counters.queuedTokens -= ticket.reservedTokens;
  }

  private onOverstay(ticket: JobTicket): void {
    if (ticket.state !== 'queued') return;
    this.unqueue(ticket);
    // What a retry would face now, had this job not been queued.
    this.refuseQueued(ticket, 'overstay', this.predictWaitMs(ticket.job.serviceClass, ticket.job.tenantId), false);
    this.dispatchQueued();
  }

  private refuseQueued(ticket: JobTicket, reason: RefusalReason, predictedWaitMs: number, unqueue = true): void {
    if (unqueue) this.unqueue(ticket);
    const refusal = this.refusal(ticket.job.serviceClass, reason, predictedWaitMs);
    ticket.state = 'refused';
    ticket.refusal = refusal;
    ticket.settle({ outcome: 'refused', refusal });
    ticket.handlers?.onRefuse?.(ticket, refusal);
  }

  private refusal(serviceClass: ServiceClass, reason: RefusalReason, predictedWaitMs: number): SchedulerRefusal {
    this.counters.classes[serviceClass].refused[reason]++;
    return {
      reason,
      retryAfterMs: this.retryAfterMs(serviceClass, reason, predictedWaitMs),
      serviceClass,
      predictedWaitMs,
    };
  }

  /**
   * queue_wait: when the backlog ahead will have shrunk to the class's limit (predicted − limit); shed and overstay:
   * when the backlog ahead will have drained (predicted); both clamped to [min, max]. Not retryable reasons: 0.
   */
  private retryAfterMs(serviceClass: ServiceClass, reason: RefusalReason, predictedWaitMs: number): number {
    const clamp = (ms: number) => Math.ceil(Math.min(this.maxRetryAfterMs, Math.max(this.minRetryAfterMs, ms)));
    switch (reason) {
      case 'queue_wait':
        return clamp(predictedWaitMs - this.policies[serviceClass].maxQueueWaitMs);
      case 'shed':
      case 'overstay':
        return clamp(predictedWaitMs);
      case 'too_large':
      case 'closed':
        return 0;
      default:
        return assertNever(reason);
    }
  }
}

function resolvePolicies(
  overrides: Partial<Record<ServiceClass, ServiceClassPolicyOverride>>,
): PerServiceClass<ServiceClassPolicy> {
  const policies = perServiceClass((serviceClass): ServiceClassPolicy => {
    const base = defaultServiceClassPolicies[serviceClass];
    const override = overrides[serviceClass] ?? {};
    const policy = {
      maxQueueWaitMs: override.maxQueueWaitMs ?? base.maxQueueWaitMs,
      admissionCeiling: override.admissionCeiling ?? base.admissionCeiling,
      shedding: { ...base.shedding, ...override.shedding },
    };
    if (!(policy.maxQueueWaitMs > 0)) {
      throw new RangeError(`${serviceClass}: maxQueueWaitMs must be > 0, got ${policy.maxQueueWaitMs}`);
    }
    if (!(policy.admissionCeiling > 0 && policy.admissionCeiling <= 1)) {
      throw new RangeError(`${serviceClass}: admissionCeiling must be in (0, 1], got ${policy.admissionCeiling}`);
    }
    checkSheddingCurve(policy.shedding, serviceClass);
    return policy;
  });
  for (let rank = 1; rank < serviceClasses.length; rank++) {
    const higher = serviceClasses[rank - 1]!;
    const lower = serviceClasses[rank]!;
    if (policies[lower].admissionCeiling > policies[higher].admissionCeiling) {
      throw new RangeError(`${lower}: admissionCeiling may not exceed that of ${higher}`);
    }
  }
  return policies;
}
