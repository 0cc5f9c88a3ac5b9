import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { FifoScheduler } from './fifo-scheduler.js';
import type { SchedulerJob, SchedulerTicket } from './scheduler.js';

let counter = 0;
function job(tenantId: string, extra: Partial<SchedulerJob> = {}): SchedulerJob {
  return {
    id: `job-${counter++}`,
    tenantId,
    serviceClass: 'default',
    inputTokens: 100,
    maxOutputTokens: 100,
    ...extra,
  };
}

describe('FifoScheduler', () => {
  it('dispatches in arrival order whatever the class, up to the whole capacity', () => {
    const clock = new VirtualClock();
    const scheduler = new FifoScheduler({ clock, capacity: { sequences: 2, tokens: 10_000 } });
    const order: string[] = [];
    const onDispatch = (ticket: SchedulerTicket) => order.push(ticket.job.id);
    const running = [scheduler.submit(job('a', { id: 'r1', serviceClass: 'flex' }), { onDispatch })];
    running.push(scheduler.submit(job('a', { id: 'r2', serviceClass: 'batch' }), { onDispatch }));
    expect(running.map((result) => result.outcome)).toEqual(['dispatched', 'dispatched']);
    for (const [id, serviceClass] of [
      ['q1', 'batch'],
      ['q2', 'priority'],
      ['q3', 'flex'],
    ] as const) {
      expect(scheduler.submit(job('b', { id, serviceClass }), { onDispatch }).outcome).toBe('queued');
    }
    for (const result of running) {
      if (result.outcome !== 'dispatched') throw new Error('expected a dispatch');
      clock.advance(100);
      scheduler.complete(result.ticket, { inputTokens: 100, outputTokens: 100 });
    }
    expect(order).toEqual(['q1', 'q2']);
    expect(scheduler.stats()).toMatchObject({
      inFlight: { sequences: 2, tokens: 400 },
      classes: { flex: { queued: 1 }, batch: { dispatched: 2, completed: 1 } },
    });
    expect(scheduler.takeWaitSamples()).toMatchObject({ batch: [0, 100], priority: [200], flex: [0] });
  });

  it('blocks behind a head that does not fit and refuses only what can never fit', () => {
    const clock = new VirtualClock();
    const scheduler = new FifoScheduler({ clock, capacity: { sequences: 10, tokens: 1_000 } });
    const first = scheduler.submit(job('a', { inputTokens: 600, maxOutputTokens: 0 }));
    expect(scheduler.submit(job('a', { inputTokens: 500, maxOutputTokens: 0 })).outcome).toBe('queued');
    expect(scheduler.submit(job('a', { inputTokens: 10, maxOutputTokens: 0 })).outcome).toBe('queued');
    expect(scheduler.submit(job('a', { inputTokens: 1_001, maxOutputTokens: 0 }))).toMatchObject({
      outcome: 'refused',
      refusal: { reason: 'too_large' },
    });
    if (first.outcome !== 'dispatched') throw new Error('expected a dispatch');
    scheduler.complete(first.ticket, { inputTokens: 600, outputTokens: 0 });
    expect(scheduler.stats().inFlight).toEqual({ sequences: 2, tokens: 510 });
  });
});
