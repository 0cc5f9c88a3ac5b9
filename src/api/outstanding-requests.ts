/**
 * The API requests whose work is not over: their handler still runs, or their request-log record is still on its
 * way to the writer. Shutdown waits for none to be left before it closes the writer, so a request cut at the end of
 * the grace period is billed and logged like any other.
 *
 * A plain counter: the HTTP server's own close says when the connections are gone, not when what ran on them has
 * been recorded (a cut stream's record follows its socket's close by a few turns, or by a worker thread's token
 * count).
 */
export class OutstandingRequests {
  private count = 0;
  private readonly waiters: Array<() => void> = [];

  /** Requests not over yet. */
  get size(): number {
    return this.count;
  }

  enter(): void {
    this.count += 1;
  }

  leave(): void {
    this.count -= 1;
    if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
  }

  /** Counts `work` (a record on its way) as outstanding until it settles, whichever way. */
  hold(work: Promise<unknown>): void {
    this.enter();
    const leave = () => this.leave();
    work.then(leave, leave);
  }

  /** Resolves once nothing is outstanding. */
  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
