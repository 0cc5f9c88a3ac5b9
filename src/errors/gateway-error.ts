/**
 * The gateway's error hierarchy. Every error that can reach a client is a `GatewayError` with a stable machine
 * `code` (never reused for another meaning), the HTTP status OpenAI would use, the OpenAI error `type`, and whether a
 * retry may succeed. `toOpenAIErrorBody` is the one place that turns any error into the OpenAI error body.
 */

/** The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Options shared by every gateway error. */
export interface GatewayErrorOptions {
  /** The request field the error is about (OpenAI's `param`), e.g. `messages[0].content`. */
  param?: string | null;
  /** Extra response headers (e.g. `retry-after`). */
  headers?: Record<string, string>;
  /** The underlying error, kept for logs; never shown to clients. */
  cause?: unknown;
}

/** Base class: a client-visible error with a stable code. */
export class GatewayError extends Error {
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    /** HTTP status. */
    readonly status: number,
    /** OpenAI error `type`. */
    readonly type: string,
    /** Stable machine code. */
    readonly code: string,
    message: string,
    /** Whether the same request may succeed if retried later. */
    readonly retryable: boolean,
    options: GatewayErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }
}

/** 400: the request is malformed or has a field of the wrong type or value. */
export class InvalidRequestError extends GatewayError {
  constructor(message: string, options: GatewayErrorOptions & { code?: string } = {}) {
    super(400, 'invalid_request_error', options.code ?? 'invalid_request', message, false, options);
  }
}

/**
 * 499 (nginx's "client closed request"): the client went away before its answer. No client reads it; the request
 * log does, and it is not the gateway's failure, nor the upstream's.
 */
export class ClientClosedError extends GatewayError {
  constructor() {
    super(499, 'invalid_request_error', 'client_closed', 'The client closed the request.', false);
  }
}

/**
 * Why a request's work was aborted: the gateway's own reason when it gave one (shutdown stopping what still runs),
 * otherwise the client left.
 */
export function abortedRequestError(signal: AbortSignal): GatewayError {
  return signal.reason instanceof GatewayError ? signal.reason : new ClientClosedError();
}

/**
 * Refusals a later attempt may pass, which work that no client waits on (batch lines, background responses) waits out:
 * rate limits (not an empty wallet), shed or busy capacity, a store that is briefly down.
 */
export function isWaitableRefusal(error: GatewayError): boolean {
  if (error.status === 429) return error.code !== 'insufficient_quota';
  return error.status === 503;
}

/** 401: the API key is missing, unknown, revoked or expired. */
export class AuthenticationError extends GatewayError {
  constructor(message: string, code = 'invalid_api_key') {
    super(401, 'invalid_request_error', code, message, false);
  }
}

/** 403: the key is valid but may not use this resource. */
export class PermissionError extends GatewayError {
  constructor(message: string, code = 'model_not_allowed', options: GatewayErrorOptions = {}) {
    super(403, 'permission_error', code, message, false, options);
  }
}

/** 404: the resource does not exist (or belongs to another tenant). */
export class NotFoundError extends GatewayError {
  constructor(message: string, code = 'not_found', options: GatewayErrorOptions = {}) {
    super(404, 'invalid_request_error', code, message, false, options);
  }
}

/** 413: the body is larger than the configured limit. */
export class PayloadTooLargeError extends GatewayError {
  constructor(limitBytes: number) {
    super(413, 'invalid_request_error', 'request_too_large', `Request body exceeds ${limitBytes} bytes.`, false);
  }
}

/** 429: a rate limit (RPM, TPM, concurrency, queue wait) refused the request. */
export class RateLimitError extends GatewayError {
  constructor(message: string, retryAfterSeconds: number, code = 'rate_limit_exceeded') {
    super(429, 'requests', code, message, true, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) },
    });
  }
}

/** 429 `insufficient_quota`: the wallet or budget cannot cover the request. */
export class InsufficientQuotaError extends GatewayError {
  constructor(message: string) {
    super(429, 'insufficient_quota', 'insufficient_quota', message, false);
  }
}

/** 502: the upstream failed (connection refused, 5xx, malformed answer, stream cut). */
export class UpstreamError extends GatewayError {
  constructor(
    message: string,
    options: GatewayErrorOptions & {
      code?: string;
      /** Status the upstream answered with, when it answered. */
      upstreamStatus?: number;
      retryable?: boolean;
      /** Seconds from the upstream's `Retry-After`, when it sent one. */
      retryAfterSeconds?: number;
      /** The upstream's own error code (e.g. `context_length_exceeded`), when it rejected the request. */
      upstreamCode?: string;
    } = {},
  ) {
    super(502, 'server_error', options.code ?? 'upstream_error', message, options.retryable ?? true, options);
    this.upstreamStatus = options.upstreamStatus;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.upstreamCode = options.upstreamCode;
  }
  readonly upstreamCode: string | undefined;
  readonly upstreamStatus: number | undefined;
  readonly retryAfterSeconds: number | undefined;
}

/** 504: the upstream did not connect, start or continue answering in time. */
export class UpstreamTimeoutError extends GatewayError {
  constructor(
    message: string,
    /** Which timeout fired. */
    readonly phase: 'connect' | 'first_byte' | 'idle' | 'total',
  ) {
    super(504, 'timeout', 'upstream_timeout', message, true);
  }
}

/** 503: the gateway is starting, draining or its store is unreachable. */
export class UnavailableError extends GatewayError {
  constructor(message: string, code = 'service_unavailable', options: GatewayErrorOptions = {}) {
    super(503, 'server_error', code, message, true, options);
  }
}

/**
 * 503 `store_unavailable`: the store failed a call the request cannot go without (its API key, its plan, whatever an
 * admin or billing route reads or writes), so it is refused as retryable rather than answered as an internal error.
 */
export class StoreUnavailableError extends UnavailableError {
  constructor(cause: unknown, what?: string) {
    super(
      what === undefined
        ? "The gateway's store is unavailable; retry shortly."
        : `The gateway could not read ${what}: its store is unavailable. Retry shortly.`,
      'store_unavailable',
      { cause },
    );
  }
}

/** Maps any thrown value to a `GatewayError`; unknown errors become an opaque 500 that leaks no detail. */
export function toGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  return new GatewayError(500, 'server_error', 'internal_error', 'The gateway failed to process the request.', true, {
    cause: error,
  });
}

/** The OpenAI error body for any error. */
export function toOpenAIErrorBody(error: GatewayError): OpenAIErrorBody {
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}
