/**
 * Background responses (`background: true` on `POST /v1/responses`), as on OpenAI: the request is answered at once
 * with the stored Response in status `queued`, and runs on without its client, who polls `GET /v1/responses/{id}`
 * until the status is final (`completed`, `incomplete`, `failed`, `cancelled`) and may cancel it meanwhile
 * (`POST /v1/responses/{id}/cancel`).
 *
 * - A run takes the ordinary request path (admission, wallet, scheduling, routing, metering) as a whole chat request,
 *   and writes one request-log record under the id its create request was given, when it ends. A rate limit or an
 *   overloaded fleet is waited out (for up to `retryForMs`; each refused attempt is recorded under an id of its own,
 *   `<id>_attempt<n>`, as a batch line's is): no client holds a connection open meanwhile, so a background response
 *   can wait for a trough. Whatever else stops it (the wallet, the upstream) makes the response `failed`, with the
 *   error.
 * - Every change of status is one compare-and-set in the store (`replaceRunningResponse`): a cancel and the end of a
 *   run cannot both win, whichever process serves the cancel.
 * - The process running a response beats its heartbeat in the store every `heartbeatMs`. The same statement tells it
 *   which of its runs were cancelled or deleted meanwhile, possibly through another process: those are aborted (an
 *   aborted run is billed nothing, like a whole request whose client left).
 * - A run whose heartbeat is older than `staleAfterMs` belonged to a process that died: the sweep, in any process,
 *   marks it `failed`. A process that stops gracefully aborts its runs and marks them `failed` itself.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { type ResponseContext, responseFromChat, responseObject } from '../api/responses/responses-object.js';
import { asResponsesError } from '../api/responses/responses-request.js';
import { ResponsesStreamSink, responsesEvent } from '../api/responses/responses-stream-sink.js';
import {
  abortedRequestError,
  GatewayError,
  InvalidRequestError,
  isWaitableRefusal,
  RateLimitError,
  toGatewayError,
  UnavailableError,
} from '../errors/gateway-error.js';
import { newRequestTrace, type RequestRecorder, type RequestTrace } from '../metering/request-recorder.js';
import type { Logger } from '../observability/logger.js';
import type { RelayService } from '../relay/relay-service.js';
import type { Principal } from '../tenancy/key-service.js';
import { FINAL_EVENT_STATUSES, isFinalFrame, ResponseEventLog } from './response-event-log.js';
import { type ResponseStore, RUNNING_RESPONSE_STATUSES } from './response-store.js';
import { responseNotFound } from './stored-responses.js';

/** How often a follower of another process's streamed run reads the store for more events, ms. */
const FOLLOW_POLL_MS = 100;
/** The same for a run of this process, which wakes its followers itself: only a safety net, ms. */
const LOCAL_FOLLOW_POLL_MS = 1_000;

/** Statuses of a response that is still running. */
const RUNNING = new Set<string>(RUNNING_RESPONSE_STATUSES);

/** The error codes a Response's `error` may carry (OpenAI's `ResponseErrorCode`, those that apply here). */
type ResponseErrorCode = 'server_error' | 'rate_limit_exceeded' | 'invalid_prompt';

/** Options of `BackgroundResponses`. */
export interface BackgroundResponsesOptions {
  store: ResponseStore;
  /** The relay's whole and streamed answers. */
  relay: Pick<RelayService, 'whole' | 'stream'>;
  recorder: Pick<RequestRecorder, 'finish'>;
  logger: Logger;
  /** How long a response is kept, ms (`responses.retention_days`). */
  retentionMs: number;
  /** How often the runs of this process beat their heartbeat and learn of cancels, ms. Default 2,000. */
  heartbeatMs?: number;
  /** How old a running response's heartbeat may get before the sweep fails it, ms. Default 60,000. */
  staleAfterMs?: number;
  /** How long a run refused by a rate limit or an overloaded fleet keeps trying, ms. Default 15 minutes. */
  retryForMs?: number;
  /** Called when a run's end could not be stored (a metric); it is logged too. */
  onSaveFailure?: () => void;
  /** Called with the final status of each run of this process (a metric). */
  onEnded?: (status: string) => void;
  /**
   * How long a follower waits for the last events of a response whose stored status is final already before it ends
   * the stream with one of its own, ms. Default 5,000.
   */
  finalEventsGraceMs?: number;
  /** The most background responses this process runs at once (`responses.background_max_runs`). Default 1,000. */
  maxRuns?: number;
  /** The most of one tenant (`responses.background_max_runs_per_tenant`). Default 100. */
  maxRunsPerTenant?: number;
  /** Epoch ms; `Date.now` by default. */
  now?: () => number;
}

