/** The error for a request that no deployment of its model can take right now. */
import { GatewayError } from '../errors/gateway-error.js';

/**
 * 503 `no_deployment_available`: every deployment of the model has its circuit open or is saturated by its upstream.
 * Carries `retry-after` (whole seconds, at least 1) when the router knows when one frees up.
 */
export class NoDeploymentAvailableError extends GatewayError {
  constructor(
    /** The public model name. */
    readonly model: string,
    /** When a deployment may be available again, ms from now; `undefined` when unknown. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(
      503,
      'server_error',
      'no_deployment_available',
      `No deployment of the model '${model}' is available right now.`,
      true,
      retryAfterMs === undefined
        ? {}
        : { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) } },
    );
  }
}
