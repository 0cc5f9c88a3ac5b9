import type { Logger } from 'pino';
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import type { LedgerStore, Settlement } from '../store/ledger-store.js';

/** Options of `SettlementWriter`. */
export interface SettlementWriterOptions {
  /** Most settlements per transaction. Default 2000 (SQLite ingests ~50k events/s at that size). */
  maxBatch?: number;
  /**
   * Most settlements held in memory (waiting or being written). Default 100,000. While the store is down, writes
   * beyond this are dropped (their promise resolves `false`, counted in `stats.dropped`, logged).
   */
  maxBuffered?: number;
  /** First retry delay after a failed commit, ms; doubles per consecutive failure. Default 100. */
  retryInitialMs?: number;
  /** Longest retry delay, ms. Default 5000. */
  retryMaxMs?: number;
  /** How long `close()` keeps retrying a failing store before dropping what is left, ms. Default 10,000. */
  closeTimeoutMs?: number;
  /**
   * Failures of one settlement, each after some other commit succeeded, before it is dropped as unwritable (a
   * settlement the store refuses would otherwise block every one behind it). Failures during an outage do not
   * count.
   * Default 3.
   */
  maxPoisonStrikes?: number;
  /** Receives commit failures and drops (error level). Default: none. */
  logger?: Logger;
  /** Called with every failed commit's error (e.g. to count it in a metric). */
  onError?: (error: unknown) => void;
  /** Time source for retry delays. Default: the wall clock. */
  clock?: Clock;
}

/** Counters since the writer was created. */
export interface SettlementWriterStats {
  /** Settlements committed. */
  committed: number;
  /** Successful store calls (transactions). */
  transactions: number;
  /** Failed store calls. */
  failedCommits: number;
  /** Settlements dropped (buffer full, written after close, unwritable, or left when `close()` timed out). */
  dropped: number;
}

interface PendingSettlement {
  settlement: Settlement;
  resolve: (committed: boolean) => void;
  /** `stats.transactions` when this settlement last failed alone: a lone failure after a success is a strike. */
  failedAtTransaction: number;
  strikes: number;
}

/**
 * Group commit for settlements (request-log row, usage event, reservation release, checkpoint deletion of one
 * finished request). `write` appends to an in-memory batch; the batch is committed by one `store.settle` call (one
 * transaction) on the next `setImmediate` after its first settlement (so every request that completed in the same
 * event-loop turn shares it) or as soon as it reaches `maxBatch`. One commit runs at a time; settlements that
 * arrive meanwhile form the next batch.
 *
 * The promise `write` returns never rejects: it resolves `true` once the settlement is committed (durable: it
 * survives `kill -9` of the process), or `false` when it was dropped — buffer full while the store is down,
 * written after `close()`, refused by the store repeatedly while other settlements commit, or still unwritten
 * when `close()` gave up. A failed commit is retried with exponential backoff; its settlements stay in memory.
 * Retrying is safe because `settle` is idempotent by request id: a batch that committed although its call failed
 * (a lost connection after COMMIT) is not billed twice.
 */
export class SettlementWriter {
  private readonly maxBatch: number;
  private readonly maxBuffered: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly closeTimeoutMs: number;
  private readonly maxPoisonStrikes: number;
  private readonly logger: Logger | undefined;
  private readonly onError: ((error: unknown) => void) | undefined;
  private readonly clock: Clock;

  private queue: PendingSettlement[] = [];
  /** Settlements in the next commit: `maxBatch`, halved while commits fail. */
  private batchLimit: number;
  private inFlight = 0;
  private flushing: Promise<void> | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private microtaskQueued = false;
  private retryTimer: { timer: ClockTimer; wake: () => void } | undefined;
  private consecutiveFailures = 0;
  private closed = false;
  private abandon = false;
  private lastDropLogAt = Number.NEGATIVE_INFINITY;
  private dropsSinceLog = 0;
  private readonly counters: SettlementWriterStats = { committed: 0, transactions: 0, failedCommits: 0, dropped: 0 };

  constructor(
    private readonly store: Pick<LedgerStore, 'settle'>,
    options: SettlementWriterOptions = {},
  ) {
    this.maxBatch = Math.max(1, options.maxBatch ?? 2000);
    this.batchLimit = this.maxBatch;
    this.maxBuffered = Math.max(this.maxBatch, options.maxBuffered ?? 100_000);
    this.retryInitialMs = options.retryInitialMs ?? 100;
    this.retryMaxMs = Math.max(this.retryInitialMs, options.retryMaxMs ?? 5000);
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.maxPoisonStrikes = Math.max(1, options.maxPoisonStrikes ?? 3);
    this.logger = options.logger;
    this.onError = options.onError;
    this.clock = options.clock ?? new RealClock();
  }

  /** Queues a settlement; resolves `true` when it is committed, `false` if it was dropped. Never rejects. */
  write(settlement: Settlement): Promise<boolean> {
    if (this.closed) return Promise.resolve(this.drop('the writer is closed'));
    if (this.queue.length + this.inFlight >= this.maxBuffered) {
      return Promise.resolve(this.drop(`${this.maxBuffered} settlements are already waiting for the store`));
    }
    return new Promise<boolean>((resolve) => {
      this.queue.push({ settlement, resolve, failedAtTransaction: -1, strikes: 0 });
      this.schedule();
    });
  }

