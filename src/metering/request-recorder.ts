/**
 * The end of every API request: one settlement (request-log record, usage event rated by the price book, release
 * of the wallet reservation) through the batched writer, the metrics, and one access log line — all from a single
 * `RequestTrace`, so they never disagree.
 */
import type { Logger } from 'pino';
import type { RateLimitState } from '../admission/admission-store.js';
import type { BillingService, RateRequest, Reservation } from '../billing/billing-service.js';
import type { BudgetAlertSink } from '../billing/budget-alert-sink.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import { isRatedLog, type Settlement, type UsageRating } from '../store/ledger-store.js';
import type { RequestLogRecord } from '../store/store.js';
import type { Usage } from '../upstreams/usage.js';

/** What the gateway learned about one request while serving it. */
export interface RequestTrace {
  requestId: string;
  /** Epoch ms when the request arrived: it chooses the price version and off-peak window. */
  receivedAt: number;
  /** `performance.now()` when the request arrived, for durations. */
  startedAt: number;
  endpoint: string;
  stream: boolean;
  /** A batch line (rated with the batch modifier). */
  batch: boolean;
  tenantId: string | null;
  keyId: string | null;
  /** Public model name, once known to be valid. */
  model: string | null;
  deployment: string | null;
  status: number;
  errorCode: string | null;
  usage: Usage | undefined;
  /** What admission reserved on the wallet; released when the request is settled. */
  reservation: Reservation | undefined;
  /** The class the request ran in (after the plan's downgrade). */
  serviceClass: ServiceClass | undefined;
  /** Rate-limit windows after admission, for the `x-ratelimit-*` headers. */
  rateLimit: RateLimitState | undefined;
  /** Settles or undoes the admission (limits, capacity) once; set by the admission gate. */
  release: ((usage: Usage | undefined) => void) | undefined;
  /** Upstream attempts, when there was more than one (`a/m unhealthy … → b/m accepted …`). */
  attemptLog: string | null;
  /** `performance.now()` of the first content chunk sent (streams). */
  firstTokenAt: number | null;
  attempts: number;
  /** Set by `RequestRecorder.finish`: a trace is recorded once. */
  recorded: boolean;
}

/** Where settlements go: the batched writer. */
export interface SettlementSink {
  /** Resolves true once durable (journaled, committed or spooled), false if dropped. Never rejects. */
  write(settlement: Settlement): Promise<boolean>;
}

/** Options of `RequestRecorder`. */
export interface RequestRecorderOptions {
  /** Log one line per request. Default true. */
  logRequests?: boolean;
  /**
   * Longest time a response waits for its settlement to be durable, ms. Default 2000. Past it the response goes
   * out and the settlement stays buffered in the writer (retried until the store is back), so a store outage does
   * not hang clients. A writer with a journal makes a settlement durable at the end of its turn; one with a spool
   * makes it durable on disk before this while the store is down (after its `spoolAfterMs`).
   */
  commitWaitMs?: number;
  /** Receives month-to-date spend changes for budget alerts. */
  alerts?: BudgetAlertSink;
}

/** Creates a trace for a request that just arrived. */
export function newRequestTrace(
  requestId: string,
  endpoint: string,
  receivedAt: number,
  startedAt: number,
): RequestTrace {
  return {
    requestId,
    receivedAt,
    startedAt,
    endpoint,
    stream: false,
    batch: false,
    tenantId: null,
    keyId: null,
    model: null,
    deployment: null,
    status: 0,
    errorCode: null,
    usage: undefined,
    reservation: undefined,
    serviceClass: undefined,
    rateLimit: undefined,
    release: undefined,
    attemptLog: null,
    firstTokenAt: null,
    attempts: 0,
    recorded: false,
  };
}

/** What rating needs of a trace, or undefined when it never reached a tenant's model. */
export function rateRequestFor(trace: RequestTrace, usage: Usage): RateRequest | undefined {
  if (trace.tenantId === null || trace.model === null) return undefined;
  return {
    requestId: trace.requestId,
    tenantId: trace.tenantId,
    keyId: trace.keyId,
    model: trace.model,
    deployment: trace.deployment,
    receivedAt: trace.receivedAt,
    batch: trace.batch,
    usage,
  };
}

/** Writes the settlement, metrics and access log of finished requests. */
export class RequestRecorder {
  private readonly logRequests: boolean;
  private readonly commitWaitMs: number;
  private readonly alerts: BudgetAlertSink | undefined;

  constructor(
    private readonly writer: SettlementSink,
    private readonly billing: BillingService,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    options: RequestRecorderOptions = {},
  ) {
    this.logRequests = options.logRequests ?? true;
    this.commitWaitMs = options.commitWaitMs ?? 2000;
    this.alerts = options.alerts;
  }

