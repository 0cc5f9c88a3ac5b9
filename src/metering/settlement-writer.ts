import type { Logger } from 'pino';
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import type { LedgerStore, Settlement } from '../store/ledger-store.js';
import type { JournalAppend, JournalSegment, SettlementJournal } from './settlement-journal.js';
import type { SettlementSpool } from './settlement-spool.js';

/** Settlements per transaction unless told otherwise (SQLite ingests ~50k events/s at that size). */
export const DEFAULT_SETTLEMENT_BATCH = 2000;

/**
 * How a gateway settles into PostgreSQL: two commits side by side, batches of up to 10,000. One writer made
 * 20,853 / 35,386 / 41,992 events/s at batches of 500 / 2,000 / 10,000 here, two side by side 28,507 / 43,418 /
 * 59,801 (`npm run bench:ledger`, docs/benchmarks.md, session 10). SQLite commits one batch at a time on its settle
 * thread, so it keeps the defaults.
 */
export const POSTGRES_WRITER_OPTIONS = { concurrency: 2, maxBatch: 10_000 } as const satisfies SettlementWriterOptions;

/** Options of `SettlementWriter`. */
export interface SettlementWriterOptions {
  /** Most settlements per transaction. Default `DEFAULT_SETTLEMENT_BATCH`. */
  maxBatch?: number;
  /**
   * Commits run side by side, each with its own batch, while the store takes them; one at a time while commits
   * fail. Default 1. PostgreSQL settles two batches at once on two connections about 1.4× as fast as one after the
   * other (`npm run bench:ledger`); SQLite commits one at a time whatever the writer does.
   */
  concurrency?: number;
  /**
   * Most settlements held in memory (waiting or being written). Default 100,000. Writes beyond this go to the spool
   * when there is one; without one (or when it fails) they are dropped (their promise resolves `false`, counted in
   * `stats.dropped`, logged).
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
  /** Called with every failed commit's or journal append's error (e.g. to count it in a metric). */
  onError?: (error: unknown) => void;
  /** Time source for retry delays. Default: the wall clock. */
  clock?: Clock;
  /**
   * Where settlements go while the store is down: a failed batch is appended to it (and synced), and counts as
   * durable, instead of waiting in memory. Batches that arrive before the store's next retry go there at once. The
   * spool is drained into the store after it takes a batch again, and every `retryMaxMs` while anything is spooled.
   */
  spool?: SettlementSpool;
  /**
   * With a spool: how long a commit may take before the settlements waiting on it (its batch, and those queued behind
   * it) are appended to the spool and count as durable, ms. A store that hangs instead of failing (a network
   * partition) then holds no response past this. Default 1000, under the recorder's commit wait (2000).
   */
  spoolAfterMs?: number;
  /**
   * Makes settlements durable before their commit: each turn's writes are appended to it in one write system call,
   * and their promises resolve then; the store commits them afterwards (see `SettlementJournal`). For the processes
   * of an embedded store: `flushed` then gives a process's readers its own writes (and, through a settle round of
   * the workers, every worker's: `WorkerSettleBarrier`). Default: none (a write resolves at its commit).
   */
  journal?: SettlementJournal;
  /**
   * With a journal: how long a batch that is not full waits for more settlements before its commit, ms, also
   * between the commits of a busy writer. Nothing waits on it (responses resolve at the journal, readers' `flushed`
   * commits at once, and while appends to the journal fail the writer commits at once), and a commit of a few
   * settlements costs the store's thread nearly what one of many does. Default 20; 0 commits on the next turn, as
   * without a journal.
   */
  journalCommitDelayMs?: number;
}

/**
 * Default of `SettlementWriterOptions.journalCommitDelayMs`. At 1,000 req/s on a busy machine (`npm run bench:ab`,
 * four pairs each, every pair lower), 20 ms took 9% less CPU per request than 5 ms over all the gateway's threads,
 * and 50 ms 17%; 50 ms against 20 was within the noise (0.96), and on a quiet machine it saved nothing (1.00 at
 * 1,000 req/s and at 32 connections, docs/benchmarks.md, session 14). Longer is not free: a write on the serving
 * thread's own connection (a top-up, a batch line) that meets a longer transaction waits longer for it (on timers,
 * see `sqlite-busy-wait.ts`).
 */
export const DEFAULT_JOURNAL_COMMIT_DELAY_MS = 20;

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
  /** Settlements appended to the spool because the store failed or was slow (durable there until drained). */
  spooled: number;
  /** Settlements appended to the journal (durable there before their commit). */
  journaled: number;
  /** Failed journal appends (their settlements then waited for their commit). */
  journalFailures: number;
}

