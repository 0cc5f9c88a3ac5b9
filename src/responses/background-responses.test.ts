import pino from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { sqliteResponseStoreForFile } from '../../test/support/sqlite-response-store.js';
import { newResponseContext } from '../api/responses/responses-object.js';
import type { ResponsesRequest } from '../api/responses/responses-request.js';
import { responsesEvent } from '../api/responses/responses-stream-sink.js';
import {
  type GatewayError,
  InsufficientQuotaError,
  InvalidRequestError,
  NotFoundError,
  RateLimitError,
  UnavailableError,
} from '../errors/gateway-error.js';
import { newRequestTrace, type RequestTrace } from '../metering/request-recorder.js';
import type { RelayRequest } from '../relay/relay-service.js';
import { BackgroundResponses } from './background-responses.js';
import type { ResponseStore } from './response-store.js';

const fixture = sqliteResponseStoreForFile('tollgate-background-responses-');
let now = Date.parse('2026-12-01T00:00:00Z');
const logger = pino({ level: 'silent' });
const alice = { tenantId: 'ten_alice', keyId: 'key_alice', models: null, expiresAt: null };

/** A chat completion, as the relay answers one. */
const COMPLETION = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1,
  model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Done.' }, finish_reason: 'stop' }],
};

/**
 * A relay whose answers the test gives: each `whole` call waits until `answer` or `fail` is called for it, or until
 * its signal aborts (then it rejects with the abort's reason, as the relay does). What it recorded is in `recorded`.
 */
function fakeRelay() {
  const calls: Array<{
    request: RelayRequest;
    answer: () => void;
    fail: (error: unknown) => void;
  }> = [];
  const recorded: RequestTrace[] = [];
  const recorder = {
    finish: async (trace: RequestTrace) => {
      trace.recorded = true;
      recorded.push(trace);
    },
  };
  const relay = {
    stream: async () => {
      throw new Error('streamed runs are tested against a real gateway (test/responses-api.test.ts)');
    },
    whole: (request: RelayRequest) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const abort = () => reject(request.signal.reason);
        request.signal.addEventListener('abort', abort, { once: true });
        calls.push({
          request,
          answer: () => {
            request.trace.status = 200;
            void recorder.finish(request.trace);
            resolve(structuredClone(COMPLETION));
          },
          fail: reject,
        });
      }),
  };
  return { relay, recorder, calls, recorded };
}

/** The final statuses the services of a test counted, in order (the `onEnded` metric). */
let ended: string[] = [];

function service(
  relay: ReturnType<typeof fakeRelay>,
  options: {
    staleAfterMs?: number;
    heartbeatMs?: number;
    retryForMs?: number;
    finalEventsGraceMs?: number;
    maxRuns?: number;
    maxRunsPerTenant?: number;
    store?: ResponseStore;
  } = {},
) {
  return new BackgroundResponses({
    store: fixture.current(),
    relay: relay.relay,
    recorder: relay.recorder,
    logger,
    retentionMs: 30 * 86_400_000,
    now: () => now,
    onEnded: (status) => ended.push(status),
    ...options,
  });
}

let counter = 0;
/** Creates a background response through `background`; resolves with its id and what `onDone` received. */
async function create(background: BackgroundResponses, tenant = alice) {
  const request = { model: 'm', input: 'Hi', background: true } as ResponsesRequest;
  const trace = newRequestTrace(`req_${++counter}`, 'responses', now, performance.now());
  trace.tenantId = tenant.tenantId;
  const done: Record<string, unknown>[] = [];
  const queued = await background.create({
    principal: tenant,
    trace,
    chat: { model: 'm', messages: [{ role: 'user', content: 'Hi' }] },
    context: newResponseContext(request, now, { store: true }),
    inputItems: [{ id: `msg_${counter}`, type: 'message', role: 'user', content: 'Hi' }],
    onDone: async (response) => {
      done.push(response);
    },
  });
  return { id: String(queued.id), queued, trace, done };
}

const statusOf = async (id: string, tenantId = alice.tenantId) =>
  (await fixture.current().getResponse(tenantId, id, now))?.response.status;

/** Waits until `check` holds (the runs go on in the background). */
async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error('condition never held');
}

