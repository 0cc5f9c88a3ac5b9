/**
 * Runs batches through the same request path as online traffic. Each line becomes a `RequestTrace` marked `batch`
 * (rated with the batch discount) for the batch's tenant and key, and goes to `RelayService.whole`: the admission
 * gate applies the plan, rate limits and the wallet reservation, and the model's scheduler queues it in class
 * `batch` — or `flex` / `default` when `planBatchClass` promotes it because the deadline nears — so batch lines use
 * only the capacity online classes leave free, and lines of different tenants share through its fair queue.
 *
 * A bounded number of lines is outstanding (handed to the gateway) per batch and overall; the rest stay `pending` in
 * the store. Every line's request id is `<batchId>_<lineIndex>` (`batch_…_7`), and usage events are unique by request
 * id: a line re-run after `kill -9` (it was `running` when the process died) is billed once. Its new reservation is
 * released here, because the settlement of a request id already in the request log releases nothing.
 *
 * Only the attempt that ends a line (its success, or a failure that is not retried) is recorded under the line's
 * request id: that record is the one billed, and the id the output and error files report as `request_id`. An
 * attempt that will be retried — refused with a retryable 429 or 503, or aborted because the gateway stops — is
 * recorded under `<batchId>_<lineIndex>_attempt<n>`, so operators see every attempt in the request log and none of
 * them takes the line's id before its result exists. Such an attempt produced no answer and carries no usage, so
 * the line is billed exactly once, for the attempt that delivered it.
 *
 * A batch runs as the key that created it, checked before every dispatch: once that key is revoked or expired (or
 * gone) no further line is handed to the gateway, as no further online request would be accepted. Lines already
 * running finish (and are billed), those still waiting in a scheduler queue are withdrawn, and every remaining line
 * fails with the 401 code an online request with that key gets (`revoked_api_key`, `expired_api_key`,
 * `invalid_api_key`); the batch then completes as usual, its output file holding the lines that finished.
 *
 * Lifecycle: `validating` (the input file is read into lines) → `in_progress` → `finalizing` (output and error files
 * written) → `completed`; at the deadline no new line is dispatched, in-flight lines finish, the rest expire and the
 * batch ends `expired`; a cancel moves it to `cancelling`, lines already running upstream finish, the rest are
 * cancelled and it ends `cancelled`. Lines handed to the gateway but still waiting in a model's scheduler queue are
 * withdrawn at expiry or cancel (their request is aborted while queued, so it never runs and is not billed) and end
 * expired or cancelled like the lines never handed over. Expired and cancelled batches get their output and
 * error files too: work done before is returned (and was billed), nothing after.
 */
import { performance } from 'node:perf_hooks';
import { newResponseContext, responseFromChat } from '../api/responses/responses-object.js';
import { asResponsesError, type ResponsesRequest } from '../api/responses/responses-request.js';
import type { BillingService } from '../billing/billing-service.js';
import { assertNever } from '../errors/assert-never.js';
import {
  AuthenticationError,
  type GatewayError,
  isWaitableRefusal,
  StoreUnavailableError,
  toGatewayError,
  toOpenAIErrorBody,
} from '../errors/gateway-error.js';
import { newRequestTrace, type RequestRecorder, type RequestTrace } from '../metering/request-recorder.js';
import type { Logger } from '../observability/logger.js';
import type { RelayService } from '../relay/relay-service.js';
import type { CompactionSeal } from '../responses/compaction.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import type { TieredScheduler } from '../scheduling/tiered-scheduler.js';
import type { Store } from '../store/store.js';
import { isStoreUnreachable } from '../store/store-unreachable.js';
import { AuthenticationErrorCode, type Principal } from '../tenancy/key-service.js';
import {
  batchEndpoints,
  batchLogEndpoints,
  isBatchEndpoint,
  readBatchInput,
  upstreamBodyOf,
  ValidationStopped,
} from './batch-input.js';
import { inOffPeakWindow, type OffPeakWindow, planBatchClass } from './batch-planner.js';
import type {
  BatchLineCounts,
  BatchLineOutcome,
  BatchLineRecord,
  BatchRecord,
  BatchStatus,
  BatchStore,
  FileRecord,
} from './batch-store.js';
import type { FileStorage } from './file-storage.js';

