/**
 * Time as a dependency. Components that wait (the simulated replica, schedulers, limiters, batchers) take a `Clock`
 * so tests and capacity replays can run hours of traffic on a `VirtualClock` in milliseconds of wall time.
 */

/** A cancellable timer handle. */
export interface ClockTimer {
  cancel(): void;
}

/** Source of time and timers. */
export interface Clock {
  /** Milliseconds since the Unix epoch (fractional on a virtual clock). */
  now(): number;
  /** Calls `callback` after `delayMs` (≥ 0) milliseconds. */
  setTimer(delayMs: number, callback: () => void): ClockTimer;
}

/** The wall clock, backed by `Date.now` and `setTimeout`. */
export class RealClock implements Clock {
  now(): number {
    return Date.now();
  }

  setTimer(delayMs: number, callback: () => void): ClockTimer {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    return { cancel: () => clearTimeout(handle) };
  }
}

interface PendingTimer {
  at: number;
  sequence: number;
  callback: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to. Timers fire in time order (ties in creation order) as `advance` or
 * `runUntilIdle` passes their due time; timers created by callbacks fire in the same pass if they fall due.
 */
export class VirtualClock implements Clock {
  private current: number;
  private sequence = 0;
  // A binary min-heap keyed by (at, sequence): replays schedule millions of timers.
  private readonly heap: PendingTimer[] = [];

  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimer(delayMs: number, callback: () => void): ClockTimer {
    const timer: PendingTimer = {
      at: this.current + Math.max(0, delayMs),
      sequence: this.sequence++,
      callback,
      cancelled: false,
    };
    this.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Number of timers not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.heap.filter((timer) => !timer.cancelled).length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    this.advanceTo(this.current + ms);
  }

  /** Moves time to `targetMs`, firing every timer due at or before it. */
  advanceTo(targetMs: number): void {
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.at > targetMs) break;
      this.pop();
      if (next.cancelled) continue;
      this.current = Math.max(this.current, next.at);
      next.callback();
    }
    this.current = Math.max(this.current, targetMs);
  }

  /** Fires timers in order until none is left (or `limitMs` of virtual time has passed). Returns the final time. */
  runUntilIdle(limitMs = Number.POSITIVE_INFINITY): number {
    const deadline = this.current + limitMs;
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.at > deadline) break;
      this.advanceTo(next.at);
    }
    return this.current;
  }

  private push(timer: PendingTimer): void {
    const heap = this.heap;
    heap.push(timer);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!earlier(heap[index]!, heap[parent]!)) break;
      [heap[index], heap[parent]] = [heap[parent]!, heap[index]!];
      index = parent;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    let index = 0;
    for (;;) {
      const left = index * 2 + 1;
      const right = left + 1;
      let smallest = index;
      if (left < heap.length && earlier(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && earlier(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === index) break;
      [heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!];
      index = smallest;
    }
  }
}

function earlier(a: PendingTimer, b: PendingTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.sequence < b.sequence);
}
