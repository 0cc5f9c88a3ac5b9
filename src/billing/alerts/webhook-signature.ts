/**
 * Webhook signing. Each delivery attempt carries
 *
 *     x-tollgate-timestamp: <Unix seconds of the attempt>
 *     x-tollgate-signature: t=<same timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
 *
 * (the scheme Stripe popularised). A receiver recomputes the HMAC over the **raw** request body bytes — not a
 * re-serialised JSON — compares it in constant time, and rejects timestamps outside its tolerance so a captured
 * request cannot be replayed later. The header may carry several `v1=` entries (secret rotation); one match is
 * enough. Retries are signed afresh with their own timestamp; the event id stays the same.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Header names, lower case. */
export const WEBHOOK_HEADERS = {
  eventId: 'x-tollgate-event-id',
  timestamp: 'x-tollgate-timestamp',
  signature: 'x-tollgate-signature',
} as const;

/** The hex HMAC-SHA256 of `"<timestampSeconds>.<body>"`. */
export function computeWebhookSignature(secret: string, timestampSeconds: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestampSeconds}.${body}`).digest('hex');
}

/** The `x-tollgate-signature` header value for a body sent at `timestampSeconds`. */
export function signWebhook(secret: string, timestampSeconds: number, body: string): string {
  return `t=${timestampSeconds},v1=${computeWebhookSignature(secret, timestampSeconds, body)}`;
}

/**
 * Whether `header` (the `x-tollgate-signature` value) is a valid signature of the raw `body` under `secret`, made
 * no more than `toleranceSeconds` away from `nowSeconds` (either direction, for clock skew). Malformed headers are
 * simply invalid.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | undefined,
  body: string,
  nowSeconds: number,
  toleranceSeconds: number,
): boolean {
  if (header === undefined) return false;
  let timestamp: number | undefined;
  const candidates: string[] = [];
  for (const part of header.split(',')) {
    const separator = part.indexOf('=');
    if (separator <= 0) return false;
    const name = part.slice(0, separator).trim();
    const value = part.slice(separator + 1).trim();
    if (name === 't') {
      if (timestamp !== undefined || !/^[0-9]{1,12}$/.test(value)) return false;
      timestamp = Number(value);
    } else if (name === 'v1') {
      candidates.push(value);
    }
  }
  if (timestamp === undefined || candidates.length === 0) return false;
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = Buffer.from(computeWebhookSignature(secret, timestamp, body), 'hex');
  return candidates.some((candidate) => {
    if (!/^[0-9a-f]{64}$/i.test(candidate)) return false;
    return timingSafeEqual(expected, Buffer.from(candidate, 'hex'));
  });
}