/** Options of `BatchRunner`. */
export interface BatchRunnerOptions {
  store: BatchStore;
  files: FileStorage;
  relay: RelayService;
  recorder: RequestRecorder;
  billing: BillingService;
  /** Where batch keys are read (a batch runs as the key that created it, read again before every dispatch). */
  keys: Pick<Store, 'getKey'>;
  /** Opens the compaction items of Responses lines; without it, a line holding one is invalid. */
  compaction?: CompactionSeal;
  logger: Logger;
  /** Lines outstanding across all batches. Default 64. */
  concurrency?: number;
  /** Lines outstanding per batch. Default 32. */
  batchConcurrency?: number;
  /** Daily UTC windows in which both limits are multiplied by `offPeakFactor`. Default none. */
  offPeak?: readonly OffPeakWindow[];
  /** Default 2. */
  offPeakFactor?: number;
  /** Longest line of an input file, bytes. Default 1 MiB. */
  maxLineBytes?: number;
  /** Most lines per batch. Default 50000. */
  maxLines?: number;
  /** How often the runner looks for work when nothing wakes it, ms. Default 250. */
  pollIntervalMs?: number;
  /**
   * Lines found `running` at start that began before start − this are re-run (their process died), ms. 0 (embedded
   * mode: one process) re-runs all of them. Default 0.
   */
  staleRunningMs?: number;
  /** Current time, epoch ms (expiry, planning). Default `Date.now`. */
  now?: () => number;
  /**
   * The models' schedulers (`AdmissionGate.modelSchedulers`): a cancelled or expired batch withdraws its lines still
   * queued in them. Default none: such lines wait for capacity, run and are billed.
   */
  schedulers?: ReadonlyMap<string, Pick<TieredScheduler, 'queuedJobIds'>>;
}

/** A line handed to the gateway and not yet finished. */
interface OutstandingLine {
  batchId: string;
  trace: RequestTrace;
  abort: AbortController;
  estimatedTokens: number;
}

/** What the runner knows about one batch between passes. */
interface BatchProgressState {
  counts: BatchLineCounts | undefined;
  /** Tokens of lines finished recently: `[epoch ms, tokens]`. */
  recent: [number, number][];
  /** No dispatch before this time (after a 429 from admission), epoch ms. */
  backoffUntil: number;
}

/** Progress and ETA of a batch, for the admin API. */
export interface BatchProgressView {
  linesDone: number;
  linesTotal: number;
  linesOutstanding: number;
  /** Input + output tokens of executed lines. */
  tokensUsed: number;
  /** Estimated tokens of lines not yet executed. */
  tokensRemaining: number;
  /** Tokens per second over the last minute, 0 before any line finished. */
  tokensPerSecond: number;
  /** Seconds to finish at that rate; null when unknown or finished. */
  etaSeconds: number | null;
}

/** Line counters for `/metrics`. */
export interface BatchRunnerStats {
  /** Lines of active batches not yet handed to the gateway. */
  queued: number;
  /** Lines handed to the gateway (waiting for capacity in the scheduler or running upstream). */
  running: number;
  /** Lines that succeeded, since start. */
  done: number;
  /** Lines that failed (invalid, error answer, expired or cancelled), since start. */
  failed: number;
  /** Estimated tokens (prompt + max output) of the lines handed to the gateway. */
  runningTokens: number;
}

const ACTIVE_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'cancelling', 'finalizing'];
const RATE_WINDOW_MS = 60_000;
const LINES_PER_READ = 1_000;
/** How often the runner deletes expired files, ms, and how many it reads at a time. */
const FILE_SWEEP_INTERVAL_MS = 60_000;
const SWEEP_FILES = 100;

