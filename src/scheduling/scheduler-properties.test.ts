import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { FifoScheduler } from './fifo-scheduler.js';
import type { Scheduler, SchedulerTicket } from './scheduler.js';
import { createSeededRandom } from './seeded-random.js';
import { serviceClasses } from './service-class.js';
import { TieredScheduler } from './tiered-scheduler.js';

type Operation =
  | { kind: 'submit'; tenant: number; serviceClass: number; input: number; output: number; weight: number }
  | { kind: 'complete'; pick: number; output: number }
  | { kind: 'cancel'; pick: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'capacity'; sequences: number; tokens: number };

const operation: fc.Arbitrary<Operation> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('submit' as const),
      tenant: fc.integer({ min: 0, max: 3 }),
      serviceClass: fc.integer({ min: 0, max: 3 }),
      input: fc.integer({ min: 0, max: 600 }),
      output: fc.integer({ min: 0, max: 600 }),
      weight: fc.integer({ min: 1, max: 3 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('complete' as const),
      pick: fc.nat(),
      output: fc.integer({ min: 0, max: 600 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('capacity' as const),
      sequences: fc.integer({ min: 1, max: 8 }),
      tokens: fc.integer({ min: 400, max: 4_000 }),
    }),
  },
);

/**
 * Replays `operations` and checks, with bookkeeping independent of the scheduler, that no dispatch takes the pool
 * over its capacity, that the scheduler's counters agree with the tickets, and that after a drain every admitted job
 * ended completed, cancelled or refused.
 */
function replay(create: (clock: VirtualClock) => Scheduler, operations: Operation[]): void {
  const clock = new VirtualClock();
  const scheduler = create(clock);
  const admitted: SchedulerTicket[] = [];
  let refusedAtOnce = 0;
  let submitted = 0;

  const checkDispatch = (ticket: SchedulerTicket) => {
    expect(ticket.state).toBe('running');
    const running = admitted.filter((other) => other.state === 'running');
    // The dispatched ticket is not in `admitted` yet when `submit` dispatches it at once.
    const all = running.includes(ticket) ? running : [...running, ticket];
    const tokens = all.reduce((sum, other) => sum + other.job.inputTokens + other.job.maxOutputTokens, 0);
    expect(all.length).toBeLessThanOrEqual(scheduler.capacity.sequences);
    expect(tokens).toBeLessThanOrEqual(scheduler.capacity.tokens);
  };
  const checkCounters = () => {
    const stats = scheduler.stats();
    const running = admitted.filter((ticket) => ticket.state === 'running');
    expect(stats.inFlight.sequences).toBe(running.length);
    expect(stats.inFlight.tokens).toBe(
      running.reduce((sum, ticket) => sum + ticket.job.inputTokens + ticket.job.maxOutputTokens, 0),
    );
    for (const serviceClass of serviceClasses) {
      const queued = admitted.filter((ticket) => ticket.state === 'queued' && ticket.job.serviceClass === serviceClass);
      expect(stats.classes[serviceClass].queued).toBe(queued.length);
    }
  };

  for (const step of operations) {
    switch (step.kind) {
      case 'submit': {
        submitted++;
        const result = scheduler.submit(
          {
            id: `job-${submitted}`,
            tenantId: `tenant-${step.tenant}`,
            weight: step.weight,
            serviceClass: serviceClasses[step.serviceClass]!,
            inputTokens: step.input,
            maxOutputTokens: step.output,
          },
          { onDispatch: checkDispatch },
        );
        if (result.outcome === 'refused') {
          refusedAtOnce++;
          expect(result.refusal.retryAfterMs).toBeGreaterThanOrEqual(0);
        } else {
          if (result.outcome === 'dispatched') checkDispatch(result.ticket);
          admitted.push(result.ticket);
        }
        break;
      }
      case 'complete': {
        const running = admitted.filter((ticket) => ticket.state === 'running');
        const ticket = running[step.pick % Math.max(1, running.length)];
        if (ticket !== undefined) {
          const output = Math.min(step.output, ticket.job.maxOutputTokens);
          expect(scheduler.complete(ticket, { inputTokens: ticket.job.inputTokens, outputTokens: output })).toBe(true);
        }
        break;
      }
      case 'cancel': {
        const live = admitted.filter((ticket) => ticket.state === 'running' || ticket.state === 'queued');
        const ticket = live[step.pick % Math.max(1, live.length)];
        if (ticket !== undefined) expect(scheduler.cancel(ticket)).toBe(true);
        break;
      }
      case 'advance':
        clock.advance(step.ms);
        break;
      case 'capacity':
        scheduler.setCapacity({ sequences: step.sequences, tokens: step.tokens });
        break;
      default:
        throw new Error('unknown operation');
    }
    checkCounters();
  }

  // Drain: a pool big enough for anything, then complete until nothing runs or waits.
  scheduler.setCapacity({ sequences: 1_000, tokens: 1_000_000 });
  for (let round = 0; round < 1_000; round++) {
    const running = admitted.filter((ticket) => ticket.state === 'running');
    if (running.length === 0) break;
    for (const ticket of running) scheduler.complete(ticket, { inputTokens: 0, outputTokens: 0 });
  }
  checkCounters();
  const states = admitted.map((ticket) => ticket.state);
  expect(states.every((state) => state === 'completed' || state === 'cancelled' || state === 'refused')).toBe(true);

  const stats = scheduler.stats();
  let completed = 0;
  let cancelled = 0;
  let refused = 0;
  for (const serviceClass of serviceClasses) {
    const counters = stats.classes[serviceClass];
    completed += counters.completed;
    cancelled += counters.cancelled;
    refused += Object.values(counters.refused).reduce((sum, count) => sum + count, 0);
  }
  expect(completed).toBe(states.filter((state) => state === 'completed').length);
  expect(cancelled).toBe(states.filter((state) => state === 'cancelled').length);
  expect(refused).toBe(refusedAtOnce + states.filter((state) => state === 'refused').length);
  expect(admitted.length + refusedAtOnce).toBe(submitted);
}

describe('schedulers under random operations', () => {
  it('TieredScheduler never exceeds capacity and never loses a job', () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 120 }), fc.integer(), (operations, seed) => {
        replay(
          (clock) =>
            new TieredScheduler({
              clock,
              capacity: { sequences: 4, tokens: 2_000 },
              random: createSeededRandom(seed),
              initialHoldMs: 500,
            }),
          operations,
        );
      }),
      { numRuns: 300 },
    );
  });

  it('FifoScheduler never exceeds capacity and never loses a job', () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 120 }), (operations) => {
        replay((clock) => new FifoScheduler({ clock, capacity: { sequences: 4, tokens: 2_000 } }), operations);
      }),
      { numRuns: 200 },
    );
  });
});
