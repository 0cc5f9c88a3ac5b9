/**
 * The end of every API request: one request-log record (through the batched writer), the metrics, and one access
 * log line — from a single `RequestTrace`, so the three never disagree.
 */
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { RequestLogRecord } from '../store/store.js';
import type { Usage } from '../upstreams/usage.js';
import type { RequestLogWriter } from './request-log-writer.js';

/** What the gateway learned about one request while serving it. */
export interface RequestTrace {
  requestId: string;
  /** Epoch ms when the request arrived. */
  receivedAt: number;
  /** `performance.now()` when the request arrived, for durations. */
  startedAt: number;
  endpoint: string;
  stream: boolean;
  tenantId: string | null;
  keyId: string | null;
  /** Public model name, once known to be valid. */
  model: string | null;
  deployment: string | null;
  status: number;
  errorCode: string | null;
  usage: Usage | undefined;
  /** `performance.now()` of the first content chunk sent (streams). */
  firstTokenAt: number | null;
  attempts: number;
  /** Set by `RequestRecorder.finish`: a trace is recorded once. */
  recorded: boolean;
}

/** Options of `RequestRecorder`. */
export interface RequestRecorderOptions {
  /** Log one line per request. Default true. */
  logRequests?: boolean;
  /**
   * Longest time a response waits for its record's commit, ms. Default 2000. Past it the response goes out and the
   * record stays buffered in the writer (retried until the store is back), so a store outage does not hang clients.
   */
  commitWaitMs?: number;
}

/** Writes the record, metrics and access log of finished requests. */
export class RequestRecorder {
  private readonly logRequests: boolean;

  constructor(
    private readonly writer: RequestLogWriter,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    options: RequestRecorderOptions = {},
  ) {
    this.logRequests = options.logRequests ?? true;
    this.commitWaitMs = options.commitWaitMs ?? 2000;
  }

  private readonly commitWaitMs: number;

  /**
   * Records a finished request. The returned promise resolves once its record is committed to the store; the
   * gateway awaits it before the last byte of a successful response, so a completed request survives `kill -9`.
   */
  finish(trace: RequestTrace): Promise<void> {
    if (trace.recorded) return Promise.resolve();
    trace.recorded = true;
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
      createdAt: trace.receivedAt,
    };
    const model = trace.model ?? 'unknown';
    const metrics = this.metrics;
    metrics.requests.labels(trace.endpoint, model, String(trace.status)).inc();
    metrics.requestDuration.labels(trace.endpoint, model).observe(latencyMs / 1000);
    if (ttftMs !== null) metrics.timeToFirstToken.labels(model).observe(ttftMs / 1000);
    if (usage !== undefined) {
      metrics.tokens.labels(model, 'input').inc(usage.input.total - usage.input.cached);
      if (usage.input.cached > 0) metrics.tokens.labels(model, 'cached_input').inc(usage.input.cached);
      metrics.tokens.labels(model, 'output').inc(usage.output.total);
    }
    if (this.logRequests) {
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
        },
        'request',
      );
    }
    const committed = this.writer.write(record);
    // The common case commits within one event-loop turn; the timer only matters while the store is failing.
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.commitWaitMs);
      timer.unref();
    });
    return Promise.race([committed.then(() => clearTimeout(timer)), waited]);
  }
}