/** Executes batches. */
export class BatchRunner {
  private readonly concurrency: number;
  private readonly batchConcurrency: number;
  private readonly offPeak: readonly OffPeakWindow[];
  private readonly offPeakFactor: number;
  private readonly now: () => number;
  private readonly outstanding = new Map<string, OutstandingLine>();
  private readonly progress = new Map<string, BatchProgressState>();
  private readonly settling = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private pumping: Promise<void> | undefined;
  /** Validations running in the background, by batch id (see `startValidation`). */
  private readonly validations = new Map<string, Promise<void>>();
  private pumpAgain = false;
  private stopped = true;
  private pendingInStore = 0;
  private done = 0;
  private failed = 0;
  /** Deletes expired files once a minute, apart from the passes over batches. */
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(private readonly options: BatchRunnerOptions) {
    this.concurrency = options.concurrency ?? 64;
    this.batchConcurrency = options.batchConcurrency ?? 32;
    this.offPeak = options.offPeak ?? [];
    this.offPeakFactor = options.offPeakFactor ?? 2;
    this.now = options.now ?? Date.now;
  }

  /** Re-queues lines a dead process left running, then starts working. */
  async start(): Promise<void> {
    const { store } = this.options;
    const startedBefore = this.now() - (this.options.staleRunningMs ?? 0);
    for (const batch of await store.listBatchesByStatus(['in_progress', 'cancelling'])) {
      const reset = await store.resetRunningLines(batch.id, startedBefore + 1);
      if (reset > 0) this.options.logger.info({ batch: batch.id, lines: reset }, 'batch lines re-queued after restart');
    }
    this.stopped = false;
    this.timer = setInterval(() => this.wake(), this.options.pollIntervalMs ?? 250);
    this.timer.unref();
    this.sweeper = setInterval(() => this.sweepInBackground(), FILE_SWEEP_INTERVAL_MS);
    this.sweeper.unref();
    this.sweepInBackground();
    this.wake();
  }

  /** Stops dispatching and aborts the lines in flight (they go back to pending, unbilled); waits for them. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.sweeping;
    // Aborted lines produced no usage: they are put back to pending and run again after the restart.
    for (const line of this.outstanding.values()) line.abort.abort();
    await this.pumping;
    // Validations give up at their next slice; the batches stay `validating` and start over at the next start.
    await Promise.all([...this.validations.values()]);
    await Promise.all([...this.settling]);
  }

  /** Looks for work now (a batch was created or cancelled, a line finished). */
  wake(): void {
    if (this.stopped) return;
    if (this.pumping !== undefined) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = this.pumpLoop().finally(() => {
      this.pumping = undefined;
    });
  }

  /** Counters for `/metrics`. */
  stats(): BatchRunnerStats {
    let runningTokens = 0;
    for (const line of this.outstanding.values()) runningTokens += line.estimatedTokens;
    return {
      queued: this.pendingInStore,
      running: this.outstanding.size,
      done: this.done,
      failed: this.failed,
      runningTokens,
    };
  }

  /** Progress and ETA of a batch (lines, tokens, the rate observed by this process). */
  async progressOf(batch: BatchRecord): Promise<BatchProgressView> {
    const counts = await this.options.store.lineCounts(batch.id);
    const rate = this.rateOf(batch.id);
    const linesDone = counts.total - counts.byState.pending - counts.byState.running;
    let outstanding = 0;
    for (const line of this.outstanding.values()) if (line.batchId === batch.id) outstanding++;
    const remaining = counts.remainingEstimatedTokens;
    return {
      linesDone,
      linesTotal: counts.total,
      linesOutstanding: outstanding,
      tokensUsed: counts.usedTokens,
      tokensRemaining: remaining,
      tokensPerSecond: rate,
      etaSeconds: remaining === 0 ? 0 : rate > 0 ? Math.ceil(remaining / rate) : null,
    };
  }

  private async pumpLoop(): Promise<void> {
    do {
      this.pumpAgain = false;
      try {
        await this.pass();
      } catch (error: unknown) {
        this.options.logger.error({ err: error }, 'batch runner pass failed');
      }
    } while (this.pumpAgain && !this.stopped);
  }

