import type { RateLimitState } from './admission-store.js';

/** Every header `rateLimitHeaders` may set (a browser page may read them: `server.cors`). */
export const RATE_LIMIT_HEADER_NAMES = [
  'x-ratelimit-limit-requests',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-tokens',
  'retry-after',
] as const;

/**
 * OpenAI's rate-limit response headers for `state`: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the
 * dimensions some scope limits, and `retry-after` (whole seconds, at least 1, rounded up) when `retryAfterMs` is
 * given, i.e. on a refusal. `x-ratelimit-reset-requests` is when the next request would be admitted (`0s` while
 * one remains); `x-ratelimit-reset-tokens` is when the minute's window is empty again (see `WindowState.resetMs`).
 */
export function rateLimitHeaders(state: RateLimitState, retryAfterMs?: number): Record<string, string> {
  const headers: Record<string, string> = {};
  if (state.requests !== undefined) {
    headers['x-ratelimit-limit-requests'] = String(state.requests.limit);
    headers['x-ratelimit-remaining-requests'] = String(state.requests.remaining);
    headers['x-ratelimit-reset-requests'] = formatRateLimitDuration(state.requests.resetMs);
  }
  if (state.tokens !== undefined) {
    headers['x-ratelimit-limit-tokens'] = String(state.tokens.limit);
    headers['x-ratelimit-remaining-tokens'] = String(state.tokens.remaining);
    headers['x-ratelimit-reset-tokens'] = formatRateLimitDuration(state.tokens.resetMs);
  }
  if (retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
  return headers;
}

/**
 * A duration as OpenAI writes its reset headers (Go's `time.Duration` format at millisecond precision): `250ms`,
 * `1s`, `1.5s`, `6m0s`, `1h2m3s`. Fractions of a millisecond are rounded up so a reset is never announced early.
 */
export function formatRateLimitDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms));
  if (total === 0) return '0s';
  if (total < 1000) return `${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const millis = total % 60_000;
  const wholeSeconds = Math.floor(millis / 1000);
  const fraction = millis % 1000;
  const seconds =
    fraction === 0 ? String(wholeSeconds) : `${wholeSeconds}.${String(fraction).padStart(3, '0').replace(/0+$/, '')}`;
  if (hours > 0) return `${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}