/** One response to run in the background. */
export interface BackgroundRun {
  principal: Principal;
  /** The create request's trace: the run is recorded under it when it ends. */
  trace: RequestTrace;
  /** The chat request the Responses request became. */
  chat: Record<string, unknown>;
  context: ResponseContext;
  /** The request's own input items, as stored. */
  inputItems: Record<string, unknown>[];
  /** Called with the finished Response once it is stored as done (the conversation's items are appended there). */
  onDone?: (response: Record<string, unknown>) => Promise<void>;
  /** Streamed (`stream: true`): its events are kept in the store for `follow`; `chat` is a streaming request. */
  stream?: boolean;
}

/** A run of this process. */
interface LocalRun {
  tenantId: string;
  abort: AbortController;
  finished: Promise<void>;
  /** Set as it stores its end: a heartbeat then no longer sees it running, and must not abort it. */
  ending: boolean;
}

/** The most background responses one process runs at once, and the most of one tenant, by default. */
const MAX_RUNS = 1_000;
const MAX_RUNS_PER_TENANT = 100;

/** How long a follower waits for the last events of a response whose stored status is final already, ms. */
const FINAL_EVENTS_GRACE_MS = 5_000;

/** Starts, watches, cancels and sweeps background responses. */
export class BackgroundResponses {
  private readonly runs = new Map<string, LocalRun>();
  /** This process's followers of streamed responses, woken when more of a response's events are stored. */
  private readonly followers = new Map<string, Set<() => void>>();
  private readonly now: () => number;
  private readonly heartbeatMs: number;
  private readonly staleAfterMs: number;
  private readonly retryForMs: number;
  private readonly finalEventsGraceMs: number;
  private readonly maxRuns: number;
  private readonly maxRunsPerTenant: number;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private stopped = false;
  /** Beats since the last look for dead processes' runs. */
  private beatsSinceSweep = 0;

  constructor(private readonly options: BackgroundResponsesOptions) {
    this.now = options.now ?? Date.now;
    this.heartbeatMs = options.heartbeatMs ?? 2_000;
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.retryForMs = options.retryForMs ?? 15 * 60_000;
    this.finalEventsGraceMs = options.finalEventsGraceMs ?? FINAL_EVENTS_GRACE_MS;
    this.maxRuns = options.maxRuns ?? MAX_RUNS;
    this.maxRunsPerTenant = options.maxRunsPerTenant ?? MAX_RUNS_PER_TENANT;
  }

  /** How many responses this process is running. */
  get size(): number {
    return this.runs.size;
  }

  /**
   * Stores the response as `queued` and starts its run; resolves with the queued Response (what the create request
   * answers). A store failure rejects, and then nothing runs.
   */
  async create(run: BackgroundRun): Promise<Record<string, unknown>> {
    const { context, principal } = run;
    if (this.stopped) throw shuttingDown();
    this.refuseOverCapacity(principal.tenantId);
    const queued = responseObject(context, { status: 'queued', output: [] });
    const now = this.now();
    await this.options.store.saveResponse({
      id: context.id,
      tenantId: principal.tenantId,
      keyId: principal.keyId,
      previousResponseId: context.request.previous_response_id ?? null,
      inputItems: run.inputItems,
      response: queued,
      createdAt: now,
      expiresAt: now + this.options.retentionMs,
      heartbeatAt: now,
    });
    // A streamed one's first event is stored with it, so a client may read its stream at once, from any process.
    if (run.stream === true) {
      const frame = responsesEvent('response.created', { response: queued }, 0);
      await this.options.store.appendResponseEvents(context.id, [{ sequenceNumber: 0, frame }]);
    }
    if (this.stopped) {
      // `stop` began while this was being stored, and will not wait for it: it ends here.
      const failed = failedResponse(queued, { code: 'server_error', message: shuttingDown().message });
      await this.options.store.replaceRunningResponse(principal.tenantId, context.id, failed, this.now(), null);
      throw shuttingDown();
    }
    const abort = new AbortController();
    const local: LocalRun = { tenantId: principal.tenantId, abort, finished: Promise.resolve(), ending: false };
    this.runs.set(context.id, local);
    local.finished = this.run(run, abort).finally(() => this.runs.delete(context.id));
    return queued;
  }

