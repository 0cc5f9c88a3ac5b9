import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Settlement, StreamCheckpoint } from './ledger-store.js';

/**
 * A request to the settle thread, answered in order: commit one batch in one transaction, sent as `lines` (the
 * settlements' `settlementToJson` lines joined by newlines) when the caller had them, else as the objects in
 * `batch`; or save stream checkpoints.
 */
export type SettleThreadRequest =
  | { id: number; batch: readonly Settlement[] }
  | { id: number; lines: string }
  | { id: number; checkpoints: readonly StreamCheckpoint[] };

/** The settle thread's answer to one request: `error` is set when the transaction failed (and rolled back). */
export interface SettleThreadReply {
  id: number;
  error?: string;
}

/** What a thread of the worker script is started with. */
export interface SettleThreadData {
  /** The SQLite file. */
  path: string;
  /** `settle`: commits the batches it is sent; `checkpoint`: copies the WAL into the database file, periodically. */
  role: 'settle' | 'checkpoint';
}

interface PendingCommit {
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Runs the SQLite settlement transactions (request-log rows, usage events, rollups, charges: the whole group commit)
 * on a worker thread with its own connection to the same file, so the event loop that serves requests never waits
 * for SQLite's inserts and page writes — they run on the other core. Only the transaction moves; the caller still
 * awaits its commit before answering (a completed request is durable before its last byte).
 *
 * WAL checkpoints run on a third thread and connection, the checkpoint thread: a passive checkpoint every
 * `CHECKPOINT_INTERVAL_MS` copies what every connection committed into the database file and syncs it. That takes
 * ~10 ms here (most of it the fsync), and on the settle thread every request finishing meanwhile waited for it:
 * at 1,000 req/s one checkpoint a second put ~1% of responses 10 ms late, the whole p99. A passive checkpoint
 * neither waits for nor blocks writers, so commits go on while it runs. The settle connection keeps its automatic
 * checkpoint (`WAL_AUTOCHECKPOINT_PAGES`) as a bound on the WAL should the checkpoint thread stop; normally the WAL
 * never grows that far between two passive checkpoints.
 *
 * WAL mode lets the two connections work side by side: readers on the main connection never block, and a write on
 * the main connection (a top-up, a key, a batch line) that meets a settlement transaction retries on timers until it
 * ends (`sqlite-busy-wait.ts`), so the event loop serves requests meanwhile. This thread's own connection waits in
 * SQLite's busy handler: it serves nothing else.
 *
 * When the thread dies (it should not), `alive` turns false, every commit in flight is rejected (the settlement
 * writer retries them: settlement is idempotent by request id) and the store settles on its own connection again.
 */
export class SqliteSettleThread {
  private readonly worker: Worker;
  private readonly checkpointer: Worker;
  private readonly pending = new Map<number, PendingCommit>();
  private nextId = 1;
  private stopped = false;
  private deadReason: Error | undefined;

  private constructor(scriptUrl: URL, path: string) {
    this.worker = new Worker(scriptUrl, { workerData: { path, role: 'settle' } satisfies SettleThreadData });
    // Idle or not, the checkpoint thread never keeps the process alive. Should it die, the settle connection's
    // automatic checkpoint takes over (see the class comment): the process only warns.
    this.checkpointer = new Worker(scriptUrl, { workerData: { path, role: 'checkpoint' } satisfies SettleThreadData });
    this.checkpointer.unref();
    this.checkpointer.on('error', (error: Error) => {
      process.emitWarning(
        `The SQLite checkpoint thread failed (${error.message}); the settle connection's automatic checkpoint takes over`,
      );
    });
    // Idle, the thread must not keep the process alive; `settle` refs it while commits are in flight.
    this.worker.unref();
    this.worker.on('message', (reply: SettleThreadReply) => this.onReply(reply));
    this.worker.on('error', (error: Error) => this.die(error));
    this.worker.on('exit', (code) => this.die(new Error(`The SQLite settle thread exited (code ${code})`)));
  }

  /**
   * Starts a settle thread for the SQLite file at `path`, or returns undefined when the worker script is not
   * available (sources run by the test runner before `npm run build`): the store then settles on its own thread.
   */
  static start(path: string): SqliteSettleThread | undefined {
    const scriptUrl = settleWorkerScript();
    return scriptUrl === undefined ? undefined : new SqliteSettleThread(scriptUrl, path);
  }

  /** False once the thread died or was closed: settle elsewhere. */
  get alive(): boolean {
    return this.deadReason === undefined && !this.stopped;
  }

  /**
   * Commits `batch` in one transaction on the thread; rejects when the transaction failed. With `encoded` (the batch's
   * `settlementToJson` lines, see `LedgerStore.settle`) the thread is sent one string, which it parses, instead of
   * a structured clone of the objects: for the serving thread that is ~0.4 µs a settlement instead of ~4.
   */
  settle(batch: readonly Settlement[], encoded?: readonly string[]): Promise<void> {
    if (encoded !== undefined && encoded.length !== batch.length) {
      // A caller's bug: the lines are what would be committed, so they must not silently differ from the batch.
      return Promise.reject(new RangeError(`${encoded.length} journal lines for a batch of ${batch.length}`));
    }
    const id = this.nextId++;
    return this.send(encoded === undefined ? { id, batch } : { id, lines: encoded.join('\n') });
  }

  /**
   * Saves stream checkpoints on the thread, after the settlements sent before them. Keeps the serving thread's own
   * connection from writing while the thread commits: it would wait for the commit (on timers, see
   * `sqlite-busy-wait.ts`) several times a second per stream.
   */
  saveCheckpoints(checkpoints: readonly StreamCheckpoint[]): Promise<void> {
    return this.send({ id: this.nextId++, checkpoints });
  }

  private send(request: SettleThreadRequest): Promise<void> {
    if (!this.alive) return Promise.reject(this.deadReason ?? new Error('The SQLite settle thread is closed'));
    return new Promise<void>((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(request.id, { resolve, reject });
      this.worker.postMessage(request);
    });
  }

  /** Waits for the commits in flight (normally none: the settlement writer closes first), then stops the thread. */
  async close(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    while (this.pending.size > 0 && this.deadReason === undefined) {
      await new Promise<void>((resolve) => setTimeout(resolve, 5));
    }
    await Promise.all([this.worker.terminate(), this.checkpointer.terminate()]);
  }

  private onReply(reply: SettleThreadReply): void {
    const commit = this.pending.get(reply.id);
    if (commit === undefined) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.worker.unref();
    if (reply.error === undefined) commit.resolve();
    else commit.reject(new Error(reply.error));
  }

  private die(reason: Error): void {
    if (this.deadReason !== undefined) return;
    this.deadReason = reason;
    const inFlight = [...this.pending.values()];
    this.pending.clear();
    for (const commit of inFlight) commit.reject(reason);
  }
}

/**
 * The compiled worker script beside this module. Under the test runner this module is the TypeScript source, and
 * the worker (a plain Node thread, which cannot load TypeScript) comes from `dist/`, which `npm test` builds first.
 */
function settleWorkerScript(): URL | undefined {
  const here = fileURLToPath(import.meta.url);
  const script = here.endsWith('.ts')
    ? here.replace(/\/src\/store\/[^/]+\.ts$/, '/dist/src/store/sqlite-settle-worker.js')
    : here.replace(/[^/]+\.js$/, 'sqlite-settle-worker.js');
  return existsSync(script) ? pathToFileURL(script) : undefined;
}