  /**
   * Deletes files expired at `now` (record, then bytes), `SWEEP_FILES` at a time until none is left; returns how
   * many. Processes sharing a store may sweep at once: a file deleted twice is deleted once.
   */
  async sweepExpiredFiles(now = this.now()): Promise<number> {
    const { store, files } = this.options;
    let deleted = 0;
    for (;;) {
      const expired = await store.listExpiredFiles(now, SWEEP_FILES);
      for (const file of expired) {
        await store.deleteFile(file.id);
        await files.remove(file.id);
      }
      deleted += expired.length;
      if (expired.length < SWEEP_FILES || this.stopped) return deleted;
    }
  }

  /** One sweep at a time, never failing: a failed one is logged and the next minute's tries again. */
  private sweepInBackground(): void {
    this.sweeping ??= this.sweepExpiredFiles()
      .then(
        (deleted) => {
          if (deleted > 0) this.options.logger.info({ files: deleted }, 'expired files deleted');
        },
        (error: unknown) =>
          this.options.logger.error({ err: error }, 'could not delete expired files; trying again in a minute'),
      )
      .finally(() => {
        this.sweeping = undefined;
      });
  }

  /** One look at every active batch. */
  private async pass(): Promise<void> {
    const batches = await this.options.store.listBatchesByStatus(ACTIVE_STATUSES);
    const now = this.now();
    const factor = this.offPeak.length > 0 && inOffPeakWindow(now, this.offPeak) ? this.offPeakFactor : 1;
    const globalLimit = Math.floor(this.concurrency * factor);
    const running = batches.filter((batch) => batch.status === 'in_progress').length;
    // Equal shares of the global limit, so one big batch cannot hold every slot while another waits.
    const share = Math.max(1, Math.ceil(globalLimit / Math.max(1, running)));
    const batchLimit = Math.min(Math.floor(this.batchConcurrency * factor), share);
    let pending = 0;
    for (const batch of batches) {
      if (this.stopped) return;
      switch (batch.status) {
        case 'validating':
          this.startValidation(batch);
          break;
        case 'in_progress':
          pending += await this.advance(batch, now, globalLimit, batchLimit);
          break;
        case 'cancelling':
          await this.wind(batch, 'cancelled');
          break;
        case 'finalizing':
          if (this.outstandingOf(batch.id) === 0) await this.finalize(batch, 'completed');
          break;
        case 'failed':
        case 'completed':
        case 'expired':
        case 'cancelled':
          break;
        default:
          assertNever(batch.status);
      }
    }
    this.pendingInStore = pending;
    for (const id of this.progress.keys()) {
      if (!batches.some((batch) => batch.id === id)) this.progress.delete(id);
    }
  }

  /**
   * Validates the batch's input in the background, once at a time per batch: a large file takes tens of seconds,
   * and the passes go on meanwhile, so other batches are not held up behind it.
   */
  private startValidation(batch: BatchRecord): void {
    if (this.validations.has(batch.id)) return;
    const validation = this.validate(batch)
      .catch((error: unknown) => {
        // Left `validating`: the next pass starts it over.
        if (!(error instanceof ValidationStopped)) {
          this.options.logger.error({ err: error, batch: batch.id }, 'batch validation failed');
        }
      })
      .finally(() => {
        this.validations.delete(batch.id);
        this.wake();
      });
    this.validations.set(batch.id, validation);
  }

