/**
 * The baseline the `TieredScheduler` is measured against: one first-come-first-served queue over the same capacity.
 * No classes, no headroom, no fair share, no queue-wait limit, no shedding; the only refusal is a job that can never
 * fit the pool (`too_large`). The head of the queue blocks the jobs behind it, as in a plain engine queue.
 */
import type { Clock } from '../clock/clock.js';
import { CapacityLedger } from './capacity-ledger.js';
import { JobTicket, ownedTicket, validateJob } from './job-ticket.js';
import type {
  ActualUsage,
  PoolCapacity,
  RefusalReason,
  Scheduler,
  SchedulerJob,
  SchedulerRefusal,
  SchedulerStats,
  SchedulerTicket,
  SubmitHandlers,
  SubmitResult,
} from './scheduler.js';
import { SchedulerCounters } from './scheduler-counters.js';
import type { PerServiceClass, ServiceClass } from './service-class.js';

/** Options of a `FifoScheduler`. */
export interface FifoSchedulerOptions {
  /** Time source. */
  clock: Clock;
  /** Initial capacity of the pool. */
  capacity: PoolCapacity;
  /** Queue-wait samples kept per class between two `takeWaitSamples` calls. Default 4096. */
  waitSampleLimit?: number;
}

/** One FIFO queue over one pool. */
export class FifoScheduler implements Scheduler {
  private readonly clock: Clock;
  private readonly ledger: CapacityLedger;
  private readonly counters: SchedulerCounters;
  private queue: JobTicket[] = [];
  private head = 0;
  private sequence = 0;
  private dispatching = false;
  private dispatchAgain = false;
  private closed = false;

  constructor(options: FifoSchedulerOptions) {
    this.clock = options.clock;
    this.ledger = new CapacityLedger(options.capacity);
    this.counters = new SchedulerCounters(options.waitSampleLimit ?? 4_096);
  }

  get capacity(): Readonly<PoolCapacity> {
    return this.ledger.capacity;
  }

  submit(job: SchedulerJob, handlers?: SubmitHandlers): SubmitResult {
    validateJob(job);
    const ticket = new JobTicket(this, { ...job }, this.clock.now(), this.sequence++, handlers);
    if (this.closed) return { outcome: 'refused', refusal: this.refusal(job.serviceClass, 'closed') };
    if (!this.ledger.canEverFit(ticket.reservedTokens, 1)) {
      return { outcome: 'refused', refusal: this.refusal(job.serviceClass, 'too_large') };
    }
    if (this.waiting() === 0 && this.ledger.fits(ticket.reservedTokens, 1)) {
      this.start(ticket);
      return { outcome: 'dispatched', ticket };
    }
    this.queue.push(ticket);
    const counters = this.counters.classes[job.serviceClass];
    counters.queued++;
    counters.queuedTokens += ticket.reservedTokens;
    this.dispatchQueued();
    return { outcome: 'queued', ticket };
  }

  complete(ticket: SchedulerTicket, _actual: ActualUsage): boolean {
    const owned = ownedTicket(this, ticket);
    if (owned === undefined || owned.state !== 'running') return false;
    this.release(owned, 'completed');
    this.counters.classes[owned.job.serviceClass].completed++;
    this.dispatchQueued();
    return true;
  }

  cancel(ticket: SchedulerTicket): boolean {
    const owned = ownedTicket(this, ticket);
    if (owned === undefined) return false;
    if (owned.state === 'queued') {
      // Left in the array as a hole that the dispatch loop skips.
      this.unqueue(owned);
      owned.state = 'cancelled';
      owned.settle({ outcome: 'cancelled' });
    } else if (owned.state === 'running') {
      this.release(owned, 'cancelled');
    } else {
      return false;
    }
    this.counters.classes[owned.job.serviceClass].cancelled++;
    this.dispatchQueued();
    return true;
  }

  setCapacity(capacity: Partial<PoolCapacity>): void {
    this.ledger.setCapacity(capacity);
    for (let index = this.head; index < this.queue.length; index++) {
      const ticket = this.queue[index]!;
      if (ticket.state === 'queued' && !this.ledger.canEverFit(ticket.reservedTokens, 1)) {
        this.refuseQueued(ticket, 'too_large');
      }
    }
    this.dispatchQueued();
  }

  stats(): SchedulerStats {
    return this.counters.snapshot(this.ledger);
  }

  takeWaitSamples(): PerServiceClass<number[]> {
    return this.counters.takeWaitSamples();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let index = this.head; index < this.queue.length; index++) {
      const ticket = this.queue[index]!;
      if (ticket.state === 'queued') this.refuseQueued(ticket, 'closed');
    }
  }

  private waiting(): number {
    const classes = this.counters.classes;
    return classes.priority.queued + classes.default.queued + classes.flex.queued + classes.batch.queued;
  }

  private dispatchQueued(): void {
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    this.dispatching = true;
    try {
      do {
        this.dispatchAgain = false;
        while (this.head < this.queue.length) {
          const next = this.queue[this.head]!;
          if (next.state !== 'queued') {
            this.head++;
            continue;
          }
          if (!this.ledger.fits(next.reservedTokens, 1)) break;
          this.head++;
          this.unqueue(next);
          this.start(next);
          next.handlers?.onDispatch?.(next);
        }
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
      } while (this.dispatchAgain);
    } finally {
      this.dispatching = false;
    }
  }

  private start(ticket: JobTicket): void {
    const now = this.clock.now();
    this.ledger.take(ticket.reservedTokens);
    ticket.state = 'running';
    ticket.dispatchedAt = now;
    const counters = this.counters.classes[ticket.job.serviceClass];
    counters.running++;
    counters.dispatched++;
    this.counters.recordWait(ticket.job.serviceClass, now - ticket.submittedAt);
    ticket.settle({ outcome: 'dispatched' });
  }

  private release(ticket: JobTicket, state: 'completed' | 'cancelled'): void {
    this.ledger.release(ticket.reservedTokens);
    ticket.state = state;
    this.counters.classes[ticket.job.serviceClass].running--;
  }

  private unqueue(ticket: JobTicket): void {
    const counters = this.counters.classes[ticket.job.serviceClass];
    counters.queued--;
    counters.queuedTokens -= ticket.reservedTokens;
  }

  private refuseQueued(ticket: JobTicket, reason: RefusalReason): void {
    this.unqueue(ticket);
    const refusal = this.refusal(ticket.job.serviceClass, reason);
    ticket.state = 'refused';
    ticket.refusal = refusal;
    ticket.settle({ outcome: 'refused', refusal });
    ticket.handlers?.onRefuse?.(ticket, refusal);
  }

  private refusal(serviceClass: ServiceClass, reason: RefusalReason): SchedulerRefusal {
    this.counters.classes[serviceClass].refused[reason]++;
    return { reason, retryAfterMs: 0, serviceClass, predictedWaitMs: 0 };
  }
}
