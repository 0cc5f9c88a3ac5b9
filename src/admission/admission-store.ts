/**
 * The `AdmissionStore` port: the counters behind rate limits (RPM, TPM, TPD, concurrency), checked and taken in one
 * atomic step. Two implementations pass one conformance suite: `MemoryAdmissionStore` (embedded mode, one process)
 * and `RedisAdmissionStore` (cluster mode, any number of processes sharing one Redis). Window semantics are described
 * in `limits.ts`.
 */
import { UnavailableError } from '../errors/gateway-error.js';
import type { AdmissionScope, LimitField } from './limits.js';

/** What one request asks of the store. */
export interface AcquireRequest {
  /**
   * The tenant the request belongs to. In Redis every key of the request carries the tenant's hash tag (`{ten_x}`),
   * so all of a request's counters live in one slot and one script takes them atomically, also on Redis Cluster.
   */
  tenantId: string;
  /** Counters to check and take; a refusal by any of them takes nothing from any. */
  scopes: readonly AdmissionScope[];
  /** Tokens charged to TPM and TPD now: the estimate (prompt tokens + `max_tokens` or the model's cap). Integer ≥ 0. */
  tokens: number;
  /** How long the concurrency lease lasts if never released, ms (> 0). */
  leaseMs: number;
}

/** Limit, remaining budget and reset time of one window. */
export interface WindowState {
  /** The limit of the scope this describes. */
  limit: number;
  /** Budget left (≥ 0). */
  remaining: number;
  /**
   * When the next request fits as far as this window goes, ms from the store's now; 0: at once.
   *
   * - Requests (one per request): exact. 0 while `remaining` ≥ 1; otherwise the time until the oldest counted
   *   request leaves the window, which is the `retryAfterMs` a refusal by this limit reports. Budget returns only at
   *   bucket boundaries (`limits.ts`), so that is a whole bucket boundary, not 60 s after the take itself.
   * - Tokens: the next request's size is unknown, so this is an upper bound: the time until the window holds none of
   *   its current usage (`remaining` = `limit`), after which any request within the limit fits. 0 when unused.
   * - Tokens per day: the time to midnight UTC when any was used today, else 0.
   *
   * A client reads it later than the store computed it (the response's transit), so it waits at most this long.
   */
  resetMs: number;
}

/**
 * What OpenAI's `x-ratelimit-*` headers need: for requests and for tokens, the window of the most constraining scope
 * (the one with the least remaining; of equals, the one that resets last). After a successful acquire it includes
 * the take; after a refusal it is the state that caused it. A field is absent when no scope limits that dimension.
 */
export interface RateLimitState {
  /** RPM window of the most constraining scope. */
  requests?: WindowState;
  /** TPM window of the most constraining scope (OpenAI's `…-tokens` headers are per minute). */
  tokens?: WindowState;
  /** TPD window (UTC day) of the most constraining scope. */
  tokensPerDay?: WindowState;
}

/**
 * Proof of an admission, handed back to `reconcile`, `release` and `rollback`. Plain data, maintained by the store
 * that issued it: callers read it but must not change it.
 */
export interface AdmissionTicket {
  /** Unique id (also the lease's member in Redis). */
  readonly id: string;
  readonly tenantId: string;
  /** When the take happened, ms since the epoch, in the store's time (Redis `TIME` or the caller's clock). */
  readonly at: number;
  /** The scopes taken from (the request's array, not a copy). */
  readonly scopes: readonly AdmissionScope[];
  /** Tokens currently charged to TPM/TPD: the estimate, then the actual count once reconciled. */
  chargedTokens: number;
  /** Whether the concurrency leases are still held (false after `release` or `rollback`). */
  leaseHeld: boolean;
  /** Whether `rollback` undid the take. */
  rolledBack: boolean;
}

/** An admission. */
export interface AcquireGranted {
  ok: true;
  ticket: AdmissionTicket;
  state: RateLimitState;
}

/** A refusal: nothing was taken from any scope. */
export interface AcquireRefused {
  ok: false;
  /** The limit that refused (the one that frees up last when several do). */
  reason: LimitField;
  /** Id of the scope whose limit refused. */
  scope: string;
  /**
   * When the same request would fit as far as the refusing counters are concerned, ms (> 0). A request larger than a
   * limit itself never fits: TPM then reports the window length, TPD the time to midnight UTC. Concurrency reports
   * the earliest lease expiry, capped at the store's `concurrencyRetryMs` (releases usually come sooner).
   */
  retryAfterMs: number;
  state: RateLimitState;
}

/** Result of `AdmissionStore.acquire`. */
export type AcquireResult = AcquireGranted | AcquireRefused;

/** Counters behind rate limits, taken atomically per request. */
export interface AdmissionStore {
  /**
   * Checks every limit of every scope and, only if all pass, takes one request (RPM), `tokens` (TPM, TPD) and one
   * lease (concurrency) from each scope that limits them — all or nothing, atomically with respect to every other
   * acquire on the same counters, in every process sharing the store.
   * @throws AdmissionStoreUnavailableError when the shared store is unreachable and the policy is fail-closed.
   */
  acquire(request: AcquireRequest): Promise<AcquireResult>;
  /**
   * Replaces the ticket's charged tokens by the actual count: an over-estimate is returned to the TPM and TPD windows,
   * an under-estimate charged. Applied to the bucket and day of the take while they are still counted; once they
   * have left the window only an under-estimate is charged (to the current bucket/day). Idempotent for a given count.
   */
  reconcile(ticket: AdmissionTicket, actualTokens: number): Promise<void>;
  /** Ends the ticket's concurrency leases. Idempotent. */
  release(ticket: AdmissionTicket): Promise<void>;
  /**
   * Undoes the take completely (request, charged tokens, leases), for a request a later admission step refused.
   * Budget already out of the window is not restored twice. Idempotent.
   */
  rollback(ticket: AdmissionTicket): Promise<void>;
  /** Closes connections and timers. */
  close(): Promise<void>;
}

/**
 * 503: the shared admission store (Redis) is unreachable and the failure policy is fail-closed, so nothing can be
 * admitted safely.
 */
export class AdmissionStoreUnavailableError extends UnavailableError {
  constructor(options: { cause?: unknown } = {}) {
    super('Rate limits cannot be checked right now; retry shortly.', 'admission_store_unavailable', options);
  }
}

/** Policy when the shared store is unreachable: refuse everything (`closed`) or enforce limits per process (`open`). */
export const admissionFailurePolicies = ['closed', 'open'] as const;

/** One of `admissionFailurePolicies`. */
export type AdmissionFailurePolicy = (typeof admissionFailurePolicies)[number];