  /** Reads the input file into lines; `in_progress` or `failed`. */
  private async validate(batch: BatchRecord): Promise<void> {
    const { store, files } = this.options;
    const fail = async (code: string, message: string) => {
      await store.deleteLines(batch.id);
      await store.transitionBatch(batch.id, ['validating'], {
        status: 'failed',
        failedAt: this.now(),
        errors: [{ code, message, param: null, line: null }],
      });
    };
    if (!isBatchEndpoint(batch.endpoint)) {
      await fail('invalid_endpoint', `Unsupported endpoint ${batch.endpoint}.`);
      return;
    }
    const input = await store.getFile(batch.inputFileId);
    if (input === undefined) {
      await fail('file_not_found', `The input file ${batch.inputFileId} was deleted before the batch started.`);
      return;
    }
    // Starting over is safe: nothing of this batch has run yet.
    await store.deleteLines(batch.id);
    const summary = await readBatchInput(files.read(input.id) as AsyncIterable<Buffer>, {
      batchId: batch.id,
      endpoint: batch.endpoint,
      maxLineBytes: this.options.maxLineBytes ?? 1024 * 1024,
      maxLines: this.options.maxLines ?? 50_000,
      onLines: (lines) => store.insertLines(lines),
      stopping: () => this.stopped,
      ...(this.options.compaction === undefined
        ? {}
        : { openCompaction: this.options.compaction.openerFor(batch.tenantId) }),
    });
    if (summary.failure !== null) {
      await store.deleteLines(batch.id);
      await store.transitionBatch(batch.id, ['validating'], {
        status: 'failed',
        failedAt: this.now(),
        errors: [summary.failure],
      });
      return;
    }
    const moved = await store.transitionBatch(batch.id, ['validating'], {
      status: 'in_progress',
      inProgressAt: this.now(),
      ...(summary.model === null ? {} : { model: summary.model }),
    });
    // Not moved: cancelled while validating; the lines are stored and the cancel path closes them.
    if (!moved) this.options.logger.info({ batch: batch.id }, 'batch cancelled while validating');
    this.pumpAgain = true;
  }

  /** Dispatches lines of an in-progress batch, or ends it. Returns its pending lines. */
  private async advance(batch: BatchRecord, now: number, globalLimit: number, batchLimit: number): Promise<number> {
    const { store } = this.options;
    const state = this.stateOf(batch.id);
    const counts = await store.lineCounts(batch.id);
    state.counts = counts;
    if (now >= batch.expiresAt) {
      await this.wind(batch, 'expired');
      return 0;
    }
    const outstanding = this.outstandingOf(batch.id);
    if (counts.byState.pending === 0 && outstanding === 0) {
      if (counts.byState.running === 0) {
        const moved = await store.transitionBatch(batch.id, ['in_progress'], {
          status: 'finalizing',
          finalizingAt: now,
        });
        if (moved) await this.finalize({ ...batch, status: 'finalizing' }, 'completed');
      }
      return 0;
    }
    // Read at every pass, never kept: a revocation or an expiry stops the batch at once (see the file comment).
    const principal = await this.principalOf(batch, now);
    if (principal instanceof AuthenticationError) {
      // Withdrawn lines come back pending and are failed at the next pass.
      this.withdrawQueued(batch.id);
      const error = { code: principal.code, message: principal.message };
      this.failed += await store.failPendingLines(batch.id, error, now);
      return 0;
    }
    if (counts.byState.pending === 0) return 0;
    if (now < state.backoffUntil) return counts.byState.pending;
    const room = Math.min(batchLimit - outstanding, globalLimit - this.outstanding.size);
    if (room <= 0) return counts.byState.pending;
    const serviceClass = planBatchClass({
      remainingLines: counts.byState.pending + counts.byState.running,
      remainingTokens: counts.remainingEstimatedTokens,
      now,
      deadline: batch.expiresAt,
      recentTokensPerSecond: this.rateOf(batch.id),
    });
    const lines = await store.claimLines(batch.id, room, now);
    for (const line of lines) this.dispatch(batch, line, principal, serviceClass);
    return counts.byState.pending - lines.length;
  }

  /** Ends an expired or cancelled batch once its in-flight lines have finished. */
  private async wind(batch: BatchRecord, ending: 'expired' | 'cancelled'): Promise<void> {
    // Lines running upstream finish (and are returned and billed); no new one is dispatched, and the ones still
    // waiting for capacity leave the queue (checked at every pass: a line may have been between admission steps).
    this.withdrawQueued(batch.id);
    if (this.outstandingOf(batch.id) > 0) return;
    const counts = await this.options.store.lineCounts(batch.id);
    // Another process may still run lines of this batch (cluster mode): they finish first.
    if (counts.byState.running > 0) return;
    await this.options.store.closePendingLines(batch.id, ending, this.now());
    await this.finalize(batch, ending);
  }

