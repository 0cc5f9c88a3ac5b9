/**
 * The bus of workers on one SQLite file (`server.workers` > 1 with the embedded store): a worker sends what changed
 * (a revoked key, a price version, a budget) to the primary over node:cluster IPC, and the primary sends it to every
 * worker, the sender included. Workers on a shared PostgreSQL store or with Redis use the bus that reaches every
 * process of every host instead (`openSharedBus`).
 */
import type { Logger } from '../observability/logger.js';
import { InProcessInvalidationBus, type KeyInvalidationHandler } from '../tenancy/invalidation-bus.js';
import type { SharedBus } from './shared-bus.js';

const INVALIDATE = 'tollgate:invalidate';

/** What a worker sends the primary, and the primary every worker. */
export interface InvalidateMessage {
  type: typeof INVALIDATE;
  subject: string;
}

/** True for a message of this bus (a worker's IPC also carries the settle rounds' messages). */
export function isInvalidateMessage(message: unknown): message is InvalidateMessage {
  const candidate = message as { type?: unknown; subject?: unknown } | null;
  return candidate?.type === INVALIDATE && typeof candidate.subject === 'string';
}

/** A worker's line to its primary: its IPC channel (`ipcChannel(process)`), or a `MessagePort` in tests. */
export interface ChannelToPrimary {
  /** Sends `message`; `done` gets the error when it could not be sent (the channel is closed: the primary is gone). */
  send(message: InvalidateMessage, done: (error: Error | null) => void): void;
  /** Registers a handler of the primary's messages; returns a function that removes it. */
  onMessage(handler: (message: unknown) => void): () => void;
}

/** One end of a node IPC channel: a cluster worker's `process`, or the primary's `ChildProcess` of a worker. */
export interface IpcEndpoint {
  send?(message: unknown, sendHandle: undefined, options: object, callback: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
}

/**
 * A `ChannelToPrimary` over node IPC. A send on a closed channel reports its error to `done`: without a callback
 * Node would emit it as an `error` event, which nothing handles on `process`, and the worker would crash.
 */
export function ipcChannel(endpoint: IpcEndpoint): ChannelToPrimary {
  return {
    send(message, done) {
      if (endpoint.send === undefined) done(new Error('this process has no IPC channel (not a cluster worker)'));
      else endpoint.send(message, undefined, {}, done);
    },
    onMessage(handler) {
      endpoint.on('message', handler);
      return () => {
        endpoint.off('message', handler);
      };
    },
  };
}

/** Options of `ClusterInvalidationBus`. */
export interface ClusterInvalidationBusOptions {
  /** Where failures to send are logged (warn). Default: not logged. */
  logger?: Logger;
  /** Called when a message could not be sent to the primary (a metric). */
  onFailure?: () => void;
}

/** One worker's end of the bus. */
export class ClusterInvalidationBus implements SharedBus {
  private readonly local = new InProcessInvalidationBus();
  private readonly stopListening: () => void;

  constructor(
    private readonly channel: ChannelToPrimary,
    private readonly options: ClusterInvalidationBusOptions = {},
  ) {
    this.stopListening = channel.onMessage((message) => {
      if (isInvalidateMessage(message)) void this.local.publish(message.subject);
    });
  }

  /** The IPC channel is open as soon as the worker runs: nothing to wait for. */
  async ready(): Promise<void> {}

  /** Resolves once the local subscribers ran and the message was handed to the channel (or could not be). */
  async publish(subject: string): Promise<void> {
    // Dropped here at once (the revoking request's own worker), then the primary tells every worker.
    await this.local.publish(subject);
    const error = await new Promise<Error | null>((resolve) =>
      this.channel.send({ type: INVALIDATE, subject }, resolve),
    );
    if (error === null || error === undefined) return;
    this.options.onFailure?.();
    this.options.logger?.warn({ err: error, subject }, 'worker invalidation bus: not sent to the primary');
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    return this.local.subscribe(handler);
  }

  async close(): Promise<void> {
    this.stopListening();
  }
}

/** A worker as the primary sees it: `cluster.Worker`, or a port in tests. */
export interface RelayTarget {
  send(
    message: InvalidateMessage,
    sendHandle: undefined,
    options: object,
    callback: (error: Error | null) => void,
  ): unknown;
}

/**
 * The primary's side: sends an invalidation from one worker to every worker (the sender included, whose
 * subscribers already heard it: subscribers drop or reload what they cache, so hearing it twice is harmless).
 * Returns false for any other message. A worker that cannot be sent to is exiting: the one started in its place
 * starts with empty caches.
 */
export function relayInvalidation(message: unknown, workers: Iterable<RelayTarget | undefined>): boolean {
  if (!isInvalidateMessage(message)) return false;
  for (const worker of workers) worker?.send(message, undefined, {}, ignoreSendError);
  return true;
}

function ignoreSendError(): void {}
