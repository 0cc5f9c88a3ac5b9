import { type ChildProcess, spawn } from 'node:child_process';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { describeInvalidationBusConformance } from '../tenancy/invalidation-bus-conformance.js';
import {
  type ChannelToPrimary,
  ClusterInvalidationBus,
  ipcChannel,
  type RelayTarget,
  relayInvalidation,
} from './cluster-invalidation-bus.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** A child process with an IPC channel that was closed: what a worker's channel is once its primary is gone. */
function closedIpc(): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)'], {
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
  children.push(child);
  child.disconnect();
  return child;
}

/** The primary's end of one worker's channel, as `relayInvalidation` sends to it. */
function primaryEnd(port: MessagePort): RelayTarget {
  return {
    send(message, _sendHandle, _options, callback) {
      port.postMessage(message);
      callback(null);
    },
  };
}

/** A worker's end of its channel to the primary: messages cross a `MessagePort`, as IPC messages cross a pipe. */
function workerEnd(port: MessagePort): ChannelToPrimary {
  return {
    send(message, done) {
      port.postMessage(message);
      done(null);
    },
    onMessage(handler) {
      port.on('message', handler);
      return () => {
        port.off('message', handler);
      };
    },
  };
}

/**
 * Stands in for the primaries of the conformance suite's channels: each worker bus opened on a channel gets a port pair,
 * and the primary's ends relay as `runServer`'s primary does, with `relayInvalidation`.
 */
const primaries = new Map<string, Set<MessagePort>>();

function openWorkerBus(channel: string) {
  const workers = primaries.get(channel) ?? new Set<MessagePort>();
  primaries.set(channel, workers);
  const { port1: atPrimary, port2: atWorker } = new MessageChannel();
  workers.add(atPrimary);
  atPrimary.on('message', (message: unknown) => {
    relayInvalidation(message, [...workers].map(primaryEnd));
  });
  const bus = new ClusterInvalidationBus(workerEnd(atWorker));
  return {
    publish: (subject: string) => bus.publish(subject),
    subscribe: bus.subscribe.bind(bus),
    ready: () => bus.ready(),
    async close() {
      await bus.close();
      workers.delete(atPrimary);
      atPrimary.close();
      atWorker.close();
    },
  };
}

describeInvalidationBusConformance('workers on one SQLite file (node:cluster IPC through the primary)', {
  open: openWorkerBus,
  // A real IPC channel, closed: the bus learns it from Node's own send callback.
  openUnreachable: (_channel, onFailure) => new ClusterInvalidationBus(ipcChannel(closedIpc()), { onFailure }),
});

describe('ClusterInvalidationBus', () => {
  it('has the primary relay only its own messages, and never crash on a worker that is gone', async () => {
    const gone = closedIpc();
    const unhandled: unknown[] = [];
    gone.on('error', (error) => unhandled.push(error));
    // A settle round's message is not the bus's: the primary handles it elsewhere.
    expect(relayInvalidation({ type: 'tollgate:settle-flush', round: 1 }, [gone])).toBe(false);
    expect(relayInvalidation({ type: 'tollgate:invalidate', subject: 'key_1' }, [gone, undefined])).toBe(true);
    // Without a send callback Node reports the closed channel as an `error` event on the worker, a tick later.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(unhandled).toEqual([]);
  });

  it('stops hearing the primary once closed', async () => {
    const { port1: atPrimary, port2: atWorker } = new MessageChannel();
    const bus = new ClusterInvalidationBus(workerEnd(atWorker));
    const seen: string[] = [];
    bus.subscribe((subject) => seen.push(subject));
    atPrimary.postMessage({ type: 'tollgate:invalidate', subject: 'key_before' });
    await expect.poll(() => seen).toEqual(['key_before']);
    await bus.close();
    atPrimary.postMessage({ type: 'tollgate:invalidate', subject: 'key_after' });
    atPrimary.postMessage({ type: 'tollgate:invalidate', subject: 'key_after_too' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(seen).toEqual(['key_before']);
    atPrimary.close();
  });
});