  /**
   * Aborts the batch's outstanding lines that wait in a scheduler queue: the admission gate takes an aborted request
   * out of the queue at once (it never runs), and the line goes back to pending, to be closed by `wind` (or failed by
   * `advance` when the batch's key stopped being valid).
   */
  private withdrawQueued(batchId: string): void {
    const schedulers = this.options.schedulers;
    if (schedulers === undefined || this.outstandingOf(batchId) === 0) return;
    const queued = new Set<string>();
    for (const scheduler of schedulers.values()) for (const id of scheduler.queuedJobIds()) queued.add(id);
    let withdrawn = 0;
    for (const [requestId, line] of this.outstanding) {
      if (line.batchId !== batchId || !queued.has(requestId) || line.abort.signal.aborted) continue;
      line.abort.abort();
      withdrawn++;
    }
    if (withdrawn > 0) this.options.logger.info({ batch: batchId, lines: withdrawn }, 'queued batch lines withdrawn');
  }

  private dispatch(batch: BatchRecord, line: BatchLineRecord, principal: Principal, serviceClass: ServiceClass): void {
    const endpoint = batchLogEndpoints[batch.endpoint as keyof typeof batchLogEndpoints];
    const trace = newRequestTrace(line.requestId, endpoint, this.now(), performance.now());
    trace.batch = true;
    trace.tenantId = batch.tenantId;
    trace.keyId = batch.keyId;
    const abort = new AbortController();
    this.outstanding.set(line.requestId, { batchId: batch.id, trace, abort, estimatedTokens: line.estimatedTokens });
    const settled = this.runLine(batch, line, principal, serviceClass, trace, abort)
      .catch((error: unknown) => this.options.logger.error({ err: error, line: line.requestId }, 'batch line failed'))
      .finally(() => {
        this.outstanding.delete(line.requestId);
        this.settling.delete(settled);
        this.wake();
      });
    this.settling.add(settled);
  }

  private async runLine(
    batch: BatchRecord,
    line: BatchLineRecord,
    principal: Principal,
    serviceClass: ServiceClass,
    trace: RequestTrace,
    abort: AbortController,
  ): Promise<void> {
    const { store, relay, recorder, billing } = this.options;
    const url = batch.endpoint as keyof typeof batchEndpoints;
    const endpoint = batchEndpoints[url];
    // A line re-run after a crash may have its request id in the log already; see the file comment.
    const logged = line.attempts > 1 ? await store.requestLogged(line.requestId) : false;
    const request = JSON.parse(line.body ?? '{}') as Record<string, unknown>;
    const responses = url === '/v1/responses';
    let outcome: BatchLineOutcome | undefined;
    try {
      const body = upstreamBodyOf(url, request, this.options.compaction?.openerFor(batch.tenantId));
      const answer = await relay.whole({ trace, principal, endpoint, body, signal: abort.signal, serviceClass });
      const response = responses
        ? responseFromChat(newResponseContext(request as ResponsesRequest, trace.receivedAt), answer, trace.usage)
        : answer;
      outcome = {
        state: 'succeeded',
        statusCode: 200,
        response: JSON.stringify(response),
        error: null,
        finishedAt: this.now(),
        ...usageOf(trace),
      };
    } catch (error: unknown) {
      // A store that cannot be reached is retried like any 503, never failed for good.
      const relayFailure = isStoreUnreachable(error) ? new StoreUnavailableError(error) : toGatewayError(error);
      const failure = responses ? asResponsesError(relayFailure) : relayFailure;
      if (failure.code === 'internal_error') {
        // The line fails with an opaque 500: its cause is only here.
        this.options.logger.error({ err: error, batch: batch.id, line: line.requestId }, 'internal error');
      }
      if (trace.status === 0 || trace.status === 200) trace.status = failure.status;
      trace.errorCode ??= failure.code;
      const retried = abort.signal.aborted || isWaitableRefusal(failure);
      // The line's own id is kept for the attempt that ends it; see the file comment.
      if (retried) trace.requestId = attemptRequestId(line);
      await recorder.finish(trace);
      if (retried) {
        if (!abort.signal.aborted) this.backOff(batch.id, failure);
      } else {
        outcome = {
          state: 'failed',
          statusCode: failure.status,
          response: JSON.stringify(toOpenAIErrorBody(failure)),
          error: { code: failure.code, message: failure.message },
          finishedAt: this.now(),
          ...usageOf(trace),
        };
      }
    }
    // Recorded under the line's id, which the log held already: that settlement released nothing.
    if (logged && outcome !== undefined) await billing.release(trace.reservation);
    if (outcome === undefined) {
      await store.requeueLine(batch.id, line.lineIndex);
      return;
    }
    await store.finishLine(batch.id, line.lineIndex, outcome);
    if (outcome.state === 'succeeded') {
      this.done++;
      this.stateOf(batch.id).recent.push([this.now(), outcome.inputTokens + outcome.outputTokens]);
    } else {
      this.failed++;
    }
  }

