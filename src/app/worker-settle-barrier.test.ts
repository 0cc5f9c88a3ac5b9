import { describe, expect, it, vi } from 'vitest';
import {
  type PrimaryChannel,
  type RoundWorker,
  SettleRoundCoordinator,
  type SettleRoundMessage,
  WorkerSettleBarrier,
} from './worker-settle-barrier.js';

/** A worker that records what the primary sends it. */
function recordingWorker(id: number): RoundWorker & { received: SettleRoundMessage[] } {
  const received: SettleRoundMessage[] = [];
  return { id, received, send: (message) => received.push(message) };
}

/** A promise with its resolver. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

const ticks = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('SettleRoundCoordinator', () => {
  it('asks every live worker to flush and answers the requester once all of them have', () => {
    const workers = [recordingWorker(1), recordingWorker(2), recordingWorker(3)];
    const coordinator = new SettleRoundCoordinator(() => workers);
    expect(coordinator.onMessage(workers[0]!, { type: 'tollgate:flush', id: 7 })).toBe(true);
    for (const worker of workers) expect(worker.received).toEqual([{ type: 'tollgate:flush-request', round: '1:7' }]);
    coordinator.onMessage(workers[1]!, { type: 'tollgate:flush-done', round: '1:7' });
    coordinator.onMessage(workers[2]!, { type: 'tollgate:flush-done', round: '1:7' });
    expect(workers[0]!.received).toHaveLength(1);
    coordinator.onMessage(workers[0]!, { type: 'tollgate:flush-done', round: '1:7' });
    expect(workers[0]!.received).toEqual([
      { type: 'tollgate:flush-request', round: '1:7' },
      { type: 'tollgate:flushed-all', id: 7 },
    ]);
    // An answer for a round that is over changes nothing.
    coordinator.onMessage(workers[1]!, { type: 'tollgate:flush-done', round: '1:7' });
    expect(workers[0]!.received).toHaveLength(2);
  });

  it('stops waiting for a worker that exits, and drops the rounds of a requester that exits', () => {
    const workers = [recordingWorker(1), recordingWorker(2)];
    const coordinator = new SettleRoundCoordinator(() => workers);
    coordinator.onMessage(workers[0]!, { type: 'tollgate:flush', id: 1 });
    coordinator.onMessage(workers[1]!, { type: 'tollgate:flush', id: 1 });
    coordinator.onMessage(workers[0]!, { type: 'tollgate:flush-done', round: '1:1' });
    coordinator.onMessage(workers[0]!, { type: 'tollgate:flush-done', round: '2:1' });
    coordinator.onExit(2);
    expect(workers[0]!.received.at(-1)).toEqual({ type: 'tollgate:flushed-all', id: 1 });
    expect(workers[1]!.received.filter((message) => message.type === 'tollgate:flushed-all')).toEqual([]);
  });

  it('leaves other messages to their handlers', () => {
    const coordinator = new SettleRoundCoordinator(() => []);
    expect(coordinator.onMessage(recordingWorker(1), { type: 'tollgate:invalidate', subject: 'k' })).toBe(false);
    expect(coordinator.onMessage(recordingWorker(1), null)).toBe(false);
  });
});

/** A primary and `count` workers wired together, messages delivered asynchronously as over IPC. */
function cluster(localSettled: (() => Promise<void>)[], options: { timeoutMs?: number; onTimeout?: () => void } = {}) {
  const handlers: ((message: unknown) => void)[] = [];
  const roundWorkers: RoundWorker[] = localSettled.map((_, index) => ({
    id: index + 1,
    send: (message) => setImmediate(() => handlers[index]!(message)),
  }));
  const coordinator = new SettleRoundCoordinator(() => roundWorkers);
  return localSettled.map((settled, index) => {
    const channel: PrimaryChannel = {
      send: (message) => setImmediate(() => coordinator.onMessage(roundWorkers[index]!, message)),
      onMessage: (handler) => {
        handlers[index] = handler;
      },
    };
    return new WorkerSettleBarrier(settled, channel, options);
  });
}

describe('WorkerSettleBarrier', () => {
  it("resolves a worker's read only once every worker's own commits are done", async () => {
    const first = deferred();
    const second = deferred();
    const [one] = cluster([() => first.promise, () => second.promise]);
    let done = false;
    const read = one!.settled().then(() => {
      done = true;
    });
    await ticks();
    expect(done).toBe(false);
    first.resolve();
    await ticks();
    expect(done).toBe(false);
    second.resolve();
    await read;
    expect(done).toBe(true);
  });

  it('runs rounds of several readers side by side', async () => {
    const barriers = cluster([async () => undefined, async () => undefined, async () => undefined]);
    await Promise.all(barriers.flatMap((barrier) => [barrier.settled(), barrier.settled()]));
  });

  it('gives up after the timeout when a worker never answers, and says so', async () => {
    const onTimeout = vi.fn();
    const hanging = new Promise<void>(() => undefined);
    const [one] = cluster([async () => undefined, () => hanging], { timeoutMs: 30, onTimeout });
    await one!.settled();
    expect(onTimeout).toHaveBeenCalledTimes(1);
  });
});
