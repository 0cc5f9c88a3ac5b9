/**
 * Delivers webhook events as signed HTTP POSTs (see `webhook-signature.ts` for the scheme), in the background, with
 * bounded retries. Delivery is at least once per enqueued event while the process lives: a receiver must
 * de-duplicate by `x-tollgate-event-id`. Events are held in memory only; the queue is bounded so a dead receiver
 * cannot grow the heap, and what is still undelivered when `close` runs out of time is logged and dropped.
 *
 * Retry policy: network errors (including the per-attempt timeout), 429 and 5xx are retried with exponential
 * backoff and "equal jitter" (half the exponential delay fixed, half random), or after the response's `Retry-After`
 * when it has one (seconds or an HTTP date, capped). Any other status — 3xx, 4xx — is final: the receiver refused the
 * event and sending it again would not change its mind.
 */
import { request } from 'undici';
import { type Clock, type ClockTimer, RealClock } from '../../clock/clock.js';
import { assertNever } from '../../errors/assert-never.js';
import type { Logger } from '../../observability/logger.js';
import type { WebhookEvent } from './budget-alert-event.js';
import { signWebhook, WEBHOOK_HEADERS } from './webhook-signature.js';

export { verifyWebhookSignature } from './webhook-signature.js';

/** Options of `WebhookNotifier`. */
export interface WebhookNotifierOptions {
  /**
   * HMAC-SHA256 signing secret. The caller reads it from the environment variable named by
   * `billing.webhook_secret_env`. Never logged.
   */
  secret: string;
  logger: Logger;
  /** Timestamps and backoff timers. Default: the wall clock. */
  clock?: Clock;
  /** Uniform random numbers in [0, 1) for jitter. Default `Math.random`. */
  random?: () => number;
  /** Per-attempt timeout (connect to end of response), ms. Default 10000. */
  timeoutMs?: number;
  /** Attempts per event, the first included. Default 6. */
  maxAttempts?: number;
  /** Backoff before the first retry, before jitter, ms; doubles per attempt. Default 1000. */
  baseDelayMs?: number;
  /** Largest backoff before jitter, ms. Default 60000. */
  maxDelayMs?: number;
  /** Largest `Retry-After` honoured, ms; longer requests wait this long. Default 300000. */
  maxRetryAfterMs?: number;
  /** Events held at once (waiting, in flight or between attempts); more are dropped with an error log. Default 1000. */
  maxQueueSize?: number;
  /** Deliveries in flight at once. Default 4. */
  concurrency?: number;
}

/** What `close` left behind. */
export interface WebhookNotifierCloseResult {
  /** Events still undelivered at the deadline (each logged as `webhook_abandoned`). */
  abandoned: number;
}

/** How one attempt ended. */
type AttemptOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'retryable'; status?: number; error?: string; retryAfterMs?: number }
  | { kind: 'rejected'; status: number };

interface Delivery {
  readonly event: WebhookEvent;
  readonly url: URL;
  /** Origin and path only: query strings and user info may hold receiver credentials. */
  readonly logUrl: string;
  readonly body: string;
  attempts: number;
  timer: ClockTimer | undefined;
  abort: AbortController | undefined;
  abandoned: boolean;
}

/** Background sender of signed webhooks. */
export class WebhookNotifier {
  private readonly secret: string;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly timeoutMs: number;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly maxQueueSize: number;
  private readonly concurrency: number;

  /** Every undelivered event: queued, in flight or waiting for its next attempt. */
  private readonly pending = new Set<Delivery>();
  private readonly ready: Delivery[] = [];
  private active = 0;
  private closing = false;
  private idleWaiters: Array<() => void> = [];

