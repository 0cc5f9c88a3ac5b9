/**
 * What a failed upstream call says about the deployment that served it. Routing reads only this verdict: the circuit
 * breaker counts `unhealthy`, saturation comes from `saturated`, and neither a bad request nor a cancelled one is held
 * against the deployment.
 */
import { GatewayError, UpstreamError, UpstreamTimeoutError } from '../errors/gateway-error.js';

/**
 * The verdicts:
 * - `unhealthy`: the deployment failed (connect error, broken connection, timeout, 5xx or 408, malformed answer) or
 *   is misconfigured (401 or 403: the gateway's key is refused; 404: the upstream knows no such model or endpoint);
 *   counts towards its circuit breaker; retryable on another deployment.
 * - `saturated`: the deployment is alive but refused the load (upstream 429); marks it saturated; retryable elsewhere.
 * - `rejected`: the deployment refused this request (other 4xx, an invalid request); another one would refuse it too.
 * - `cancelled`: the client or the gateway gave up (abort); says nothing about the deployment.
 */
export const failureKinds = ['unhealthy', 'saturated', 'rejected', 'cancelled'] as const;
/** One of `failureKinds`. */
export type FailureKind = (typeof failureKinds)[number];

/** Classifies any error thrown by an `Upstream` call. */
export function classifyFailure(error: unknown): FailureKind {
  if (isAbort(error)) return 'cancelled';
  if (error instanceof UpstreamTimeoutError) return 'unhealthy';
  if (error instanceof UpstreamError) {
    const status = error.upstreamStatus;
    // No status means the upstream never answered properly: refused, reset, cut mid-body, malformed.
    if (status === undefined || status >= 500 || status === 408) return 'unhealthy';
    if (status === 401 || status === 403 || status === 404) return 'unhealthy';
    if (status === 429) return 'saturated';
    return 'rejected';
  }
  if (error instanceof GatewayError) return 'rejected';
  // A programming error or an unexpected transport failure: treat the deployment as suspect, not the request.
  return 'unhealthy';
}

/** Whether a failure of `kind` may be retried on another deployment before the first byte reached the client. */
export function retriesElsewhere(kind: FailureKind, error: unknown): boolean {
  if (kind !== 'unhealthy' && kind !== 'saturated') return false;
  // The adapter's own judgement wins; an error that is not a gateway error is a bug, and a bug is not retried.
  return error instanceof GatewayError && error.retryable;
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError');
}