interface PendingSettlement {
  settlement: Settlement;
  resolve: (committed: boolean) => void;
  /** The journal segment holding it, once journaled. */
  segment?: JournalSegment;
  /** Its line in that segment (`settlementToJson`), handed to the store with its commit. */
  line?: string;
  /** Its journal append failed: its response waits for its commit. */
  awaitsCommit?: boolean;
  /** Committed, spooled or dropped: nothing more to do (the journal turn skips it). */
  done?: boolean;
  /** `epoch` when written (see `flushed`). */
  epoch: number;
  /** `stats.transactions` when this settlement last failed alone: a lone failure after a success is a strike. */
  failedAtTransaction: number;
  strikes: number;
}

/**
 * Group commit for settlements (request-log row, usage event, reservation release, checkpoint deletion of one
 * finished request). `write` appends to an in-memory batch; the batch is committed by one `store.settle` call (one
 * transaction) on the next `setImmediate` after its first settlement (so every request that completed in the same
 * event-loop turn shares it) or as soon as it reaches `maxBatch`. Up to `concurrency` commits run at a time
 * (one by default); settlements that arrive meanwhile form the next batch.
 *
 * The promise `write` returns never rejects: it resolves `true` once the settlement is durable — appended to the
 * journal (when there is one: see `SettlementJournal`), committed, or appended to the spool while the store is down —
 * so it survives `kill -9` of the process, or `false` when it was dropped: buffer full while the store is down,
 * written after `close()`, refused by the store repeatedly while other settlements commit, or still unwritten when
 * `close()` gave up (without a spool, or when the spool fails too).
 * Without a spool a failed commit is retried with exponential backoff and its settlements stay in memory. Retrying
 * and draining are safe because `settle` is idempotent by request id: a batch that committed although its call
 * failed (a lost connection after COMMIT) is not billed twice.
 */
export class SettlementWriter {
  private readonly maxBatch: number;
  private readonly concurrency: number;
  private readonly maxBuffered: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly closeTimeoutMs: number;
  private readonly maxPoisonStrikes: number;
  private readonly logger: Logger | undefined;
  private readonly onError: ((error: unknown) => void) | undefined;
  private readonly clock: Clock;
  private readonly spool: SettlementSpool | undefined;
  private readonly spoolAfterMs: number;
  private readonly journal: SettlementJournal | undefined;

  private queue: PendingSettlement[] = [];
  /** Writes beyond `maxBuffered` waiting for their one append to the spool (with a spool only). */
  private overflow: PendingSettlement[] = [];
  /** Settlements in the next commit: `maxBatch`, halved while commits fail. */
  private batchLimit: number;
  /** Settlements taken by flush loops and not yet done with. */
  private inFlight = 0;
  /** Running flush loops: at most `concurrency`, one while commits fail. */
  private readonly loops = new Set<Promise<void>>();
  private immediate: NodeJS.Immediate | undefined;
  /** With a journal: the pending gathered commit (see `journalCommitDelayMs`). */
  private gatherTimer: ClockTimer | undefined;
  private readonly gatherMs: number;
  private microtaskQueued = false;
  /** Backoffs under way, one per failed loop: `close` wakes them when it gives up. */
  private readonly retryTimers = new Set<{ timer: ClockTimer; wake: () => void }>();
  private consecutiveFailures = 0;
  /** With a spool: `clock.now()` before which batches go to the spool without trying the store. */
  private retryAt = Number.NEGATIVE_INFINITY;
  private draining: Promise<void> | undefined;
  private drainTimer: ClockTimer | undefined;
  private closed = false;
  private abandon = false;
  private lastDropLogAt = Number.NEGATIVE_INFINITY;
  private dropsSinceLog = 0;
  /** With a journal: this turn's writes, appended to it at the end of the turn. */
  private unjournaled: PendingSettlement[] = [];
  private journalImmediate: NodeJS.Immediate | undefined;
  private lastJournalErrorLogAt = Number.NEGATIVE_INFINITY;
  /** Settlements whose journal append failed, not done yet: their responses wait for their commit. */
  private awaitingCommit = 0;
  /** Advanced by each `flushed` call that has to wait; every write is stamped with it. */
  private epoch = 0;
  /** Settlements not done yet (committed, spooled or dropped), by the epoch they were written in. */
  private readonly unfinished = new Map<number, number>();
  /** `flushed` calls waiting for every settlement of their epoch and before to be done. */
  private barriers: { epoch: number; resolve: () => void }[] = [];
  private readonly counters: SettlementWriterStats = {
    committed: 0,
    transactions: 0,
    failedCommits: 0,
    dropped: 0,
    spooled: 0,
    journaled: 0,
    journalFailures: 0,
  };

