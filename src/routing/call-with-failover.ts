/**
 * Retry and failover around the part of an upstream call that is still safe to repeat.
 *
 * THE CONTRACT — read before use:
 * `attemptFn` must do only the pre-first-byte phase: `upstream.complete(...)`, or `upstream.stream(...)` up to the
 * moment it resolves (the upstream accepted the request). It must not send anything to the client. Once the wrapper
 * returns, the request is committed to that deployment: iterating a stream happens outside the wrapper and is NEVER
 * retried — a failure there goes to the client (as an error event) and to `result.attempt.fail(error)`, not to another
 * deployment. Retrying after the client saw a byte would duplicate or splice answers and bill twice.
 *
 * A retryable failure (connect error, broken connection, timeout, 5xx, upstream 429 — see `classifyFailure`) moves the
 * request to another deployment of the model, never one that already failed it, up to `maxAttempts` attempts.
 * Non-retryable failures (upstream 4xx, invalid request) and cancellations are thrown at once. Every attempt is listed
 * in the result (and passed to `onAttempt` as it ends) for the request log.
 */
import { performance } from 'node:perf_hooks';
import type { CatalogModel, Deployment } from '../catalog/catalog.js';
import { GatewayError, UpstreamError } from '../errors/gateway-error.js';
import { type FailureKind, retriesElsewhere } from './classify-failure.js';
import type { DeploymentRouter, RouteAttempt } from './deployment-router.js';
import { NoDeploymentAvailableError } from './no-deployment-available-error.js';

/** How one attempt ended: `accepted` (the upstream took the request) or why it failed. */
export type FailoverOutcome = 'accepted' | FailureKind;

/** One attempt, as the request log shows it. */
export interface FailoverAttempt {
  /** Deployment id, `upstream/model`. */
  deployment: string;
  outcome: FailoverOutcome;
  /** The error's stable code (`upstream_timeout`, `upstream_http_error` …); `null` when accepted. */
  errorCode: string | null;
  /** Status the upstream answered with, when it answered with an error. */
  upstreamStatus: number | null;
  /** From sending the request to its acceptance or failure, wall-clock ms. */
  durationMs: number;
}

/** Options of `callWithFailover`. */
export interface FailoverOptions {
  /** Tokens the request holds in flight (prompt + output cap), charged to each deployment tried. */
  tokens: number;
  /** Most attempts, the first included (≥ 1). Default 3. */
  maxAttempts?: number;
  /** The request's abort signal: once aborted, no further attempt is made and the failure is not held against the deployment. */
  signal?: AbortSignal;
  /**
   * Leave the accepted attempt open: the caller finishes `result.attempt` (`succeed` / `fail` / `cancel`) when the
   * stream ends, so its tokens stay in flight meanwhile. Use it for streams. Default false: the wrapper calls
   * `succeed()` as soon as `attemptFn` resolves (right for whole answers).
   */
  keepOpen?: boolean;
  /** Deployment ids never to try for this request. Default none. */
  exclude?: ReadonlySet<string>;
  /** Called as each attempt ends, failed ones included — the only way to see attempts when the call throws. */
  onAttempt?: (attempt: FailoverAttempt) => void;
}

/** What a successful `callWithFailover` returns. */
export interface FailoverResult<T> {
  /** What `attemptFn` resolved with. */
  value: T;
  /** The deployment that accepted the request. */
  deployment: Deployment;
  /** Its attempt: already succeeded, or open when `keepOpen` is set. */
  attempt: RouteAttempt;
  /** Every attempt in order, the accepted one last. */
  attempts: readonly FailoverAttempt[];
}

/** The pre-first-byte phase of one upstream call on `deployment` (see the contract above). */
export type AttemptFunction<T> = (deployment: Deployment, attempt: RouteAttempt) => Promise<T>;

/**
 * Runs `attemptFn` on a deployment of `model` chosen by `router`, moving to another deployment on retryable failures.
 * Throws the last attempt's error when every attempt failed, the error itself when it is not retryable, and
 * `NoDeploymentAvailableError` when no deployment could be tried at all.
 */
export async function callWithFailover<T>(
  router: DeploymentRouter,
  model: CatalogModel,
  attemptFn: AttemptFunction<T>,
  options: FailoverOptions,
): Promise<FailoverResult<T>> {
  const maxAttempts = options.maxAttempts ?? 3;
  if (!(maxAttempts >= 1)) throw new RangeError(`maxAttempts must be at least 1, got ${maxAttempts}`);
  const { signal, tokens } = options;
  const tried = new Set(options.exclude ?? []);
  const attempts: FailoverAttempt[] = [];
  const record = (entry: FailoverAttempt) => {
    attempts.push(entry);
    options.onAttempt?.(entry);
  };
  let lastError: unknown;
  let hasFailed = false;

  for (let number = 1; number <= maxAttempts; number++) {
    if (isAborted(signal)) throw hasFailed ? lastError : signal?.reason;
    const deployment = router.pick(model, { exclude: tried, tokens });
    if (deployment === undefined) {
      if (hasFailed) throw lastError;
      throw new NoDeploymentAvailableError(model.name, router.retryAfterMs(model, tried));
    }
    tried.add(deployment.id);
    const attempt = router.begin(deployment, tokens);
    const startedAt = performance.now();
    try {
      const value = await attemptFn(deployment, attempt);
      attempt.firstByte();
      if (options.keepOpen !== true) attempt.succeed();
      record({
        deployment: deployment.id,
        outcome: 'accepted',
        errorCode: null,
        upstreamStatus: null,
        durationMs: performance.now() - startedAt,
      });
      return { value, deployment, attempt, attempts };
    } catch (error: unknown) {
      let outcome: FailureKind;
      if (isAborted(signal)) {
        attempt.cancel();
        outcome = 'cancelled';
      } else {
        outcome = attempt.fail(error);
      }
      record({
        deployment: deployment.id,
        outcome,
        errorCode: error instanceof GatewayError ? error.code : null,
        upstreamStatus: error instanceof UpstreamError ? (error.upstreamStatus ?? null) : null,
        durationMs: performance.now() - startedAt,
      });
      lastError = error;
      hasFailed = true;
      if (outcome === 'cancelled' || !retriesElsewhere(outcome, error)) throw error;
    }
  }
  throw lastError;
}

// A function, so the check is not narrowed away: the signal may be aborted while `attemptFn` runs.
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

/** One line for the request log, e.g. `a/m unhealthy upstream_unreachable 2ms → b/m accepted 14ms`. */
export function summarizeAttempts(attempts: readonly FailoverAttempt[]): string {
  return attempts
    .map((attempt) => {
      const code = attempt.errorCode === null ? '' : ` ${attempt.errorCode}`;
      const status = attempt.upstreamStatus === null ? '' : ` ${attempt.upstreamStatus}`;
      return `${attempt.deployment} ${attempt.outcome}${code}${status} ${Math.round(attempt.durationMs)}ms`;
    })
    .join(' → ');
}