  /** Commits everything written so far, then refuses new writes. Resolves when nothing is left in memory. */
  async close(): Promise<void> {
    this.closed = true;
    const deadline = this.clock.setTimer(this.closeTimeoutMs, () => {
      this.abandon = true;
      this.retryTimer?.wake();
    });
    try {
      while (this.queue.length > 0 || this.flushing !== undefined) {
        await (this.flushing ?? this.startFlush());
      }
    } finally {
      deadline.cancel();
    }
  }

  /** A snapshot of the counters. */
  get stats(): SettlementWriterStats {
    return { ...this.counters };
  }

  /** Settlements in memory: waiting for a commit or being committed. */
  get buffered(): number {
    return this.queue.length + this.inFlight;
  }

  private schedule(): void {
    if (this.flushing !== undefined) return; // The running flush loop takes new settlements when its commit ends.
    if (this.queue.length >= this.maxBatch) {
      // Full batch: commit without waiting for the turn to end, but not inside the caller's `write` call stack.
      if (!this.microtaskQueued) {
        this.microtaskQueued = true;
        queueMicrotask(() => {
          this.microtaskQueued = false;
          void this.startFlush();
        });
      }
      return;
    }
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      void this.startFlush();
    });
  }

  private startFlush(): Promise<void> {
    if (this.flushing !== undefined) return this.flushing;
    if (this.immediate !== undefined) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      // A write made after the loop found the queue empty and before this callback (a caller continuing from its
      // resolved write, in the same microtask run) was told a flush was running: start the one it needs.
      if (this.queue.length > 0) this.schedule();
    });
    return this.flushing;
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      if (this.abandon) {
        this.dropQueued();
        return;
      }
      const batch = this.queue.splice(0, this.batchLimit);
      this.inFlight = batch.length;
      try {
        await this.store.settle(batch.map((pending) => pending.settlement));
        this.inFlight = 0;
        this.consecutiveFailures = 0;
        this.batchLimit = this.maxBatch;
        this.counters.transactions++;
        this.counters.committed += batch.length;
        for (const pending of batch) pending.resolve(true);
      } catch (error: unknown) {
        this.inFlight = 0;
        this.counters.failedCommits++;
        this.consecutiveFailures++;
        this.logger?.error(
          { err: error, settlements: batch.length, attempt: this.consecutiveFailures },
          'Settlement commit failed; retrying',
        );
        this.onError?.(error);
        this.requeueFailed(batch);
        await this.backoff();
      }
    }
  }

  /**
   * Puts a failed batch back in the queue and halves the next batch, so a settlement the store refuses ends up
   * alone, where it can be told apart from an outage. A settlement that fails alone goes to the back of the queue
   * (so the ones behind it get their turn; order does not matter, every settlement carries its own time) and, when
   * some other commit succeeded since it last failed alone, earns a strike; at `maxPoisonStrikes` it is dropped.
   */
  private requeueFailed(batch: PendingSettlement[]): void {
    const lone = batch.length === 1 ? batch[0] : undefined;
    if (lone === undefined) {
      this.queue.unshift(...batch);
      this.batchLimit = Math.max(1, Math.ceil(batch.length / 2));
      return;
    }
    if (lone.failedAtTransaction !== -1 && lone.failedAtTransaction !== this.counters.transactions) lone.strikes++;
    lone.failedAtTransaction = this.counters.transactions;
    if (lone.strikes < this.maxPoisonStrikes) {
      this.queue.push(lone);
      return;
    }
    this.logger?.error({ requestId: lone.settlement.log.requestId }, 'Settlement refused by the store; dropped');
    this.counters.dropped++;
    lone.resolve(false);
  }

  private backoff(): Promise<void> {
    if (this.abandon) return Promise.resolve();
    const delay = Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** (this.consecutiveFailures - 1));
    return new Promise((resolve) => {
      const wake = (): void => {
        this.retryTimer?.timer.cancel();
        this.retryTimer = undefined;
        resolve();
      };
      this.retryTimer = { timer: this.clock.setTimer(delay, wake), wake };
    });
  }

  private dropQueued(): void {
    const left = this.queue;
    this.queue = [];
    if (left.length === 0) return;
    this.counters.dropped += left.length;
    this.logger?.error({ settlements: left.length }, 'Settlements dropped: the store stayed unavailable at close');
    for (const pending of left) pending.resolve(false);
  }

  private drop(reason: string): false {
    this.counters.dropped++;
    this.dropsSinceLog++;
    // At most one line per second: during an outage at 10k req/s a line per settlement would flood the log.
    const now = this.clock.now();
    if (now - this.lastDropLogAt >= 1000) {
      this.logger?.error({ dropped: this.dropsSinceLog, reason }, 'Settlements dropped');
      this.lastDropLogAt = now;
      this.dropsSinceLog = 0;
    }
    return false;
  }
}