  constructor(
    private readonly store: Pick<LedgerStore, 'settle'>,
    options: SettlementWriterOptions = {},
  ) {
    this.maxBatch = Math.max(1, options.maxBatch ?? DEFAULT_SETTLEMENT_BATCH);
    this.concurrency = Math.max(1, options.concurrency ?? 1);
    this.batchLimit = this.maxBatch;
    this.maxBuffered = Math.max(this.maxBatch, options.maxBuffered ?? 100_000);
    this.retryInitialMs = options.retryInitialMs ?? 100;
    this.retryMaxMs = Math.max(this.retryInitialMs, options.retryMaxMs ?? 5000);
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.maxPoisonStrikes = Math.max(1, options.maxPoisonStrikes ?? 3);
    this.logger = options.logger;
    this.onError = options.onError;
    this.clock = options.clock ?? new RealClock();
    this.spool = options.spool;
    this.spoolAfterMs = options.spoolAfterMs ?? 1000;
    this.journal = options.journal;
    this.gatherMs = this.journal === undefined ? 0 : (options.journalCommitDelayMs ?? DEFAULT_JOURNAL_COMMIT_DELAY_MS);
  }

  /**
   * Queues a settlement; resolves `true` once it is durable (journaled, committed or spooled), `false` if it was
   * dropped.
   */
  write(settlement: Settlement): Promise<boolean> {
    if (this.closed) return Promise.resolve(this.drop('the writer is closed'));
    if (this.queue.length + this.inFlight >= this.maxBuffered) {
      if (this.spool !== undefined) return this.spoolOverflow(settlement);
      return Promise.resolve(this.drop(`${this.maxBuffered} settlements are already waiting for the store`));
    }
    return new Promise<boolean>((resolve) => {
      const pending = this.track(settlement, resolve);
      this.queue.push(pending);
      if (this.journal !== undefined) {
        this.unjournaled.push(pending);
        this.journalImmediate ??= setImmediate(() => this.journalTurn());
      }
      this.schedule();
    });
  }

  /**
   * Resolves once every settlement written before this call is done with: committed, spooled, or dropped. With a
   * journal, a reader of the store that awaits this first sees every request that ended before it asked (its own
   * writes) although their responses did not wait for the commit.
   */
  flushed(): Promise<void> {
    if (this.unfinished.size === 0) return Promise.resolve();
    // A reader waits for this: a batch gathering more settlements commits now.
    if (this.gatherTimer !== undefined) this.startFlush();
    const epoch = this.epoch++;
    return new Promise((resolve) => this.barriers.push({ epoch, resolve }));
  }

  /** A new pending settlement, counted unfinished in the current epoch. */
  private track(settlement: Settlement, resolve: (durable: boolean) => void): PendingSettlement {
    const epoch = this.epoch;
    this.unfinished.set(epoch, (this.unfinished.get(epoch) ?? 0) + 1);
    return { settlement, resolve, failedAtTransaction: -1, strikes: 0, epoch };
  }

  /**
   * The end of a settlement in this writer: committed or spooled (`durable`), or dropped. Its journal segment learns
   * it is settled (a dropped one stays there, for the next start to settle); waiting `flushed` calls move on.
   */
  private finish(pending: PendingSettlement, durable: boolean): void {
    if (pending.done === true) return;
    pending.done = true;
    if (pending.awaitsCommit === true) this.awaitingCommit--;
    pending.resolve(durable);
    if (durable && pending.segment !== undefined) this.journal!.settled(pending.segment);
    const left = (this.unfinished.get(pending.epoch) ?? 1) - 1;
    if (left > 0) {
      this.unfinished.set(pending.epoch, left);
      return;
    }
    this.unfinished.delete(pending.epoch);
    if (this.barriers.length === 0) return;
    let oldest = Number.POSITIVE_INFINITY;
    for (const epoch of this.unfinished.keys()) oldest = Math.min(oldest, epoch);
    const waiting: typeof this.barriers = [];
    for (const barrier of this.barriers) {
      if (barrier.epoch < oldest) barrier.resolve();
      else waiting.push(barrier);
    }
    this.barriers = waiting;
  }