describe('BackgroundResponses', () => {
  beforeEach(() => {
    ended = [];
  });

  it('answers queued at once, runs in_progress, and stores the finished response before calling onDone', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const { id, queued, trace, done } = await create(background);
    expect(queued).toMatchObject({ status: 'queued', background: true, output: [] });
    await until(() => relay.calls.length === 1);
    expect(await statusOf(id)).toBe('in_progress');
    expect(relay.calls[0]!.request.trace).toBe(trace);
    relay.calls[0]!.answer();
    await until(() => done.length === 1);
    const stored = await fixture.current().getResponse(alice.tenantId, id, now);
    expect(stored?.response).toMatchObject({ id, status: 'completed', background: true });
    expect(stored?.heartbeatAt).toBeNull();
    expect(done[0]).toEqual(stored?.response);
    expect(relay.recorded).toEqual([trace]);
    expect(background.size).toBe(0);
    expect(ended).toEqual(['completed']);
  });

  it('cancels a running response: stored cancelled, the run aborted and recorded as a 499, onDone not called', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const { id, trace, done } = await create(background);
    await until(() => relay.calls.length === 1);
    const cancelled = await background.cancel(alice.tenantId, id);
    expect(cancelled).toMatchObject({ id, status: 'cancelled' });
    await until(() => background.size === 0);
    expect(relay.calls[0]!.request.signal.aborted).toBe(true);
    expect(await statusOf(id)).toBe('cancelled');
    expect(relay.recorded).toEqual([trace]);
    expect(trace).toMatchObject({ status: 499, errorCode: 'cancelled' });
    expect(done).toEqual([]);
    expect(ended).toEqual(['cancelled']);
    // A second cancel answers the cancelled response, as OpenAI's does.
    expect(await background.cancel(alice.tenantId, id)).toMatchObject({ status: 'cancelled' });
  });

  it('refuses to cancel a finished response, and 404s one of another tenant', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const { id, done } = await create(background);
    await until(() => relay.calls.length === 1);
    relay.calls[0]!.answer();
    await until(() => done.length === 1);
    const refused = await background.cancel(alice.tenantId, id).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidRequestError);
    expect(await statusOf(id)).toBe('completed');
    const other = await background.cancel('ten_bob', id).catch((error: unknown) => error);
    expect(other).toBeInstanceOf(NotFoundError);
    expect((other as NotFoundError).code).toBe('response_not_found');
  });

  it('fails a response its request path refused, with an error code the Response schema allows', async () => {
    const relay = fakeRelay();
    // Nothing is waited out here.
    const background = service(relay, { retryForMs: 0 });
    const failures: Array<[GatewayError, string, number]> = [
      [new RateLimitError('Too many requests.', 3), 'rate_limit_exceeded', 429],
      [new InsufficientQuotaError('The wallet is empty.'), 'server_error', 429],
      [new InvalidRequestError('Too long.', { code: 'context_length_exceeded' }), 'invalid_prompt', 400],
    ];
    for (const [error, code, status] of failures) {
      const { id, trace } = await create(background);
      await until(() => relay.calls.length > 0 && relay.calls.at(-1)!.request.trace === trace);
      relay.calls.at(-1)!.fail(error);
      await until(async () => (await statusOf(id)) === 'failed');
      const stored = await fixture.current().getResponse(alice.tenantId, id, now);
      expect(stored?.response.error).toEqual({ code, message: error.message });
      expect(trace).toMatchObject({ status, errorCode: error.code, recorded: true });
    }
    await until(() => background.size === 0);
    expect(ended).toEqual(['failed', 'failed', 'failed']);
  });

  it('waits out a rate limit: the refused attempt is recorded under its own id, and the run goes on', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const { id, trace, done } = await create(background);
    const requestId = trace.requestId;
    await until(() => relay.calls.length === 1);
    relay.calls[0]!.fail(new RateLimitError('Too many requests.', 0));
    // Retried after the shortest wait, 250 ms: queued meanwhile, in progress again when it tries.
    await until(async () => (await statusOf(id)) === 'queued');
    await until(() => relay.calls.length === 2);
    expect(await statusOf(id)).toBe('in_progress');
    relay.calls[1]!.answer();
    await until(() => done.length === 1);
    expect(await statusOf(id)).toBe('completed');
    expect(relay.recorded.map((recorded) => [recorded.requestId, recorded.status, recorded.errorCode])).toEqual([
      [`${requestId}_attempt1`, 429, 'rate_limit_exceeded'],
      [requestId, 200, null],
    ]);
    expect(relay.recorded[1]).toMatchObject({ tenantId: alice.tenantId, receivedAt: trace.receivedAt });
    expect(ended).toEqual(['completed']);
  });

  it('does not wait out an empty wallet, and stops waiting when cancelled', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const broke = await create(background);
    await until(() => relay.calls.length === 1);
    relay.calls[0]!.fail(new InsufficientQuotaError('The wallet is empty.'));
    await until(async () => (await statusOf(broke.id)) === 'failed');
    expect(relay.calls).toHaveLength(1);

    const waiting = await create(background);
    const requestId = waiting.trace.requestId;
    await until(() => relay.calls.length === 2);
    relay.calls[1]!.fail(new RateLimitError('Too many requests.', 20));
    // Recorded: the empty wallet's run, then this one's refused first attempt.
    await until(() => relay.recorded.length === 2);
    const cancelledAt = Date.now();
    await background.cancel(alice.tenantId, waiting.id);
    await until(() => background.size === 0);
    // It was to wait 20 s.
    expect(Date.now() - cancelledAt).toBeLessThan(5_000);
    expect(relay.calls).toHaveLength(2);
    expect(relay.recorded.at(-1)).toMatchObject({ requestId, status: 499, errorCode: 'cancelled' });
    expect(ended).toEqual(['failed', 'cancelled']);
  });

  it('aborts a run another process cancelled, or that was deleted, at its next heartbeat', async () => {
    const relay = fakeRelay();
    const running = service(relay);
    const other = service(fakeRelay());
    const first = await create(running);
    const second = await create(running);
    await until(() => relay.calls.length === 2);
    await other.cancel(alice.tenantId, first.id);
    await fixture.current().deleteResponse(alice.tenantId, second.id, now);
    expect(relay.calls.map((call) => call.request.signal.aborted)).toEqual([false, false]);
    await running.beat();
    expect(relay.calls.map((call) => call.request.signal.aborted)).toEqual([true, true]);
    await until(() => running.size === 0);
    expect(await statusOf(first.id)).toBe('cancelled');
    expect(await statusOf(second.id)).toBeUndefined();
  });

  it('beats the heartbeat of its own runs, and fails the runs of a process that stopped beating', async () => {
    const relay = fakeRelay();
    // A beat every 30 s: each one looks for dead processes' runs too (every 60 s / 2).
    const dead = service(relay, { staleAfterMs: 60_000, heartbeatMs: 30_000 });
    const alive = service(fakeRelay(), { staleAfterMs: 60_000, heartbeatMs: 30_000 });
    const orphan = await create(dead);
    const own = await create(alive);
    await until(() => relay.calls.length === 1);
    now += 30_000;
    await alive.beat();
    expect((await fixture.current().getResponse(alice.tenantId, own.id, now))?.heartbeatAt).toBe(now);
    expect(await statusOf(orphan.id)).toBe('in_progress');
    now += 40_000;
    // `dead` beat nothing for 70 s; `alive` beat its own run 40 s ago.
    await alive.beat();
    const failed = await fixture.current().getResponse(alice.tenantId, orphan.id, now);
    expect(failed?.response).toMatchObject({ status: 'failed', error: { code: 'server_error' } });
    expect(await statusOf(own.id)).toBe('in_progress');
    // The dead process's run, should it end after all, does not overwrite it.
    relay.calls[0]!.answer();
    await until(() => dead.size === 0);
    expect(await statusOf(orphan.id)).toBe('failed');
    await alive.stop();
  });

  it('runs at most 100 background responses of one tenant at once in a process', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const bob = { ...alice, tenantId: 'ten_bob', keyId: 'key_bob' };
    for (let index = 0; index < 100; index++) await create(background, bob);
    const refused = await create(background, bob).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(RateLimitError);
    expect((refused as RateLimitError).code).toBe('too_many_background_responses');
    // Another tenant is not held up by it.
    const other = await create(background);
    expect(other.queued.status).toBe('queued');
    await background.stop();
  });

  it("runs at most the operator's number of background responses, of one tenant and in all", async () => {
    const background = service(fakeRelay(), { maxRuns: 3, maxRunsPerTenant: 2 });
    const tenant = (name: string) => ({ ...alice, tenantId: `ten_${name}`, keyId: `key_${name}` });
    await create(background, tenant('carol'));
    await create(background, tenant('carol'));
    const perTenant = await create(background, tenant('carol')).catch((error: unknown) => error);
    expect(perTenant).toMatchObject({ status: 429, code: 'too_many_background_responses' });
    expect((perTenant as RateLimitError).message).toContain('This tenant has 2 background responses running');
    await create(background, tenant('dave'));
    const inAll = await create(background, tenant('erin')).catch((error: unknown) => error);
    expect(inAll).toMatchObject({ status: 429, code: 'too_many_background_responses' });
    expect((inAll as RateLimitError).message).toContain('as many background responses as it may');
    expect(background.size).toBe(3);
    await background.stop();
  });

  it('stops by failing its runs, and refuses to start one after', async () => {
    const relay = fakeRelay();
    const background = service(relay);
    const { id, trace } = await create(background);
    await until(() => relay.calls.length === 1);
    await background.stop();
    expect(background.size).toBe(0);
    const stored = await fixture.current().getResponse(alice.tenantId, id, now);
    expect(stored?.response).toMatchObject({ status: 'failed', error: { code: 'server_error' } });
    expect(trace).toMatchObject({ status: 503, errorCode: 'server_shutting_down', recorded: true });
    expect(ended).toEqual(['failed']);
    const refused = await create(background).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(UnavailableError);
  });

  describe('follow', () => {
    /** Stores a streamed background response in `status` whose first `events` events were stored. */
    async function streamed(status: string, events: number) {
      const id = `resp_follow_${++counter}`;
      const response = { id, object: 'response', status, background: true, output: [] };
      await fixture.current().saveResponse({
        id,
        tenantId: alice.tenantId,
        keyId: alice.keyId,
        previousResponseId: null,
        inputItems: [],
        response,
        createdAt: now,
        expiresAt: now + 86_400_000,
        heartbeatAt: null,
      });
      const types = ['response.created', 'response.in_progress', 'response.output_text.delta'];
      await fixture.current().appendResponseEvents(
        id,
        Array.from({ length: events }, (_, sequence) => ({
          sequenceNumber: sequence,
          frame: responsesEvent(types[Math.min(sequence, 2)]!, { response }, sequence),
        })),
      );
      return { id, response };
    }

    /** The SSE frames `frames` holds, each as its event name and its data. */
    const parsed = (frames: string) =>
      frames
        .split('\n\n')
        .filter((frame) => frame !== '')
        .map((frame) => {
          const [event, data] = frame.split('\n');
          return { event: event!.slice('event: '.length), data: JSON.parse(data!.slice('data: '.length)) };
        });

    it('ends the stream of a run failed by the sweep with a response.failed made from the stored response', async () => {
      const { id, response } = await streamed('failed', 2);
      const background = service(fakeRelay(), { finalEventsGraceMs: 20 });
      let sent = '';
      await background.follow(
        alice.tenantId,
        id,
        -1,
        async (frames) => {
          sent += frames;
        },
        new AbortController().signal,
      );
      const events = parsed(sent);
      expect(events.map((event) => event.event)).toEqual([
        'response.created',
        'response.in_progress',
        'response.failed',
      ]);
      expect(events[2]!.data).toEqual({ type: 'response.failed', response, sequence_number: 2 });
    });

    it('ends the stream with an error event, numbered as the last event sent, when reading the store fails', async () => {
      const { id } = await streamed('in_progress', 3);
      const store = fixture.current();
      let reads = 0;
      const failing: ResponseStore = Object.create(store, {
        responseEvents: {
          value: (...args: Parameters<ResponseStore['responseEvents']>) =>
            ++reads === 1 ? store.responseEvents(...args) : Promise.reject(new Error('store unreachable')),
        },
      });
      const background = service(fakeRelay(), { store: failing });
      let sent = '';
      const followed = background.follow(
        alice.tenantId,
        id,
        0,
        async (frames) => {
          sent += frames;
        },
        new AbortController().signal,
      );
      await expect(followed).rejects.toThrow('store unreachable');
      const events = parsed(sent);
      expect(events.map((event) => event.event)).toEqual([
        'response.in_progress',
        'response.output_text.delta',
        'error',
      ]);
      expect(events[2]!.data).toMatchObject({ type: 'error', code: 'server_error', param: null, sequence_number: 2 });
    });
  });
});