  /**
   * A 429 when this process runs `maxRuns` background responses, or the tenant `maxRunsPerTenant`: each holds
   * memory and may wait out limits for minutes, so one tenant cannot fill a process with them.
   */
  private refuseOverCapacity(tenantId: string): void {
    let tenantRuns = 0;
    for (const run of this.runs.values()) if (run.tenantId === tenantId) tenantRuns++;
    if (this.runs.size < this.maxRuns && tenantRuns < this.maxRunsPerTenant) return;
    throw new RateLimitError(
      tenantRuns >= this.maxRunsPerTenant
        ? `This tenant has ${this.maxRunsPerTenant} background responses running on this gateway process; wait for one to end.`
        : 'This gateway process runs as many background responses as it may; retry shortly.',
      5,
      'too_many_background_responses',
    );
  }

  /**
   * `POST /v1/responses/{id}/cancel`: a running response becomes `cancelled` and its run, here or in another process,
   * is aborted; a cancelled one is answered as it is, as OpenAI answers a second cancel. A finished one, or one not
   * made in the background, is a 400; an id that is not the tenant's a 404.
   */
  async cancel(tenantId: string, id: string): Promise<Record<string, unknown>> {
    const { store } = this.options;
    const stored = (await store.getResponse(tenantId, id, this.now()))?.response;
    if (stored === undefined) throw responseNotFound(id);
    if (stored.status === 'cancelled') return stored;
    if (stored.background !== true) {
      throw new InvalidRequestError('Only a response created with background: true can be cancelled.', {
        code: 'invalid_request',
      });
    }
    if (!RUNNING.has(String(stored.status))) throw notRunning(stored);
    const cancelled = { ...stored, status: 'cancelled', output: [] };
    if (!(await store.replaceRunningResponse(tenantId, id, cancelled, this.now(), null))) {
      // It ended, was cancelled or was deleted between the read and the write: answer what it is now.
      const current = (await store.getResponse(tenantId, id, this.now()))?.response;
      if (current === undefined) throw responseNotFound(id);
      if (current.status === 'cancelled') return current;
      throw notRunning(current);
    }
    this.runs.get(id)?.abort.abort(cancelledError());
    this.wakeFollowers(id);
    return cancelled;
  }

  /** Beats the heartbeat of this process's runs, and fails other processes' dead runs, every `heartbeatMs`. */
  start(): void {
    this.timer = setInterval(() => void this.beat(), this.heartbeatMs).unref();
  }

  /**
   * One beat: the heartbeat of every run of this process (aborting those cancelled or deleted meanwhile), then the
   * runs whose heartbeat stopped marked `failed`. Never rejects: a failure is logged, and the next beat tries again.
   */
  beat(): Promise<void> {
    this.beating ??= (async () => {
      const { store, logger } = this.options;
      try {
        const ids = [...this.runs.keys()];
        const running = new Set(await store.touchRunningResponses(ids, this.now()));
        for (const id of ids) {
          const run = this.runs.get(id);
          // A run storing its end is no longer running in the store: that is no cancel.
          if (!running.has(id) && run?.ending === false) run.abort.abort(cancelledError());
        }
        // Dead processes' runs are looked for about twice per `staleAfterMs`, not at every beat: an idle gateway
        // then reads nothing most of the time.
        if (++this.beatsSinceSweep * this.heartbeatMs < this.staleAfterMs / 2) return;
        this.beatsSinceSweep = 0;
        const now = this.now();
        for (const stale of await store.staleRunningResponses(now - this.staleAfterMs, now, 100)) {
          if (this.runs.has(stale.id)) continue;
          const failed = failedResponse(stale.response, {
            code: 'server_error',
            message: 'The gateway process running this response stopped before it was done.',
          });
          if (await store.replaceRunningResponse(stale.tenantId, stale.id, failed, now, null)) {
            logger.warn({ responseId: stale.id }, 'background response of a stopped process marked failed');
          }
        }
      } catch (error: unknown) {
        logger.error({ err: error }, 'background responses: heartbeat failed; trying again');
      } finally {
        this.beating = undefined;
      }
    })();
    return this.beating;
  }