  /** Writes the output and error files and ends the batch. */
  private async finalize(batch: BatchRecord, ending: 'completed' | 'expired' | 'cancelled'): Promise<void> {
    const { store, files } = this.options;
    const outputId = `file-${batch.id.slice('batch_'.length)}o`;
    const errorId = `file-${batch.id.slice('batch_'.length)}e`;
    let outputLines = 0;
    let errorLines = 0;
    const lines = async function* (wanted: 'output' | 'error'): AsyncGenerator<string> {
      for (let from = 0; ; ) {
        const page = await store.listLines(batch.id, from, LINES_PER_READ);
        if (page.length === 0) return;
        for (const line of page) {
          const text = wanted === 'output' ? outputLine(batch, line) : errorLine(batch, line);
          if (text === undefined) continue;
          if (wanted === 'output') outputLines++;
          else errorLines++;
          yield `${text}\n`;
        }
        from = page[page.length - 1]!.lineIndex + 1;
      }
    };
    const outputBytes = await files.writeLines(outputId, lines('output'));
    const errorBytes = await files.writeLines(errorId, lines('error'));
    const createdAt = this.now();
    const record = (id: string, bytes: number, name: string): FileRecord => ({
      id,
      tenantId: batch.tenantId,
      purpose: 'batch_output',
      filename: `${batch.id}_${name}.jsonl`,
      bytes,
      createdAt,
      expiresAt: batch.outputExpiresAfterSeconds === null ? null : createdAt + batch.outputExpiresAfterSeconds * 1000,
    });
    // A previous attempt (crash while finalizing) may have stored them already.
    for (const [id, bytes, name, count] of [
      [outputId, outputBytes, 'output', outputLines],
      [errorId, errorBytes, 'error', errorLines],
    ] as const) {
      if (count === 0) continue;
      if ((await store.getFile(id)) === undefined) await store.insertFile(record(id, bytes, name));
    }
    if (outputLines === 0) await files.remove(outputId);
    if (errorLines === 0) await files.remove(errorId);
    const now = this.now();
    const changes = {
      ...(outputLines > 0 ? { outputFileId: outputId } : {}),
      ...(errorLines > 0 ? { errorFileId: errorId } : {}),
    };
    switch (ending) {
      case 'completed':
        await store.transitionBatch(batch.id, ['finalizing'], { ...changes, status: 'completed', completedAt: now });
        break;
      case 'expired':
        await store.transitionBatch(batch.id, ['in_progress'], { ...changes, status: 'expired', expiredAt: now });
        break;
      case 'cancelled':
        await store.transitionBatch(batch.id, ['cancelling'], {
          ...changes,
          status: 'cancelled',
          cancelledAt: now,
        });
        break;
      default:
        assertNever(ending);
    }
    this.progress.delete(batch.id);
  }

  /** The principal the batch's lines run as, or why its key no longer lets them run (as `KeyService` refuses it). */
  private async principalOf(batch: BatchRecord, now: number): Promise<Principal | AuthenticationError> {
    const key = await this.options.keys.getKey(batch.keyId);
    if (key === undefined) {
      return new AuthenticationError('The API key that created this batch no longer exists.');
    }
    if (key.revokedAt !== null) {
      return new AuthenticationError(
        'The API key that created this batch has been revoked.',
        AuthenticationErrorCode.revoked,
      );
    }
    if (key.expiresAt !== null && now >= key.expiresAt) {
      return new AuthenticationError(
        'The API key that created this batch has expired.',
        AuthenticationErrorCode.expired,
      );
    }
    return {
      tenantId: batch.tenantId,
      keyId: key.id,
      models: key.models === null ? null : new Set(key.models),
      expiresAt: key.expiresAt,
    };
  }

