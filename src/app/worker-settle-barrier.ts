/**
 * Read-your-writes for billing across the workers of one embedded gateway (`server.workers` > 1 on one SQLite file).
 *
 * Every worker journals its settlements and commits them in the background (see `SettlementJournal`), so a request's
 * response goes out before its row is in the store. One worker's billing read (usage, balances, invoices) waits for
 * its own writer (`SettlementWriter.flushed`), but the client's previous request may have been served by another
 * worker. So a worker's read first asks the primary for a settle round: the primary asks every live worker to flush,
 * and answers once each has (or has exited). Rounds are rare (billing reads and wallet refusals), never per request.
 *
 *   worker W ── flush {id} ──▶ primary ── flush-request {round} ──▶ every worker ── flush-done {round} ──▶ primary
 *   worker W ◀── flushed-all {id} ── primary, once every worker of the round answered or exited
 */

const FLUSH = 'tollgate:flush';
const FLUSH_REQUEST = 'tollgate:flush-request';
const FLUSH_DONE = 'tollgate:flush-done';
const FLUSHED_ALL = 'tollgate:flushed-all';

/** A message of the settle round protocol (see the module comment). */
export type SettleRoundMessage =
  | { type: typeof FLUSH; id: number }
  | { type: typeof FLUSH_REQUEST; round: string }
  | { type: typeof FLUSH_DONE; round: string }
  | { type: typeof FLUSHED_ALL; id: number };

function settleRoundMessage(message: unknown): SettleRoundMessage | undefined {
  const type = (message as { type?: unknown } | null)?.type;
  return type === FLUSH || type === FLUSH_REQUEST || type === FLUSH_DONE || type === FLUSHED_ALL
    ? (message as SettleRoundMessage)
    : undefined;
}

/** A worker as the primary sees it. */
export interface RoundWorker {
  id: number;
  send(message: SettleRoundMessage): void;
}

/** The primary's side: runs settle rounds for the workers. */
export class SettleRoundCoordinator {
  /** Rounds under way: who asked, under which id, and the workers not done yet. */
  private readonly rounds = new Map<string, { requester: RoundWorker; id: number; waiting: Set<number> }>();

  /** `workers`: the live workers now (a round waits for these). */
  constructor(private readonly workers: () => Iterable<RoundWorker>) {}

  /** Handles a worker's message when it belongs to the protocol; returns false otherwise. */
  onMessage(from: RoundWorker, message: unknown): boolean {
    const parsed = settleRoundMessage(message);
    if (parsed === undefined) return false;
    if (parsed.type === FLUSH) {
      const round = `${from.id}:${parsed.id}`;
      const live = [...this.workers()];
      this.rounds.set(round, { requester: from, id: parsed.id, waiting: new Set(live.map((worker) => worker.id)) });
      for (const worker of live) worker.send({ type: FLUSH_REQUEST, round });
      this.finishIfDone(round);
    } else if (parsed.type === FLUSH_DONE) {
      this.rounds.get(parsed.round)?.waiting.delete(from.id);
      this.finishIfDone(parsed.round);
    }
    return true;
  }

  /** A worker exited: rounds stop waiting for it, and its own rounds are dropped. */
  onExit(workerId: number): void {
    for (const [round, state] of this.rounds) {
      if (state.requester.id === workerId) {
        this.rounds.delete(round);
        continue;
      }
      state.waiting.delete(workerId);
      this.finishIfDone(round);
    }
  }

  private finishIfDone(round: string): void {
    const state = this.rounds.get(round);
    if (state === undefined || state.waiting.size > 0) return;
    this.rounds.delete(round);
    state.requester.send({ type: FLUSHED_ALL, id: state.id });
  }
}

/** How a worker talks to the primary (`process.send` and `process.on('message')` in a cluster worker). */
export interface PrimaryChannel {
  send(message: SettleRoundMessage): void;
  onMessage(handler: (message: unknown) => void): void;
}

/** Options of `WorkerSettleBarrier`. */
export interface WorkerSettleBarrierOptions {
  /**
   * Longest wait for a round, ms; past it the read goes on with what is committed (a worker that hangs must not hang
   * every billing read). Default 5000.
   */
  timeoutMs?: number;
  /** Called when a round timed out. */
  onTimeout?: () => void;
}

/** A worker's side: answers the primary's flush requests, and runs a round for its own reads. */
export class WorkerSettleBarrier {
  private nextId = 1;
  private readonly waiting = new Map<number, () => void>();
  private readonly timeoutMs: number;
  private readonly onTimeout: (() => void) | undefined;

  /** `localSettled`: resolves once this worker's own finished requests are committed (`SettlementWriter.flushed`). */
  constructor(
    private readonly localSettled: () => Promise<void>,
    private readonly channel: PrimaryChannel,
    options: WorkerSettleBarrierOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.onTimeout = options.onTimeout;
    channel.onMessage((message) => {
      const parsed = settleRoundMessage(message);
      if (parsed?.type === FLUSH_REQUEST) {
        const round = parsed.round;
        // flushed() never rejects; the primary hears back whatever happened.
        void this.localSettled().then(() => this.channel.send({ type: FLUSH_DONE, round }));
      } else if (parsed?.type === FLUSHED_ALL) {
        this.waiting.get(parsed.id)?.();
      }
    });
  }

  /** Resolves once every request that ended in any worker before the call is committed (or after the timeout). */
  readonly settled = (): Promise<void> => {
    const id = this.nextId++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        this.onTimeout?.();
        resolve();
      }, this.timeoutMs);
      timer.unref();
      this.waiting.set(id, () => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve();
      });
      this.channel.send({ type: FLUSH, id });
    });
  };
}