  /**
   * With a journal, at the end of a turn: the turn's settlements not done yet are appended in one write and their
   * promises resolve (durable). When the append fails they resolve at their commit instead, as without a journal.
   */
  private journalTurn(): void {
    this.journalImmediate = undefined;
    const turn = this.unjournaled;
    this.unjournaled = [];
    const open = turn.filter((pending) => pending.done !== true);
    if (open.length === 0) return;
    let appended: JournalAppend;
    try {
      appended = this.journal!.append(open.map((pending) => pending.settlement));
    } catch (error: unknown) {
      this.counters.journalFailures++;
      for (const pending of open) pending.awaitsCommit = true;
      this.awaitingCommit += open.length;
      this.onError?.(error);
      // At most one line per second: a full disk fails every turn.
      const now = this.clock.now();
      if (now - this.lastJournalErrorLogAt >= 1000) {
        this.logger?.error({ err: error }, 'Could not journal settlements; responses wait for their commit');
        this.lastJournalErrorLogAt = now;
      }
      // Their responses wait for this commit: it does not wait to gather more.
      if (this.gatherTimer !== undefined) this.startFlush();
      return;
    }
    this.counters.journaled += open.length;
    const { segment, lines } = appended;
    for (let index = 0; index < open.length; index++) {
      const pending = open[index]!;
      pending.segment = segment;
      pending.line = lines[index];
      pending.resolve(true);
    }
  }

