import { describe, expect, it } from 'vitest';
import { OutstandingRequests } from './outstanding-requests.js';

/** Whether `promise` has settled after the queued microtasks and one macrotask ran. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => {
    done = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

describe('OutstandingRequests', () => {
  it('is idle at once when nothing is outstanding', async () => {
    expect(await settled(new OutstandingRequests().idle())).toBe(true);
  });

  it('waits for every handler that entered and every record held, whether it resolves or fails', async () => {
    const outstanding = new OutstandingRequests();
    outstanding.enter();
    let resolveRecord!: () => void;
    let rejectOther!: (error: Error) => void;
    outstanding.hold(new Promise<void>((resolve) => (resolveRecord = resolve)));
    outstanding.hold(new Promise<void>((_resolve, reject) => (rejectOther = reject)));
    expect(outstanding.size).toBe(3);
    const idle = outstanding.idle();

    outstanding.leave();
    expect(await settled(idle)).toBe(false);
    resolveRecord();
    expect(await settled(idle)).toBe(false);
    rejectOther(new Error('the store is down'));
    expect(await settled(idle)).toBe(true);
    expect(outstanding.size).toBe(0);
  });
});
