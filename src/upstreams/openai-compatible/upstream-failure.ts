/**
 * How the OpenAI-compatible adapter turns every way an upstream call can fail (undici and socket errors, non-2xx
 * answers, error events) into the gateway's `UpstreamError` / `UpstreamTimeoutError`.
 */
import { type GatewayError, UpstreamError, UpstreamTimeoutError } from '../../errors/gateway-error.js';

/** The stable `code`s of the `UpstreamError`s this adapter raises. */
export const openAIUpstreamErrorCodes = [
  /** The upstream answered with a non-2xx status (`upstreamStatus` holds it). */
  'upstream_http_error',
  /** No connection could be made (refused, unknown host, network unreachable). Retryable. */
  'upstream_unreachable',
  /** The connection broke before the answer was complete (reset, closed, HTTP parse error). Retryable. */
  'upstream_connection_lost',
  /** The answer was not the JSON it should be. */
  'upstream_malformed_response',
  /** The upstream sent an error object inside a 2xx answer or stream. */
  'upstream_stream_error',
  /** The stream ended without `data: [DONE]`. */
  'upstream_stream_truncated',
  /** Anything else. */
  'upstream_error',
] as const;
/** One of `openAIUpstreamErrorCodes`. */
export type OpenAIUpstreamErrorCode = (typeof openAIUpstreamErrorCodes)[number];

/** Longest upstream error message passed on to the client, characters. */
const MAX_FORWARDED_MESSAGE = 1_000;

const unreachableCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
]);
const connectionLostCodes = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ECONNRESET',
  'EPIPE',
]);

function errorCode(error: unknown): string | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  // Node's happy-eyeballs connect (`autoSelectFamily`) reports an AggregateError of the per-address failures.
  if (error instanceof AggregateError) {
    for (const inner of error.errors) {
      const innerCode = errorCode(inner);
      if (innerCode !== undefined) return innerCode;
    }
  }
  return undefined;
}

/**
 * Maps a thrown transport error (undici, socket, DNS) to the gateway error the core understands. Gateway errors pass
 * through unchanged. Abort reasons are not handled here: callers rethrow `signal.reason` themselves.
 */
export function toUpstreamFailure(error: unknown, upstreamName: string): GatewayError {
  if (error instanceof UpstreamError || error instanceof UpstreamTimeoutError) return error;
  const code = errorCode(error);
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new UpstreamTimeoutError(`Upstream ${upstreamName} did not accept a connection in time.`, 'connect');
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new UpstreamTimeoutError(`Upstream ${upstreamName} did not start answering in time.`, 'first_byte');
    case 'UND_ERR_BODY_TIMEOUT':
      return new UpstreamTimeoutError(`Upstream ${upstreamName} stopped sending in the middle of its answer.`, 'idle');
    default:
      break;
  }
  if (code !== undefined && unreachableCodes.has(code)) {
    return new UpstreamError(`Upstream ${upstreamName} is unreachable.`, {
      code: 'upstream_unreachable',
      retryable: true,
      cause: error,
    });
  }
  if (code !== undefined && (connectionLostCodes.has(code) || code.startsWith('HPE_'))) {
    return new UpstreamError(`The connection to upstream ${upstreamName} broke.`, {
      code: 'upstream_connection_lost',
      retryable: true,
      cause: error,
    });
  }
  return new UpstreamError(`The call to upstream ${upstreamName} failed.`, {
    code: 'upstream_error',
    retryable: true,
    cause: error,
  });
}

/**
 * Seconds to wait, from a `Retry-After` value: a number of seconds or an HTTP date (relative to `nowMs`). Returns
 * `undefined` when the value is absent or unreadable; never negative.
 */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  if (/^[0-9]+(\.[0-9]+)?$/.test(trimmed)) return Number(trimmed);
  // An HTTP date always names a day or month; V8's Date.parse would otherwise read strings like "-5" as years.
  if (!/[A-Za-z]/.test(trimmed)) return undefined;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}

function parseRetryAfterMs(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || !/^[0-9]+(\.[0-9]+)?$/.test(text.trim())) return undefined;
  return Number(text.trim()) / 1000;
}