  /**
   * Stops: aborts every run of this process, which marks it `failed` (a client polling it learns at once, rather than
   * when the sweep finds its heartbeat stopped), and resolves once each has ended.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    const runs = [...this.runs.values()];
    const stopping = new UnavailableError(
      'The gateway stopped before this background response was done; create it again.',
      'server_shutting_down',
    );
    for (const run of runs) run.abort.abort(stopping);
    await Promise.all(runs.map((run) => run.finished));
    await this.beating;
  }

  /** A 404 when the tenant has no response `id`, a 400 when it was not streamed in the background. */
  async checkStreamed(tenantId: string, id: string): Promise<void> {
    const { store } = this.options;
    const stored = await store.getResponse(tenantId, id, this.now());
    if (stored === undefined) throw responseNotFound(id);
    // A streamed background response's first event is stored with it (`create`).
    if ((await store.responseEvents(tenantId, id, -1, 1, this.now())).length === 0) {
      throw new InvalidRequestError(
        'Only a response created with background: true and stream: true can be streamed again.',
        { param: 'stream', code: 'invalid_request' },
      );
    }
  }

  /**
   * Sends `write` the events of the tenant's streamed background response (`checkStreamed`) after sequence number
   * `after`, as they are stored, until its last event; returns early when `signal` aborts (its client left: the run
   * goes on). A stream always ends so that its reader knows how:
   * - with the response's final event (`response.completed`, `.incomplete` or `.failed`), as stored; or, when that
   *   never comes (the sweep failed a run whose process died), with one made from the stored final response;
   * - with nothing more when the response was cancelled or deleted;
   * - with an `error` event when reading the store failed (the error is rethrown, to be logged). Its
   *   `sequence_number` repeats that of the last event sent (`after` when none was), so a reader that reads on from
   *   it misses nothing.
   */
  async follow(
    tenantId: string,
    id: string,
    after: number,
    write: (frames: string) => Promise<void> | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    let last = after;
    try {
      await this.followFrom(tenantId, id, after, signal, async (frames, sequence) => {
        last = sequence;
        await write(frames);
      });
    } catch (error: unknown) {
      if (signal.aborted) throw error;
      const message = 'Reading the stored events of this response failed. Read on from the last event received.';
      try {
        await write(responsesEvent('error', { code: 'server_error', message, param: null }, last));
      } catch {
        // The client is gone too: what failed first is what is logged.
      }
      throw error;
    }
  }

  private async followFrom(
    tenantId: string,
    id: string,
    after: number,
    signal: AbortSignal,
    write: (frames: string, lastSequence: number) => Promise<void>,
  ): Promise<void> {
    const { store } = this.options;
    let last = after;
    /** When the stored status was first seen final: its last events are stored just after it. */
    let endedAt: number | undefined;
    while (!signal.aborted) {
      const events = await store.responseEvents(tenantId, id, last, 500, this.now());
      if (events.length > 0) {
        last = events.at(-1)!.sequenceNumber;
        await write(events.map((event) => event.frame).join(''), last);
        if (events.some((event) => isFinalFrame(event.frame))) return;
        continue;
      }
      if (endedAt === undefined) {
        const status = (await store.getResponse(tenantId, id, this.now()))?.response.status;
        // Cancelled or deleted: its stream just stops.
        if (status === undefined || status === 'cancelled') return;
        if (!RUNNING.has(String(status))) endedAt = Date.now();
      } else if (Date.now() - endedAt > this.finalEventsGraceMs) {
        // Failed by the sweep (its process died), or its last events were lost: nothing more will come. The
        // stored response is final; its event ends the stream.
        const response = (await store.getResponse(tenantId, id, this.now()))?.response;
        if (response !== undefined && FINAL_EVENT_STATUSES.has(String(response.status))) {
          await write(responsesEvent(`response.${String(response.status)}`, { response }, last + 1), last + 1);
        }
        return;
      }
      await this.eventsStored(id, signal);
    }
  }

