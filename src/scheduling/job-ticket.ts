/** The ticket both schedulers hand out, with its bookkeeping. */
import type { ClockTimer } from '../clock/clock.js';
import type {
  SchedulerJob,
  SchedulerRefusal,
  SchedulerTicket,
  SubmitHandlers,
  TicketOutcome,
  TicketState,
} from './scheduler.js';

/** A ticket as the scheduler that issued it sees it. */
export class JobTicket implements SchedulerTicket {
  state: TicketState = 'queued';
  dispatchedAt: number | undefined;
  refusal: SchedulerRefusal | undefined;
  /** Prompt + max output: what the ticket holds of the pool's tokens while running. */
  readonly reservedTokens: number;
  /** Plan weight (1 when the job gave none). */
  readonly weight: number;
  /** Fair-share charge taken at dispatch, in virtual tokens (cost / weight). */
  chargedVirtual = 0;
  overstayTimer: ClockTimer | undefined;
  private outcome: TicketOutcome | undefined;
  private waiters: ((outcome: TicketOutcome) => void)[] | undefined;

  constructor(
    readonly owner: object,
    readonly job: Readonly<SchedulerJob>,
    readonly submittedAt: number,
    /** Submission order, for stable tie-breaking. */
    readonly sequence: number,
    readonly handlers: SubmitHandlers | undefined,
  ) {
    this.reservedTokens = job.inputTokens + job.maxOutputTokens;
    this.weight = job.weight ?? 1;
  }

  settled(): Promise<TicketOutcome> {
    if (this.outcome !== undefined) return Promise.resolve(this.outcome);
    return new Promise((resolve) => {
      this.waiters ??= [];
      this.waiters.push(resolve);
    });
  }

  /** Records how the ticket left the queue and wakes `settled()` waiters. */
  settle(outcome: TicketOutcome): void {
    if (this.outcome !== undefined) return;
    this.outcome = outcome;
    this.overstayTimer?.cancel();
    this.overstayTimer = undefined;
    const waiters = this.waiters;
    this.waiters = undefined;
    for (const resolve of waiters ?? []) resolve(outcome);
  }
}

/** Throws `RangeError` unless the job's numbers are usable. */
export function validateJob(job: SchedulerJob): void {
  for (const [name, value] of [
    ['inputTokens', job.inputTokens],
    ['maxOutputTokens', job.maxOutputTokens],
  ] as const) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be an integer ≥ 0, got ${value}`);
  }
  const weight = job.weight ?? 1;
  if (!Number.isFinite(weight) || weight <= 0)
    throw new RangeError(`weight must be a finite number > 0, got ${weight}`);
}

/** The ticket as a `JobTicket` when `owner` issued it; undefined for a foreign object. */
export function ownedTicket(owner: object, ticket: SchedulerTicket): JobTicket | undefined {
  return ticket instanceof JobTicket && ticket.owner === owner ? ticket : undefined;
}