  constructor(options: WebhookNotifierOptions) {
    this.secret = options.secret;
    this.logger = options.logger;
    this.clock = options.clock ?? new RealClock();
    this.random = options.random ?? Math.random;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 6);
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 300_000;
    this.maxQueueSize = Math.max(1, options.maxQueueSize ?? 1000);
    this.concurrency = Math.max(1, options.concurrency ?? 4);
  }

  /** Events not yet delivered or given up. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Queues `event` for delivery to `url` (http or https). Returns false, with an error log, when the event is not
   * taken: the queue is full, the notifier is closing, or the URL is unusable.
   */
  enqueue(url: string, event: WebhookEvent): boolean {
    let target: URL;
    try {
      target = new URL(url);
    } catch (error: unknown) {
      this.logDropped(event, 'invalid_url', undefined, error);
      return false;
    }
    const logUrl = `${target.origin}${target.pathname}`;
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      this.logDropped(event, 'invalid_url', logUrl);
      return false;
    }
    if (this.closing) {
      this.logDropped(event, 'closing', logUrl);
      return false;
    }
    if (this.pending.size >= this.maxQueueSize) {
      this.logDropped(event, 'queue_full', logUrl);
      return false;
    }
    const delivery: Delivery = {
      event,
      url: target,
      logUrl,
      body: JSON.stringify(event),
      attempts: 0,
      timer: undefined,
      abort: undefined,
      abandoned: false,
    };
    this.pending.add(delivery);
    this.ready.push(delivery);
    this.pump();
    return true;
  }

  /** Resolves when every event taken so far is delivered or given up (including retries still to come). */
  idle(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops taking events and waits up to `deadlineMs` (on the notifier's clock; default 5000) for the ones held to
   * be delivered or given up. What remains is abandoned: backoff timers are cancelled, requests in flight aborted,
   * and each event is logged as `webhook_abandoned`.
   */
  close(deadlineMs = 5000): Promise<WebhookNotifierCloseResult> {
    this.closing = true;
    if (this.pending.size === 0) return Promise.resolve({ abandoned: 0 });
    return new Promise((resolve) => {
      let settled = false;
      const deadline = this.clock.setTimer(deadlineMs, () => {
        if (settled) return;
        settled = true;
        resolve({ abandoned: this.abandonAll() });
      });
      void this.idle().then(() => {
        if (settled) return;
        settled = true;
        deadline.cancel();
        resolve({ abandoned: 0 });
      });
    });
  }

  private pump(): void {
    while (this.active < this.concurrency) {
      const delivery = this.ready.shift();
      if (delivery === undefined) return;
      this.active += 1;
      void this.attempt(delivery);
    }
  }

  private async attempt(delivery: Delivery): Promise<void> {
    delivery.attempts += 1;
    const started = performance.now();
    const outcome = await this.send(delivery);
    this.active -= 1;
    if (!delivery.abandoned) this.conclude(delivery, outcome, Math.round(performance.now() - started));
    this.pump();
  }

  private async send(delivery: Delivery): Promise<AttemptOutcome> {
    const timestamp = Math.floor(this.clock.now() / 1000);
    const controller = new AbortController();
    delivery.abort = controller;
    try {
      const response = await request(delivery.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tollgate-webhooks/1',
          [WEBHOOK_HEADERS.eventId]: delivery.event.id,
          [WEBHOOK_HEADERS.timestamp]: String(timestamp),
          [WEBHOOK_HEADERS.signature]: signWebhook(this.secret, timestamp, delivery.body),
        },
        body: delivery.body,
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(this.timeoutMs)]),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
      // The body is not needed, but it must be consumed so the connection can be reused.
      await response.body.dump();
      const status = response.statusCode;
      if (status >= 200 && status < 300) return { kind: 'delivered', status };
      if (status === 429 || status >= 500) {
        const retryAfterMs = this.parseRetryAfter(response.headers['retry-after']);
        return retryAfterMs === undefined ? { kind: 'retryable', status } : { kind: 'retryable', status, retryAfterMs };
      }
      return { kind: 'rejected', status };
    } catch (error: unknown) {
      return { kind: 'retryable', error: describeError(error) };
    } finally {
      delivery.abort = undefined;
    }
  }

  private conclude(delivery: Delivery, outcome: AttemptOutcome, durationMs: number): void {
    const fields = {
      eventId: delivery.event.id,
      eventType: delivery.event.type,
      url: delivery.logUrl,
      attempt: delivery.attempts,
      maxAttempts: this.maxAttempts,
      durationMs,
    };
    switch (outcome.kind) {
      case 'delivered':
        this.logger.info({ ...fields, outcome: 'delivered', status: outcome.status }, 'webhook_attempt');
        this.finish(delivery);
        return;
      case 'rejected':
        this.logger.warn({ ...fields, outcome: 'rejected', status: outcome.status }, 'webhook_attempt');
        this.logger.error(
          { ...fields, attempts: delivery.attempts, reason: 'rejected', status: outcome.status },
          'webhook_failed',
        );
        this.finish(delivery);
        return;
      case 'retryable': {
        const failure = { status: outcome.status, error: outcome.error, retryAfterMs: outcome.retryAfterMs };
        if (delivery.attempts >= this.maxAttempts) {
          this.logger.warn({ ...fields, ...failure, outcome: 'failed' }, 'webhook_attempt');
          this.logger.error(
            { ...fields, ...failure, attempts: delivery.attempts, reason: 'max_attempts' },
            'webhook_failed',
          );
          this.finish(delivery);
          return;
        }
        const delayMs = outcome.retryAfterMs ?? this.backoffMs(delivery.attempts);
        this.logger.warn({ ...fields, ...failure, outcome: 'retry', retryInMs: delayMs }, 'webhook_attempt');
        delivery.timer = this.clock.setTimer(delayMs, () => {
          delivery.timer = undefined;
          if (delivery.abandoned) return;
          this.ready.push(delivery);
          this.pump();
        });
        return;
      }
      default:
        assertNever(outcome);
    }
  }

  /** Backoff after the `attempt`-th failed attempt: half of `base × 2^(attempt−1)` (capped) plus up to as much again. */
  private backoffMs(attempt: number): number {
    const exponential = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    return Math.round(exponential / 2 + this.random() * (exponential / 2));
  }

  /** `Retry-After` as ms from now: delta seconds or an HTTP date; undefined when absent or unreadable. */
  private parseRetryAfter(header: string | string[] | undefined): number | undefined {
    const value = (Array.isArray(header) ? header[0] : header)?.trim();
    if (value === undefined || value === '') return undefined;
    let delayMs: number;
    if (/^[0-9]+$/.test(value)) {
      delayMs = Number(value) * 1000;
    } else {
      const date = Date.parse(value);
      if (Number.isNaN(date)) return undefined;
      delayMs = date - this.clock.now();
    }
    return Math.min(this.maxRetryAfterMs, Math.max(0, delayMs));
  }

  private finish(delivery: Delivery): void {
    this.pending.delete(delivery);
    if (this.pending.size === 0) this.notifyIdle();
  }

  private abandonAll(): number {
    const abandoned = [...this.pending];
    for (const delivery of abandoned) {
      delivery.abandoned = true;
      delivery.timer?.cancel();
      delivery.abort?.abort();
      this.logger.error(
        {
          eventId: delivery.event.id,
          eventType: delivery.event.type,
          url: delivery.logUrl,
          attempts: delivery.attempts,
        },
        'webhook_abandoned',
      );
    }
    this.pending.clear();
    this.ready.length = 0;
    this.notifyIdle();
    return abandoned.length;
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private logDropped(event: WebhookEvent, reason: string, url: string | undefined, error?: unknown): void {
    this.logger.error(
      {
        eventId: event.id,
        eventType: event.type,
        url,
        reason,
        error: error === undefined ? undefined : describeError(error),
      },
      'webhook_dropped',
    );
  }
}

/** A short, secret-free description of a failed request (no headers, no body). */
function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? `${error.name} ${code}: ${error.message}` : `${error.name}: ${error.message}`;
  }
  return String(error);
}
