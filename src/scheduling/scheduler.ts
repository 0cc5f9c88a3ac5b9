/**
 * The scheduler port (issue 4, point 2): admission of requests onto one pool's capacity. `TieredScheduler` is the real
 * one (service classes, headroom, fair share, shedding); `FifoScheduler` is the baseline it is measured against.
 */
import type { PerServiceClass, ServiceClass } from './service-class.js';

/** Capacity of a pool (one model's deployments together). */
export interface PoolCapacity {
  /** Sequences that may run at once (the engines' batch slots together). */
  sequences: number;
  /** Tokens that may be in flight at once: prompt + max output of every running request (KV-cache room). */
  tokens: number;
}

/** One request asking for capacity. */
export interface SchedulerJob {
  /** Caller's id of the request (for logs; need not be unique to the scheduler). */
  id: string;
  /** Tenant the fair share is kept for. */
  tenantId: string;
  /** Plan weight of the tenant: a tenant of weight 2 gets twice the tokens of weight 1 under contention. Default 1. */
  weight?: number;
  /** Service class the request runs in (after the plan's downgrade). */
  serviceClass: ServiceClass;
  /** Prompt tokens (estimate from the tokenizer), integer ≥ 0. */
  inputTokens: number;
  /** Output tokens reserved (`max_tokens` or the model's cap), integer ≥ 0. */
  maxOutputTokens: number;
}

/** Tokens a finished request really used. */
export interface ActualUsage {
  /** Prompt tokens processed. */
  inputTokens: number;
  /** Output tokens produced. */
  outputTokens: number;
}

/** Why a request was refused. */
export const refusalReasons = [
  /** Its predicted queue wait exceeded its class's limit (refused at submission). */
  'queue_wait',
  /** Load shedding: the pool is saturated for its class. */
  'shed',
  /** It waited in the queue longer than its class's limit (the prediction was wrong). */
  'overstay',
  /** It can never fit its class's share of the pool. */
  'too_large',
  /** The scheduler was closed while it waited. */
  'closed',
] as const;

/** One refusal reason. */
export type RefusalReason = (typeof refusalReasons)[number];

/** A refusal, to be answered with 429 + `Retry-After` (`too_large` and `closed` map to other errors). */
export interface SchedulerRefusal {
  reason: RefusalReason;
  /** When a retry has a fair chance, ms (for `Retry-After`, rounded up to seconds by the HTTP layer). */
  retryAfterMs: number;
  /** Class the request asked for. */
  serviceClass: ServiceClass;
  /** Queue wait the scheduler predicted for it, ms (0 when it could run at once). */
  predictedWaitMs: number;
}

/** Lifecycle of a ticket. */
export type TicketState = 'queued' | 'running' | 'completed' | 'cancelled' | 'refused';

/** How a ticket left the queue. */
export type TicketOutcome =
  | { outcome: 'dispatched' }
  | { outcome: 'refused'; refusal: SchedulerRefusal }
  | { outcome: 'cancelled' };

/** The handle of an admitted request (queued or running). */
export interface SchedulerTicket {
  readonly job: Readonly<SchedulerJob>;
  readonly state: TicketState;
  /** Clock time of `submit`, ms. */
  readonly submittedAt: number;
  /** Clock time it was dispatched, ms, or undefined while queued (or if it never ran). */
  readonly dispatchedAt: number | undefined;
  /** The refusal, when `state` is `refused`. */
  readonly refusal: SchedulerRefusal | undefined;
  /** Resolves when the ticket leaves the queue (at once if it already has). Never rejects. */
  settled(): Promise<TicketOutcome>;
}

/**
 * Synchronous notifications for a queued ticket. They run inside `complete`, `cancel`, `setCapacity` or a clock timer;
 * a handler may call back into the scheduler. An immediate dispatch or refusal is the return value of `submit`, not a
 * handler call.
 */
export interface SubmitHandlers {
  /** The queued ticket got capacity: send the request upstream now. */
  onDispatch?: (ticket: SchedulerTicket) => void;
  /** The queued ticket was refused (`overstay`, `too_large` after a capacity cut, `closed`). */
  onRefuse?: (ticket: SchedulerTicket, refusal: SchedulerRefusal) => void;
}

/** What `submit` decided. */
export type SubmitResult =
  | { outcome: 'dispatched'; ticket: SchedulerTicket }
  | { outcome: 'queued'; ticket: SchedulerTicket }
  | { outcome: 'refused'; refusal: SchedulerRefusal };

/** Counters of one class (cumulative unless said otherwise). */
export interface ServiceClassStats {
  /** Requests waiting now. */
  queued: number;
  /** Tokens (prompt + max output) of the requests waiting now. */
  queuedTokens: number;
  /** Requests running now. */
  running: number;
  /** Requests dispatched. */
  dispatched: number;
  /** Requests completed. */
  completed: number;
  /** Requests cancelled by their caller (queued or running). */
  cancelled: number;
  /** Requests refused, by reason. */
  refused: Record<RefusalReason, number>;
}

/** A snapshot for metrics and `GET /admin/v1/fleet`. */
export interface SchedulerStats {
  capacity: PoolCapacity;
  /** Sequences and tokens of the running requests. */
  inFlight: PoolCapacity;
  /** The larger of in-flight sequences / capacity and in-flight tokens / capacity (may exceed 1 after a cut). */
  utilisation: number;
  classes: PerServiceClass<ServiceClassStats>;
}

/** Admission onto one pool's capacity. */
export interface Scheduler {
  /** The capacity dispatching respects now. */
  readonly capacity: Readonly<PoolCapacity>;
  /**
   * Asks for capacity. Throws `RangeError` on a malformed job (negative or fractional tokens, weight ≤ 0).
   */
  submit(job: SchedulerJob, handlers?: SubmitHandlers): SubmitResult;
  /**
   * A running request finished: frees its capacity, charges the fair share with the real usage and dispatches waiting
   * requests. Returns false (and does nothing) when the ticket is not running.
   */
  complete(ticket: SchedulerTicket, actual: ActualUsage): boolean;
  /**
   * The caller gave up: a queued ticket leaves the queue, a running one frees its capacity (charged `actual` when
   * given, else its estimate). Returns false when the ticket was neither queued nor running.
   */
  cancel(ticket: SchedulerTicket, actual?: ActualUsage): boolean;
  /**
   * Refines the capacity (from configuration or what the upstream reports). Running requests are never pre-empted:
   * after a cut nothing is dispatched until the pool is back under the new capacity.
   */
  setCapacity(capacity: Partial<PoolCapacity>): void;
  stats(): SchedulerStats;
  /** Queue waits (ms) of the requests dispatched since the last call, per class; for a histogram. */
  takeWaitSamples(): PerServiceClass<number[]>;
  /** Refuses every queued request (`closed`) and stops the timers. Running tickets may still complete. */
  close(): void;
}
