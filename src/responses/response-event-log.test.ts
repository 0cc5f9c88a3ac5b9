import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { responsesEvent } from '../api/responses/responses-stream-sink.js';
import { isFinalFrame, ResponseEventLog } from './response-event-log.js';
import type { ResponseStore, StoredResponseEvent } from './response-store.js';

const logger = pino({ level: 'silent' });

/** A store whose appends the test releases one at a time (`release`), or fail (`failNext`). */
function slowStore() {
  const stored: StoredResponseEvent[][] = [];
  const waiting: Array<() => void> = [];
  let failNext = false;
  const store = {
    appendResponseEvents: (_id: string, events: readonly StoredResponseEvent[]) =>
      new Promise<void>((resolve, reject) => {
        waiting.push(() => {
          if (failNext) {
            failNext = false;
            reject(new Error('store down'));
            return;
          }
          stored.push([...events]);
          resolve();
        });
      }),
  } as unknown as ResponseStore;
  return {
    store,
    stored,
    release: async () => {
      for (let tries = 0; waiting.length === 0 && tries < 100; tries++) await new Promise((r) => setTimeout(r, 5));
      waiting.shift()?.();
      await new Promise((resolve) => setImmediate(resolve));
    },
    failNext: () => {
      failNext = true;
    },
  };
}

const frames = (from: number, count: number) =>
  Array.from({ length: count }, (_, index) =>
    responsesEvent('response.output_text.delta', { delta: `d${from + index}` }, from + index),
  );

describe('ResponseEventLog', () => {
  it('stores the frames written to it in batches, in order, and wakes its followers after each', async () => {
    const { store, stored, release } = slowStore();
    let woken = 0;
    const log = new ResponseEventLog({
      store,
      responseId: 'resp_1',
      logger,
      onStored: () => woken++,
      dropped: () => false,
      flushMs: 1,
    });
    // Two frames in one write, then one more: split and numbered from their own data.
    expect(log.write(frames(1, 2).join(''))).toBeUndefined();
    await release();
    expect(log.write(frames(3, 1).join(''))).toBeUndefined();
    const drained = log.drain();
    await release();
    await drained;
    expect(stored.flat().map((event) => event.sequenceNumber)).toEqual([1, 2, 3]);
    expect(stored.flat().map((event) => event.frame)).toEqual(frames(1, 3));
    expect(woken).toBe(2);
    expect(log.closed).toBe(false);
  });

  it('pushes back on the writer while 256 frames wait for the store', async () => {
    const { store, stored, release } = slowStore();
    const log = new ResponseEventLog({ store, responseId: 'r', logger, onStored: () => {}, dropped: () => false });
    for (const frame of frames(0, 255)) expect(log.write(frame)).toBeUndefined();
    const pushedBack = log.write(frames(255, 1)[0]!);
    expect(pushedBack).toBeInstanceOf(Promise);
    let settled = false;
    void pushedBack!.then(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    await release();
    await pushedBack;
    expect(stored[0]).toHaveLength(256);
  });

  it('drops what is written once told to, and goes on after a batch the store refused', async () => {
    const { store, stored, release, failNext } = slowStore();
    let dropped = false;
    let woken = 0;
    const log = new ResponseEventLog({
      store,
      responseId: 'r',
      logger,
      onStored: () => woken++,
      dropped: () => dropped,
      flushMs: 1,
    });
    log.write(frames(0, 1)[0]!);
    failNext();
    await release();
    log.write(frames(1, 1)[0]!);
    dropped = true;
    log.write(frames(2, 1)[0]!);
    const drained = log.drain();
    await release();
    await drained;
    expect(stored.flat().map((event) => event.sequenceNumber)).toEqual([1]);
    // Followers are woken after a failed batch too: they read on, past the missing events.
    expect(woken).toBe(2);
  });

  it('knows the last event of a Responses stream', () => {
    expect(isFinalFrame(responsesEvent('response.completed', {}, 9))).toBe(true);
    expect(isFinalFrame(responsesEvent('response.incomplete', {}, 9))).toBe(true);
    expect(isFinalFrame(responsesEvent('response.failed', {}, 9))).toBe(true);
    expect(isFinalFrame(responsesEvent('response.completed_not', {}, 9))).toBe(false);
    expect(isFinalFrame(responsesEvent('response.output_text.done', {}, 9))).toBe(false);
  });
});