/** The parts of an OpenAI-style error object the adapter reads (`{"error":{…}}` or vLLM's flat `{"object":"error",…}`). */
interface UpstreamErrorDetail {
  message: string | undefined;
  param: string | undefined;
  /** OpenAI-style machine code, e.g. `context_length_exceeded`. */
  code?: string | undefined;
}

/** Finds the error object in a parsed upstream body, if it holds one. */
export function findUpstreamError(body: unknown): UpstreamErrorDetail | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const record = body as Record<string, unknown>;
  let detail: Record<string, unknown> | undefined;
  if (record.error !== null && typeof record.error === 'object') detail = record.error as Record<string, unknown>;
  else if (typeof record.error === 'string') return { message: record.error, param: undefined };
  else if (record.object === 'error') detail = record;
  if (detail === undefined) return undefined;
  return {
    message: typeof detail.message === 'string' ? detail.message : undefined,
    param: typeof detail.param === 'string' ? detail.param : undefined,
    code: typeof detail.code === 'string' ? detail.code : undefined,
  };
}

function parseErrorBody(text: string): UpstreamErrorDetail | undefined {
  try {
    return findUpstreamError(JSON.parse(text));
  } catch {
    // Error pages from proxies (HTML, plain text) are expected here; the status alone then describes the failure.
    return undefined;
  }
}

/**
 * The error for a non-2xx answer. Status 429, 408, 409 and 5xx are retryable, other 4xx are not. The upstream's own
 * message is forwarded only for client errors other than 401/403/429 (e.g. "maximum context length is …"): those
 * describe the request; the others describe the gateway's credentials or the upstream's internals.
 */
export function upstreamStatusError(
  upstreamName: string,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
  nowMs: number,
): UpstreamError {
  const detail = parseErrorBody(bodyText);
  // 401, 403 and 404 say the deployment is misconfigured (the gateway's key, its model name or its base URL), not
  // that the request is bad: another deployment of the model may well answer it. Their text stays gateway-side (it
  // names the upstream's model or account).
  const misconfigured = status === 401 || status === 403 || status === 404;
  const retryable = status >= 500 || status === 429 || status === 408 || status === 409 || misconfigured;
  const forwardMessage = status >= 400 && status < 500 && status !== 429 && !misconfigured;
  let message: string;
  if (forwardMessage && detail?.message !== undefined && detail.message !== '') {
    message =
      detail.message.length > MAX_FORWARDED_MESSAGE ? detail.message.slice(0, MAX_FORWARDED_MESSAGE) : detail.message;
  } else if (status === 401 || status === 403) {
    message = `Upstream ${upstreamName} rejected the gateway's credentials (status ${status}).`;
  } else if (status === 404) {
    message = `Upstream ${upstreamName} does not serve the deployment's model or endpoint (status 404).`;
  } else if (status === 429) {
    message = `Upstream ${upstreamName} is rate limiting requests.`;
  } else {
    message = `Upstream ${upstreamName} answered with status ${status}.`;
  }
  // OpenAI also sends `retry-after-ms`, which is more precise when present.
  const retryAfterSeconds =
    parseRetryAfterMs(headers['retry-after-ms']) ?? parseRetryAfter(headers['retry-after'], nowMs);
  return new UpstreamError(message, {
    code: 'upstream_http_error',
    upstreamStatus: status,
    retryable,
    ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }),
    ...(forwardMessage && detail?.param !== undefined ? { param: detail.param } : {}),
    ...(forwardMessage && typeof detail?.code === 'string' && /^[a-z0-9_]{1,64}$/.test(detail.code)
      ? { upstreamCode: detail.code }
      : {}),
    cause: new Error(`upstream ${upstreamName} status ${status}: ${bodyText.slice(0, 2_000)}`),
  });
}

/** The error for an error object received inside a 2xx stream or body. */
export function upstreamReportedError(upstreamName: string, detail: UpstreamErrorDetail, raw: string): UpstreamError {
  return new UpstreamError(`Upstream ${upstreamName} reported an error while answering.`, {
    code: 'upstream_stream_error',
    retryable: true,
    cause: new Error(`upstream ${upstreamName} error: ${detail.message ?? raw.slice(0, 2_000)}`),
  });
}