  private backOff(batchId: string, failure: GatewayError): void {
    const retryAfter = Number(failure.headers['retry-after'] ?? '1');
    const delayMs = Math.min(5_000, Math.max(250, (Number.isFinite(retryAfter) ? retryAfter : 1) * 1000));
    const state = this.stateOf(batchId);
    state.backoffUntil = Math.max(state.backoffUntil, this.now() + delayMs);
  }

  private stateOf(batchId: string): BatchProgressState {
    let state = this.progress.get(batchId);
    if (state === undefined) {
      state = { counts: undefined, recent: [], backoffUntil: 0 };
      this.progress.set(batchId, state);
    }
    return state;
  }

  /** Tokens per second of this batch over the last minute. */
  private rateOf(batchId: string): number {
    const state = this.progress.get(batchId);
    if (state === undefined || state.recent.length === 0) return 0;
    const now = this.now();
    while (state.recent.length > 0 && state.recent[0]![0] < now - RATE_WINDOW_MS) state.recent.shift();
    if (state.recent.length === 0) return 0;
    const tokens = state.recent.reduce((sum, [, count]) => sum + count, 0);
    const spanMs = Math.max(1_000, now - state.recent[0]![0]);
    return (tokens / spanMs) * 1000;
  }

  private outstandingOf(batchId: string): number {
    let count = 0;
    for (const line of this.outstanding.values()) if (line.batchId === batchId) count++;
    return count;
  }
}

function usageOf(trace: RequestTrace) {
  const usage = trace.usage;
  return {
    inputTokens: usage?.input.total ?? 0,
    cachedTokens: usage?.input.cached ?? 0,
    outputTokens: usage?.output.total ?? 0,
    reasoningTokens: usage?.output.reasoning ?? 0,
  };
}

/** Request id of an attempt of `line` that will be retried: `<line's request id>_attempt<n>`. */
function attemptRequestId(line: BatchLineRecord): string {
  return `${line.requestId}_attempt${line.attempts}`;
}

/** `batch_req_…` id of a line's output record. */
function outputRecordId(batch: BatchRecord, line: BatchLineRecord): string {
  return `batch_req_${batch.id.slice('batch_'.length)}_${line.lineIndex}`;
}

/** The output-file line of a succeeded line. */
function outputLine(batch: BatchRecord, line: BatchLineRecord): string | undefined {
  if (line.state !== 'succeeded') return undefined;
  return JSON.stringify({
    id: outputRecordId(batch, line),
    custom_id: line.customId,
    response: {
      status_code: line.statusCode ?? 200,
      request_id: line.requestId,
      body: JSON.parse(line.response ?? 'null'),
    },
    error: null,
  });
}

/** The error-file line of a line that failed, expired or was cancelled. */
function errorLine(batch: BatchRecord, line: BatchLineRecord): string | undefined {
  const base = { id: outputRecordId(batch, line), custom_id: line.customId };
  switch (line.state) {
    case 'succeeded':
    case 'pending':
    case 'running':
      return undefined;
    case 'failed':
      if (line.statusCode !== null) {
        return JSON.stringify({
          ...base,
          response: {
            status_code: line.statusCode,
            request_id: line.requestId,
            body: JSON.parse(line.response ?? 'null'),
          },
          error: null,
        });
      }
      return JSON.stringify({ ...base, response: null, error: line.error });
    case 'expired':
      return JSON.stringify({
        ...base,
        response: null,
        error: {
          code: 'batch_expired',
          message: 'This request could not be executed before the completion window expired.',
        },
      });
    case 'cancelled':
      return JSON.stringify({
        ...base,
        response: null,
        error: { code: 'batch_cancelled', message: 'This request was not executed because the batch was cancelled.' },
      });
    default:
      return assertNever(line.state);
  }
}