  /** Resolves when more events of `id` are stored by this process, after `FOLLOW_POLL_MS`, or when `signal` aborts. */
  private eventsStored(id: string, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.followers.get(id);
      if (waiters === undefined) {
        waiters = new Set();
        this.followers.set(id, waiters);
      }
      const wake = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', wake);
        waiters.delete(wake);
        if (waiters.size === 0 && this.followers.get(id) === waiters) this.followers.delete(id);
        resolve();
      };
      // Another process's run stores events this process is not told of: poll.
      const timer = setTimeout(wake, this.runs.has(id) ? LOCAL_FOLLOW_POLL_MS : FOLLOW_POLL_MS);
      signal.addEventListener('abort', wake, { once: true });
      waiters.add(wake);
    });
  }

  private async run(run: BackgroundRun, abort: AbortController): Promise<void> {
    const { store, logger } = this.options;
    const { context, principal } = run;
    const id = context.id;
    let trace = run.trace;
    let final: Record<string, unknown> | undefined;
    try {
      await this.setRunning(run, 'in_progress');
      const requestId = trace.requestId;
      const started = this.now();
      for (let attempt = 1; ; attempt++) {
        try {
          // Stopped or cancelled while it was being stored, or while it waited.
          abort.signal.throwIfAborted();
          if (run.stream === true) {
            await this.stream(run, trace, abort);
            return;
          }
          const completion = await this.options.relay.whole({
            trace,
            principal,
            endpoint: 'chat',
            body: run.chat,
            signal: abort.signal,
          });
          final = responseFromChat(context, completion, trace.usage);
          break;
        } catch (error: unknown) {
          const failure = toGatewayError(error);
          const delayMs = abort.signal.aborted ? undefined : this.retryDelayMs(failure, attempt, started);
          if (delayMs === undefined) throw error;
          // The refused attempt is recorded under an id of its own (as a batch line's is); the run goes on, and ends,
          // under the request's.
          trace.requestId = `${requestId}_attempt${attempt}`;
          await this.record(trace, failure);
          trace = retryTrace(trace, requestId);
          // Waiting, it is `queued` again (a poller sees it has not started), then `in_progress` once it tries; a
          // write that finds it no longer running means it was cancelled or deleted meanwhile.
          await this.setRunning(run, 'queued');
          await sleep(delayMs, undefined, { signal: abort.signal });
          await this.setRunning(run, 'in_progress');
        }
      }
    } catch (error: unknown) {
      const failure = asResponsesError(
        abort.signal.aborted ? abortedRequestError(abort.signal) : toGatewayError(error),
      );
      if (failure.code === 'internal_error') logger.error({ err: error, responseId: id }, 'internal error');
      await this.record(trace, failure);
      // A cancel has stored the response already.
      if (failure.code === 'cancelled') {
        this.options.onEnded?.('cancelled');
        return;
      }
      final = failedResponse(responseObject(context, { status: 'in_progress', output: [] }), {
        code: responseErrorCode(failure),
        message: failure.message,
      });
      if (run.stream === true) {
        // Its stream's readers learn it failed as a client of a failed stream does.
        await store
          .appendResponseEvents(id, [
            { sequenceNumber: 1, frame: responsesEvent('response.failed', { response: final }, 1) },
          ])
          .catch((appendError: unknown) =>
            logger.error({ err: appendError, responseId: id }, 'failure event of a background stream not stored'),
          );
      }
    }
    await this.end(run, final);
    this.wakeFollowers(id);
  }

  /** Stores the running response as `status` (and beats its heartbeat); throws the cancel when it no longer runs. */
  private async setRunning(run: BackgroundRun, status: 'queued' | 'in_progress'): Promise<void> {
    const response = responseObject(run.context, { status, output: [] });
    const now = this.now();
    if (
      !(await this.options.store.replaceRunningResponse(run.principal.tenantId, run.context.id, response, now, now))
    ) {
      throw cancelledError();
    }
  }

  /**
   * One attempt of a streamed run: the relay's stream, turned into Responses events (`ResponsesStreamSink`) and kept
   * in the store (`ResponseEventLog`). Throws only when refused before the stream opened, as `relay.stream` does;
   * after that the stream ends with its last event, the response stored as it ends.
   */
  private async stream(run: BackgroundRun, trace: RequestTrace, abort: AbortController): Promise<void> {
    const id = run.context.id;
    const cancelled = () =>
      abort.signal.aborted && (abort.signal.reason as GatewayError | undefined)?.code === 'cancelled';
    let ended = false;
    /** Its end lost to a cancel (here or in another process, or a delete): its last events are not kept. */
    let lost = false;
    const log = new ResponseEventLog({
      store: this.options.store,
      responseId: id,
      logger: this.options.logger,
      onStored: () => this.wakeFollowers(id),
      // A cancelled response's stream just stops: what the relay makes of the abort is not kept.
      dropped: () => lost || (cancelled() && !ended),
    });
    const sink = new ResponsesStreamSink(
      log,
      run.context,
      async (response) => {
        ended = true;
        lost = !(await this.end(run, response));
      },
      { afterCreated: true },
    );
    try {
      await this.options.relay.stream(
        { trace, principal: run.principal, endpoint: 'chat', body: run.chat, signal: abort.signal },
        sink,
      );
    } finally {
      await log.drain();
    }
    if (ended) return;
    // The relay ended the stream without a last event: a cancel (which stored the response), or a failure of ours.
    if (cancelled()) {
      this.options.onEnded?.('cancelled');
      return;
    }
    await this.end(
      run,
      failedResponse(responseObject(run.context, { status: 'in_progress', output: [] }), {
        code: 'server_error',
        message: 'The stream ended before its last event.',
      }),
    );
  }

  /**
   * Stores `final` as the response's end, unless it was cancelled or deleted meanwhile; counts it, and hands a
   * finished (not failed) one to `onDone`.
   */
  private async end(run: BackgroundRun, final: Record<string, unknown>): Promise<boolean> {
    const { store, logger } = this.options;
    const id = run.context.id;
    const local = this.runs.get(id);
    if (local !== undefined) local.ending = true;
    let stored = false;
    let storeFailed = false;
    try {
      stored = await store.replaceRunningResponse(run.principal.tenantId, id, final, this.now(), null);
    } catch (error: unknown) {
      storeFailed = true;
      this.options.onSaveFailure?.();
      logger.error({ err: error, responseId: id }, 'background response done, but its end not stored');
    }
    // Not replaced: cancelled (or deleted) meanwhile, and that cancel counts.
    this.options.onEnded?.(stored || storeFailed ? String(final.status) : 'cancelled');
    if (stored && final.status !== 'failed') await run.onDone?.(final);
    return stored || storeFailed;
  }

  private wakeFollowers(id: string): void {
    const waiters = this.followers.get(id);
    if (waiters === undefined) return;
    for (const wake of [...waiters]) wake();
  }

  /**
   * How long to wait before trying a refused run again, or undefined to fail it: a rate limit (not an empty wallet)
   * or an overloaded fleet is waited out, as the batch runner waits it out, for up to `retryForMs` since the first
   * attempt. The wait is the refusal's `retry-after`, else 1, 2, 4 … s; between 250 ms and 30 s.
   */
  private retryDelayMs(failure: GatewayError, attempt: number, started: number): number | undefined {
    if (!isWaitableRefusal(failure) || this.now() - started >= this.retryForMs) return undefined;
    const retryAfter = Number(failure.headers['retry-after']);
    const seconds = Number.isFinite(retryAfter) ? retryAfter : 2 ** Math.min(attempt - 1, 5);
    return Math.min(30_000, Math.max(250, seconds * 1000));
  }

  /** Records `trace` as failed with `failure`, unless the relay recorded it (it records what it answered). */
  private async record(trace: RequestTrace, failure: GatewayError): Promise<void> {
    if (trace.recorded) return;
    if (trace.status === 0 || trace.status === 200) trace.status = failure.status;
    trace.errorCode ??= failure.code;
    await this.options.recorder.finish(trace);
  }
}

