import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { VirtualClock } from '../../clock/clock.js';
import { type BudgetThresholdCrossedEvent, toBudgetThresholdCrossedEvent } from './budget-alert-event.js';
import { verifyWebhookSignature, WebhookNotifier, type WebhookNotifierOptions } from './webhook-notifier.js';

const SECRET = 'whsec_never_log_me_4f1c9a';
const START = Date.UTC(2026, 10, 15, 12, 0, 0);
/** For `vi.waitFor` around real HTTP round trips, which a loaded machine can stall for seconds. */
const eventually = { timeout: 10_000 };

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  path: string;
}

/** What the receiver does with the n-th request (0-based): a status and headers, or hang until the test ends. */
type Responder = (index: number) => { status: number; headers?: Record<string, string> } | 'hang';

let server: Server;
let baseUrl: string;
let received: Received[] = [];
let responder: Responder = () => ({ status: 200 });
const hanging: ServerResponse[] = [];

beforeAll(async () => {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const index = received.length;
      received.push({
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        path: request.url ?? '',
      });
      const action = responder(index);
      if (action === 'hang') {
        hanging.push(response);
        return;
      }
      response.writeHead(action.status, action.headers);
      response.end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(() => {
  for (const response of hanging.splice(0)) response.destroy();
  received = [];
  responder = () => ({ status: 200 });
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function captureLogs() {
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void raw.push(line) });
  const entries = () => raw.map((line) => JSON.parse(line) as Record<string, unknown>);
  const withMessage = (message: string) => entries().filter((entry) => entry.msg === message);
  return { logger, raw, withMessage };
}

function sampleEvent(threshold = 80): BudgetThresholdCrossedEvent {
  return toBudgetThresholdCrossedEvent(
    {
      scope: 'tenant',
      scopeId: 'ten_a',
      tenantId: 'ten_a',
      period: '2026-11',
      threshold,
      limit: 100_000_000_000n,
      spent: 82_000_000_001n,
      currency: 'CNY',
      enforcement: 'soft',
    },
    START,
  );
}

function setup(options: Partial<WebhookNotifierOptions> = {}) {
  const clock = new VirtualClock(START);
  const logs = captureLogs();
  const notifier = new WebhookNotifier({
    secret: SECRET,
    logger: logs.logger,
    clock,
    random: () => 0,
    baseDelayMs: 100,
    timeoutMs: 2000,
    ...options,
  });
  return { clock, logs, notifier };
}

describe('WebhookNotifier', () => {
  it('POSTs the event as JSON with a signature the receiver can verify', async () => {
    const { clock, logs, notifier } = setup();
    const event = sampleEvent();
    expect(notifier.enqueue(`${baseUrl}/hooks/budget?token=abc`, event)).toBe(true);
    await notifier.idle();

    expect(received).toHaveLength(1);
    const [delivery] = received as [Received];
    expect(delivery.path).toBe('/hooks/budget?token=abc');
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(delivery.headers['x-tollgate-event-id']).toBe(event.id);
    const timestamp = delivery.headers['x-tollgate-timestamp'];
    expect(timestamp).toBe(String(START / 1000));
    const signature = delivery.headers['x-tollgate-signature'] as string;
    expect(signature.startsWith(`t=${START / 1000},v1=`)).toBe(true);
    const nowSeconds = clock.now() / 1000;
    expect(verifyWebhookSignature(SECRET, signature, delivery.body, nowSeconds, 300)).toBe(true);
    expect(verifyWebhookSignature('wrong-secret', signature, delivery.body, nowSeconds, 300)).toBe(false);
    expect(verifyWebhookSignature(SECRET, signature, `${delivery.body} `, nowSeconds, 300)).toBe(false);
    expect(verifyWebhookSignature(SECRET, signature, delivery.body, nowSeconds + 301, 300)).toBe(false);

    expect(JSON.parse(delivery.body)).toEqual({
      id: event.id,
      type: 'budget.threshold_crossed',
      created_at: START / 1000,
      data: {
        scope: 'tenant',
        scope_id: 'ten_a',
        tenant_id: 'ten_a',
        period: '2026-11',
        threshold: 80,
        limit: '100',
        spent: '82.000000001',
        currency: 'CNY',
        enforcement: 'soft',
      },
    });

    const [attempt] = logs.withMessage('webhook_attempt');
    expect(attempt).toMatchObject({ outcome: 'delivered', status: 200, attempt: 1, eventId: event.id, level: 30 });
    // The query string may carry the receiver's credentials: only origin and path are logged.
    expect(attempt?.url).toBe(`${baseUrl}/hooks/budget`);
    expect(logs.raw.join('')).not.toContain('token=abc');
    expect(logs.raw.join('')).not.toContain(SECRET);
    await notifier.close();
  });

  it('retries a 500 after the jittered backoff, then succeeds with the same event id', async () => {
    const randoms = [0, 1];
    const { clock, logs, notifier } = setup({ random: () => randoms.shift() ?? 0 });
    responder = (index) => ({ status: index < 2 ? 500 : 200 });
    notifier.enqueue(`${baseUrl}/hook`, sampleEvent());

    // First failure: backoff 100 ms, half fixed and half × random (0) = 50 ms.
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    expect(received).toHaveLength(1);
    clock.advance(49);
    expect(clock.pendingTimers).toBe(1);
    clock.advance(1);
    // Second failure: backoff 200 ms, random 1 → 100 + 100 = 200 ms.
    await vi.waitFor(() => expect(received).toHaveLength(2), eventually);
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    clock.advance(199);
    expect(clock.pendingTimers).toBe(1);
    clock.advance(1);
    await notifier.idle();

    expect(received).toHaveLength(3);
    const ids = received.map((request) => request.headers['x-tollgate-event-id']);
    expect(new Set(ids).size).toBe(1);
    // Each attempt is signed at its own time.
    const lastTimestamp = Number(received[2]?.headers['x-tollgate-timestamp']);
    expect(lastTimestamp).toBe(Math.floor((START + 250) / 1000));
    expect(
      verifyWebhookSignature(
        SECRET,
        received[2]?.headers['x-tollgate-signature'] as string,
        received[2]!.body,
        lastTimestamp,
        0,
      ),
    ).toBe(true);

    const attempts = logs.withMessage('webhook_attempt');
    expect(attempts.map((entry) => [entry.attempt, entry.outcome, entry.status, entry.retryInMs])).toEqual([
      [1, 'retry', 500, 50],
      [2, 'retry', 500, 200],
      [3, 'delivered', 200, undefined],
    ]);
    expect(logs.withMessage('webhook_failed')).toHaveLength(0);
    await notifier.close();
  });

  it('does not retry a 400 and logs the failure', async () => {
    const { clock, logs, notifier } = setup();
    responder = () => ({ status: 400 });
    const event = sampleEvent();
    notifier.enqueue(`${baseUrl}/hook`, event);
    await notifier.idle();
    clock.runUntilIdle();

    expect(received).toHaveLength(1);
    expect(clock.pendingTimers).toBe(0);
    const [failed] = logs.withMessage('webhook_failed');
    expect(failed).toMatchObject({ reason: 'rejected', status: 400, attempts: 1, eventId: event.id, level: 50 });
    await notifier.close();
  });

  it('waits exactly the Retry-After seconds of a 429', async () => {
    const { clock, logs, notifier } = setup();
    responder = (index) => (index === 0 ? { status: 429, headers: { 'retry-after': '7' } } : { status: 204 });
    notifier.enqueue(`${baseUrl}/hook`, sampleEvent());
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    clock.advance(6999);
    expect(clock.pendingTimers).toBe(1);
    expect(received).toHaveLength(1);
    clock.advance(1);
    await notifier.idle();
    expect(received).toHaveLength(2);
    expect(logs.withMessage('webhook_attempt')[0]).toMatchObject({ outcome: 'retry', status: 429, retryInMs: 7000 });
    await notifier.close();
  });

  it('reads a Retry-After HTTP date against its clock on a 503', async () => {
    const { clock, logs, notifier } = setup();
    const retryAt = new Date(START + 3000).toUTCString();
    responder = (index) => (index === 0 ? { status: 503, headers: { 'retry-after': retryAt } } : { status: 200 });
    notifier.enqueue(`${baseUrl}/hook`, sampleEvent());
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    clock.advance(2999);
    expect(clock.pendingTimers).toBe(1);
    clock.advance(1);
    await notifier.idle();
    expect(received).toHaveLength(2);
    expect(logs.withMessage('webhook_attempt')[0]).toMatchObject({ retryInMs: 3000 });
    await notifier.close();
  });

  it('gives up after the maximum number of attempts with an error log', async () => {
    const { clock, logs, notifier } = setup({ maxAttempts: 3 });
    responder = () => ({ status: 503 });
    const event = sampleEvent();
    notifier.enqueue(`${baseUrl}/hook`, event);
    for (let attempt = 1; attempt < 3; attempt += 1) {
      await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
      clock.runUntilIdle();
    }
    await notifier.idle();
    clock.runUntilIdle();

    expect(received).toHaveLength(3);
    expect(clock.pendingTimers).toBe(0);
    expect(logs.withMessage('webhook_attempt').map((entry) => entry.outcome)).toEqual(['retry', 'retry', 'failed']);
    const failures = logs.withMessage('webhook_failed');
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({
      reason: 'max_attempts',
      attempts: 3,
      status: 503,
      eventId: event.id,
      level: 50,
    });
    expect(logs.raw.join('')).not.toContain(SECRET);
    await notifier.close();
  });

  it('retries network errors', async () => {
    // A port that was free a moment ago: the connection is refused.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const { clock, logs, notifier } = setup();
    notifier.enqueue(`http://127.0.0.1:${port}/hook`, sampleEvent());
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    const [attempt] = logs.withMessage('webhook_attempt');
    expect(attempt).toMatchObject({ outcome: 'retry', attempt: 1, retryInMs: 50 });
    expect(attempt?.error).toMatch(/ECONNREFUSED/);
    expect(attempt?.status).toBeUndefined();
    // The deadline runs on the notifier's clock.
    const closing = notifier.close(0);
    clock.advance(0);
    await expect(closing).resolves.toEqual({ abandoned: 1 });
  });

  it('times out an attempt that gets no answer and retries it', async () => {
    const { clock, logs, notifier } = setup({ timeoutMs: 100 });
    responder = (index) => (index === 0 ? 'hang' : { status: 200 });
    notifier.enqueue(`${baseUrl}/hook`, sampleEvent());
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    expect(logs.withMessage('webhook_attempt')[0]).toMatchObject({ outcome: 'retry' });
    expect(String(logs.withMessage('webhook_attempt')[0]?.error)).toMatch(/timeout|abort/i);
    clock.runUntilIdle();
    await notifier.idle();
    expect(received).toHaveLength(2);
    await notifier.close();
  });

  it('bounds its queue and drops what does not fit, with an error log', async () => {
    const { logs, notifier } = setup({ concurrency: 1, maxQueueSize: 2 });
    responder = (index) => (index === 0 ? 'hang' : { status: 200 });
    expect(notifier.enqueue(`${baseUrl}/hook`, sampleEvent(50))).toBe(true);
    expect(notifier.enqueue(`${baseUrl}/hook`, sampleEvent(80))).toBe(true);
    expect(notifier.enqueue(`${baseUrl}/hook`, sampleEvent(100))).toBe(false);
    expect(notifier.size).toBe(2);
    expect(logs.withMessage('webhook_dropped')[0]).toMatchObject({
      reason: 'queue_full',
      eventId: sampleEvent(100).id,
    });
    await vi.waitFor(() => expect(received).toHaveLength(1), eventually);
    // One in flight, one queued behind it: concurrency 1 holds the second back.
    expect(received).toHaveLength(1);
    for (const response of hanging.splice(0)) response.end();
    await notifier.close();
  });

  it('refuses URLs it cannot POST to', async () => {
    const { logs, notifier } = setup();
    expect(notifier.enqueue('ftp://example.com/hook', sampleEvent())).toBe(false);
    expect(notifier.enqueue('not a url', sampleEvent())).toBe(false);
    expect(logs.withMessage('webhook_dropped').map((entry) => entry.reason)).toEqual(['invalid_url', 'invalid_url']);
    await notifier.close();
  });

  it('close waits for deliveries in flight and then refuses new events', async () => {
    const { notifier, logs } = setup();
    responder = () => 'hang';
    notifier.enqueue(`${baseUrl}/hook`, sampleEvent());
    await vi.waitFor(() => expect(received).toHaveLength(1), eventually);
    const closing = notifier.close(10_000);
    setTimeout(() => {
      for (const response of hanging.splice(0)) {
        response.writeHead(200);
        response.end();
      }
    }, 20);
    await expect(closing).resolves.toEqual({ abandoned: 0 });
    expect(logs.withMessage('webhook_attempt')[0]).toMatchObject({ outcome: 'delivered' });
    expect(notifier.enqueue(`${baseUrl}/hook`, sampleEvent())).toBe(false);
    expect(logs.withMessage('webhook_dropped')[0]).toMatchObject({ reason: 'closing' });
  });

  it('close abandons what is still undelivered at its deadline', async () => {
    const { clock, logs, notifier } = setup();
    responder = () => ({ status: 500 });
    const event = sampleEvent();
    notifier.enqueue(`${baseUrl}/hook`, event);
    await vi.waitFor(() => expect(clock.pendingTimers).toBe(1), eventually);
    const closing = notifier.close(1000);
    // The retry falls due (50 ms) before the deadline, fails again, and waits 100 ms more, and so on.
    clock.advance(1000);
    await expect(closing).resolves.toEqual({ abandoned: 1 });
    const attemptsBefore = received.length;
    clock.runUntilIdle();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(received).toHaveLength(attemptsBefore);
    expect(logs.withMessage('webhook_abandoned')[0]).toMatchObject({ eventId: event.id, level: 50 });
    expect(notifier.size).toBe(0);
  });
});