  /**
   * Records a finished request. The returned promise resolves once its settlement is durable (journaled or
   * committed; or after `commitWaitMs`); the gateway awaits it before the last byte of a successful response, so a
   * completed request's usage survives `kill -9`.
   */
  finish(trace: RequestTrace): Promise<void> {
    if (trace.recorded) return Promise.resolve();
    trace.recorded = true;
    const release = trace.release;
    trace.release = undefined;
    release?.(trace.usage);
    const now = performance.now();
    const latencyMs = now - trace.startedAt;
    const ttftMs = trace.firstTokenAt === null ? null : trace.firstTokenAt - trace.startedAt;
    const usage = trace.usage;
    const record: RequestLogRecord = {
      requestId: trace.requestId,
      tenantId: trace.tenantId,
      keyId: trace.keyId,
      endpoint: trace.endpoint,
      model: trace.model,
      deployment: trace.deployment,
      status: trace.status,
      errorCode: trace.errorCode,
      stream: trace.stream,
      promptTokens: usage?.input.total ?? 0,
      cachedTokens: usage?.input.cached ?? 0,
      completionTokens: usage?.output.total ?? 0,
      reasoningTokens: usage?.output.reasoning ?? 0,
      usageEstimated: usage?.estimated ?? false,
      latencyMs: Math.round(latencyMs * 1000) / 1000,
      ttftMs: ttftMs === null ? null : Math.round(ttftMs * 1000) / 1000,
      attempts: trace.attempts,
      attemptLog: trace.attemptLog,
      createdAt: trace.receivedAt,
    };
    const rateRequest = usage === undefined ? undefined : rateRequestFor(trace, usage);
    const position = rateRequest === undefined ? undefined : this.billing.volumePositionFor(rateRequest);
    const settle = (monthTokensBefore: bigint | undefined) => {
      const rating = this.charge(trace, rateRequest, monthTokensBefore);
      // A rate request names the trace's tenant and model, so a rated record always does.
      const settlement: Settlement =
        rating !== undefined && isRatedLog(record) ? { log: record, rating } : { log: record };
      if (trace.reservation !== undefined) {
        const { tenantId, owner } = trace.reservation;
        const amount = this.billing.settledReservation(trace.reservation, rating?.amount ?? 0n);
        settlement.reservation = owner === undefined ? { tenantId, amount } : { tenantId, amount, owner };
      }
      if (trace.stream) settlement.checkpointRequestId = trace.requestId;
      return this.commit(trace, record, settlement, latencyMs, ttftMs);
    };
    if (position === undefined) return settle(undefined);
    // Cluster mode with volume tiers: the request's place in the tenant's month comes from the shared counter.
    return position.then(settle, (error: unknown) => {
      this.logger.warn(
        { err: error, reqId: trace.requestId },
        "shared volume counter unavailable: rated by this process's month count",
      );
      this.metrics.volumeCounterFallbacks.inc();
      return settle(undefined);
    });
  }

  /**
   * Rates the request and moves the month counters and budget alerts; returns its rating. The budget hold ends in
   * the same synchronous step as the spend is counted, so a budget never counts the request as neither held nor
   * spent. `monthTokensBefore`: the request's place in the tenant's month when a shared counter gave it.
   */
  private charge(
    trace: RequestTrace,
    rateRequest: RateRequest | undefined,
    monthTokensBefore: bigint | undefined,
  ): UsageRating | undefined {
    let rating: UsageRating | undefined;
    try {
      rating = rateRequest === undefined ? undefined : this.billing.rate(rateRequest, monthTokensBefore);
    } finally {
      if (trace.reservation !== undefined) this.billing.releaseBudgetHold(trace.reservation, rating?.amount ?? 0n);
    }
    if (rating === undefined || rateRequest === undefined) return undefined;
    const spend = this.billing.recordSpend(rateRequest, rating.amount);
    this.alerts?.onSettled({
      tenantId: rateRequest.tenantId,
      keyId: rateRequest.keyId,
      at: rateRequest.receivedAt,
      monthSpendBefore: { tenant: spend.tenantBefore, key: spend.keyBefore },
      monthSpendAfter: { tenant: spend.tenantAfter, key: spend.keyAfter },
    });
    return rating;
  }

  /** Metrics, access log, and the settlement to the writer; resolves once durable (or after `commitWaitMs`). */
  private commit(
    trace: RequestTrace,
    record: RequestLogRecord,
    settlement: Settlement,
    latencyMs: number,
    ttftMs: number | null,
  ): Promise<void> {
    this.observe(trace, record, latencyMs, ttftMs);
    const committed = this.writer.write(settlement);
    // The common case is durable within one event-loop turn; the timer only matters while the store is failing.
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.commitWaitMs);
      timer.unref();
    });
    return Promise.race([committed.then(() => clearTimeout(timer)), waited]);
  }

  private observe(trace: RequestTrace, record: RequestLogRecord, latencyMs: number, ttftMs: number | null): void {
    const model = trace.model ?? 'unknown';
    const metrics = this.metrics;
    metrics.requests.labels(trace.endpoint, model, String(trace.status)).inc();
    metrics.requestDuration.labels(trace.endpoint, model).observe(latencyMs / 1000);
    if (ttftMs !== null) metrics.timeToFirstToken.labels(model).observe(ttftMs / 1000);
    const usage = trace.usage;
    if (usage !== undefined) {
      metrics.tokens.labels(model, 'input').inc(usage.input.total - usage.input.cached);
      if (usage.input.cached > 0) metrics.tokens.labels(model, 'cached_input').inc(usage.input.cached);
      metrics.tokens.labels(model, 'output').inc(usage.output.total);
    }
    // The line's object is built only when it will be written (`log.level` above `info` skips it).
    if (!this.logRequests || !this.logger.isLevelEnabled('info')) return;
    this.logger.info(
      {
        reqId: trace.requestId,
        tenant: trace.tenantId,
        keyId: trace.keyId,
        endpoint: trace.endpoint,
        model: trace.model,
        deployment: trace.deployment,
        status: trace.status,
        code: trace.errorCode ?? undefined,
        stream: trace.stream,
        promptTokens: record.promptTokens,
        completionTokens: record.completionTokens,
        estimated: record.usageEstimated || undefined,
        latencyMs: record.latencyMs,
        ttftMs: record.ttftMs ?? undefined,
        tier: trace.serviceClass,
        attempts: trace.attemptLog ?? undefined,
      },
      'request',
    );
  }
}