  /**
   * A write beyond `maxBuffered` with a spool: appended to it (with the other overflow of this turn, in one append)
   * instead of dropped. Dropped only when the spool fails too.
   */
  private spoolOverflow(settlement: Settlement): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      this.overflow.push(this.track(settlement, resolve));
      if (this.overflow.length > 1) return;
      setImmediate(() => {
        const overflow = this.overflow;
        this.overflow = [];
        void this.toSpool(overflow, 'the buffer is full').then((spooled) => {
          if (!spooled)
            for (const pending of overflow) this.finish(pending, this.drop('the buffer is full and the spool failed'));
        });
      });
    });
  }

  /** Commits everything written so far, then refuses new writes. Resolves when nothing is left in memory. */
  async close(): Promise<void> {
    this.closed = true;
    // What this turn wrote is journaled first: should the store stay down, the next start settles it from there.
    if (this.journalImmediate !== undefined) {
      clearImmediate(this.journalImmediate);
      this.journalTurn();
    }
    const deadline = this.clock.setTimer(this.closeTimeoutMs, () => {
      this.abandon = true;
      for (const retry of [...this.retryTimers]) retry.wake();
    });
    try {
      while (this.queue.length > 0 || this.loops.size > 0) {
        if (this.loops.size === 0) this.startFlush();
        await Promise.race(this.loops);
      }
    } finally {
      deadline.cancel();
      this.drainTimer?.cancel();
      this.drainTimer = undefined;
    }
    // A drain under way is left to finish or fail on its own: whatever it does not settle stays in the spool.
    await this.spool?.close();
    this.journal?.close();
  }

  /** A snapshot of the counters. */
  get stats(): SettlementWriterStats {
    return { ...this.counters };
  }

  /** Settlements in memory: waiting for a commit or being committed. */
  get buffered(): number {
    return this.queue.length + this.inFlight;
  }

  /** Flush loops allowed now: `concurrency`, or one while commits fail (so that only one retries). */
  private get loopLimit(): number {
    return this.consecutiveFailures > 0 ? 1 : this.concurrency;
  }

  private schedule(): void {
    // The running flush loops take new settlements when their commits end.
    if (this.loops.size >= this.loopLimit) return;
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
    if (this.gatherMs > 0) {
      this.gatherTimer ??= this.clock.setTimer(this.gatherMs, () => {
        this.gatherTimer = undefined;
        this.startFlush();
      });
      return;
    }
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      void this.startFlush();
    });
  }

  /**
   * Starts flush loops while they are allowed and settlements wait. A loop takes its first batch before its first
   * `await`, so a queue of several batches gets a loop per batch, up to the limit.
   */
  private startFlush(): void {
    if (this.immediate !== undefined) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    this.gatherTimer?.cancel();
    this.gatherTimer = undefined;
    while (this.loops.size < this.loopLimit && this.queue.length > 0) {
      const loop: Promise<void> = this.flushLoop().finally(() => {
        this.loops.delete(loop);
        // A write made after the loop found the queue empty and before this callback (a caller continuing from its
        // resolved write, in the same microtask run) was told a flush was running: start the one it needs.
        if (this.queue.length > 0) this.schedule();
      });
      this.loops.add(loop);
    }
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      if (this.abandon) {
        await this.spoolOrDropQueued();
        return;
      }
      // While commits fail, one loop retries and the others stop.
      if (this.loops.size > this.loopLimit) return;
      const batch = this.queue.splice(0, this.batchLimit);
      this.inFlight += batch.length;
      if (await this.commitBatch(batch)) await this.backoff();
      else if (this.gathersNext()) return;
    }
  }

  /**
   * Whether what a busy writer queued during its last commit waits to gather more (the loop ends, `schedule` sets the
   * gather timer) instead of being committed at once: with a journal, while the batch is not full, no reader waits
   * and the journal holds every waiting settlement (those of a failed append have responses waiting for the commit).
   */
  private gathersNext(): boolean {
    return (
      this.gatherMs > 0 &&
      !this.closed &&
      this.awaitingCommit === 0 &&
      this.barriers.length === 0 &&
      this.queue.length < this.batchLimit
    );
  }

  /**
   * One batch of a flush loop, counted in flight until it is committed, spooled, or put back in the queue after a
   * failure (in the same synchronous step, so `buffered` never counts it twice). True in the last case: the loop
   * then waits before it tries again.
   */
  private async commitBatch(batch: PendingSettlement[]): Promise<boolean> {
    let counted = batch.length;
    const uncount = (): void => {
      this.inFlight -= counted;
      counted = 0;
    };
    try {
      // The store is down and not due for a retry: the spool takes the batch without a failing round trip.
      const spoolNow = this.spool !== undefined && this.consecutiveFailures > 0 && this.clock.now() < this.retryAt;
      if (spoolNow && (await this.spoolBatch(batch, uncount))) return false;
      return await this.settleBatch(batch, uncount);
    } finally {
      uncount();
    }
  }

  /** `commitBatch`'s commit; `uncount` ends the batch's count in flight before it is finished or put back. */
  private async settleBatch(batch: PendingSettlement[], uncount: () => void): Promise<boolean> {
    const watchdog = this.watchSlowCommit(batch);
    try {
      await this.store.settle(
        batch.map((pending) => pending.settlement),
        journalLines(batch),
      );
      watchdog?.stop();
      uncount();
      this.consecutiveFailures = 0;
      this.batchLimit = this.maxBatch;
      this.counters.transactions++;
      this.counters.committed += batch.length;
      for (const pending of batch) this.finish(pending, true);
      if (this.spool !== undefined && this.spool.pending > 0) this.drainSpool();
      return false;
    } catch (error: unknown) {
      watchdog?.stop();
      this.counters.failedCommits++;
      this.consecutiveFailures++;
      this.logger?.error(
        { err: error, settlements: batch.length, attempt: this.consecutiveFailures },
        this.spool === undefined ? 'Settlement commit failed; retrying' : 'Settlement commit failed; spooling',
      );
      this.onError?.(error);
      this.retryAt = this.clock.now() + this.retryDelay();
      // A batch the watchdog spooled is durable already: a second copy would only be settled twice (harmlessly).
      if (watchdog?.spooled === true) return false;
      if (await this.spoolBatch(batch, uncount)) return false;
      uncount();
      this.requeueFailed(batch);
      return true;
    }
  }

  /**
   * With a spool, a timer that fires while `batch`'s commit runs longer than `spoolAfterMs`: it spools the batch and
   * every settlement queued behind it, then again every `spoolAfterMs` for those queued since, until stopped. The
   * commit goes on; a batch both spooled and committed is settled once (the drain finds its ids stored).
   */
  private watchSlowCommit(batch: PendingSettlement[]): { stop(): void; readonly spooled: boolean } | undefined {
    if (this.spool === undefined) return undefined;
    let timer: ClockTimer | undefined;
    let batchTaken = false;
    const state = {
      spooled: false,
      stop: () => {
        timer?.cancel();
        timer = undefined;
      },
    };
    const fire = (): void => {
      const queued = this.queue;
      this.queue = [];
      const withBatch = !batchTaken;
      batchTaken = true;
      const waiting = withBatch ? [...batch, ...queued] : queued;
      if (withBatch)
        this.logger?.warn({ afterMs: this.spoolAfterMs }, 'Settlement commit is slow; spooling what waits');
      timer = this.clock.setTimer(this.spoolAfterMs, fire);
      if (waiting.length === 0) return;
      void this.toSpool(waiting, 'the commit is slow').then((spooled) => {
        if (spooled && withBatch) state.spooled = true;
        if (!spooled) this.queue.unshift(...queued);
      });
    };
    timer = this.clock.setTimer(this.spoolAfterMs, fire);
    return state;
  }

  /**
   * A batch counted in flight to the spool (see `toSpool`); `uncount` ends its count once it is there, before it is
   * finished. False without a spool.
   */
  private async spoolBatch(batch: PendingSettlement[], uncount: () => void): Promise<boolean> {
    if (this.spool === undefined) return false;
    return this.toSpool(batch, 'the store failed', uncount);
  }

  /**
   * Appends `pending` to the spool and resolves each as durable (after `spooled`, when given); a drain is scheduled.
   * False (logged, nothing resolved) when the append fails: the caller keeps or drops them.
   */
  private async toSpool(pending: readonly PendingSettlement[], reason: string, spooled?: () => void): Promise<boolean> {
    try {
      await this.spool!.append(
        pending.map((each) => each.settlement),
        journalLines(pending),
      );
    } catch (error: unknown) {
      this.logger?.error({ err: error, settlements: pending.length, reason }, 'Could not spool settlements');
      return false;
    }
    spooled?.();
    this.counters.spooled += pending.length;
    // Debug only: during an outage every turn spools; the failed commits are logged already, once each.
    this.logger?.debug({ settlements: pending.length, reason }, 'Settlements spooled');
    for (const each of pending) this.finish(each, true);
    this.scheduleDrain();
    return true;
  }

  /** Tries the spool's settlements again after `retryMaxMs` (when no commit succeeds before that). */
  private scheduleDrain(): void {
    if (this.drainTimer !== undefined || this.closed) return;
    this.drainTimer = this.clock.setTimer(this.retryMaxMs, () => {
      this.drainTimer = undefined;
      this.drainSpool();
    });
  }

  /** Settles the spool's settlements into the store in the background, one drain at a time. */
  private drainSpool(): void {
    const spool = this.spool;
    if (spool === undefined || this.draining !== undefined || spool.pending === 0) return;
    this.draining = spool
      .drain((batch, encoded) => this.store.settle(batch, encoded), { batchSize: this.maxBatch, orphans: false })
      .then((result) => {
        if (result.settled > 0 || result.rejected > 0) {
          this.logger?.info({ ...result }, 'Spooled settlements settled into the store');
        }
      })
      .catch((error: unknown) => this.logger?.error({ err: error }, 'Could not drain the settlement spool'))
      .finally(() => {
        this.draining = undefined;
        if (spool.pending > 0) this.scheduleDrain();
      });
  }

  private retryDelay(): number {
    return Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** (this.consecutiveFailures - 1));
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
    this.finish(lone, false);
  }

  private backoff(): Promise<void> {
    if (this.abandon) return Promise.resolve();
    const delay = this.retryDelay();
    return new Promise((resolve) => {
      const retry = {
        timer: this.clock.setTimer(delay, () => retry.wake()),
        wake: (): void => {
          retry.timer.cancel();
          this.retryTimers.delete(retry);
          resolve();
        },
      };
      this.retryTimers.add(retry);
    });
  }

  /** At an abandoned close: what is still queued goes to the spool, or is dropped when there is none or it fails. */
  private async spoolOrDropQueued(): Promise<void> {
    const left = this.queue;
    if (left.length > 0 && this.spool !== undefined) {
      this.queue = [];
      this.inFlight += left.length;
      const uncount = (): void => {
        this.inFlight -= left.length;
      };
      if (await this.spoolBatch(left, uncount)) return;
      uncount();
      this.queue = left;
    }
    this.dropQueued();
  }

  private dropQueued(): void {
    const left = this.queue;
    this.queue = [];
    if (left.length === 0) return;
    this.counters.dropped += left.length;
    this.logger?.error({ settlements: left.length }, 'Settlements dropped: the store stayed unavailable at close');
    for (const pending of left) this.finish(pending, false);
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

/** The journal lines of `pending`, when every one of them was journaled; undefined otherwise. */
function journalLines(pending: readonly PendingSettlement[]): string[] | undefined {
  const lines: string[] = [];
  for (const each of pending) {
    if (each.line === undefined) return undefined;
    lines.push(each.line);
  }
  return lines;
}