/** A fresh trace for another attempt of the request `trace` traced, under `requestId`. */
function retryTrace(trace: RequestTrace, requestId: string): RequestTrace {
  const next = newRequestTrace(requestId, trace.endpoint, trace.receivedAt, trace.startedAt);
  next.tenantId = trace.tenantId;
  next.keyId = trace.keyId;
  next.stream = trace.stream;
  return next;
}

/** `response` as failed with `error`, what it had produced dropped. */
function failedResponse(
  response: Record<string, unknown>,
  error: { code: ResponseErrorCode; message: string },
): Record<string, unknown> {
  return { ...response, status: 'failed', output: [], error, incomplete_details: null };
}

/** The code of a Response's `error` for a failed run: only OpenAI's own codes are valid there. */
function responseErrorCode(failure: GatewayError): ResponseErrorCode {
  if (failure.code === 'rate_limit_exceeded') return 'rate_limit_exceeded';
  if (failure.status === 400) return 'invalid_prompt';
  return 'server_error';
}

function notRunning(response: Record<string, unknown>): InvalidRequestError {
  return new InvalidRequestError(
    `The response is ${String(response.status)}: only a queued or in-progress response can be cancelled.`,
    { code: 'invalid_request' },
  );
}

function shuttingDown(): UnavailableError {
  return new UnavailableError('The gateway is shutting down; retry the request.', 'server_shutting_down');
}

/** Why a cancelled run was aborted: recorded as a 499 `cancelled`, billed nothing. */
function cancelledError(): GatewayError {
  return new GatewayError(499, 'invalid_request_error', 'cancelled', 'The response was cancelled.', false);
}
