/**
 * The stream of a streamed background response (`background: true, stream: true`), kept in the store as it is made,
 * so that any gateway process can send it to a client, from the start or after the last event that client got
 * (`GET /v1/responses/{id}?stream=true&starting_after=N`).
 *
 * `ResponseEventLog` is the `SseSink` the run's `ResponsesStreamSink` writes its events to: no client holds it, so it
 * never closes and never pushes back on the relay, except while too many events wait for the store. Events are
 * written in batches (every `flushMs`, or at once past `maxPending`); each batch, once stored, wakes this process's
 * followers (`onStored`). Other processes' followers poll the store.
 */
import type { Logger } from '../observability/logger.js';
import type { SseSink } from '../relay/sse-sink.js';
import type { ResponseStore, StoredResponseEvent } from './response-store.js';

/** Events kept in memory before a write pushes back on the relay until they are stored. */
const MAX_PENDING = 256;

/** The statuses whose event (`response.<status>`) is the last of a Responses stream. */
export const FINAL_EVENT_STATUSES: ReadonlySet<string> = new Set(['completed', 'incomplete', 'failed']);

/** Whether an SSE frame is the last event of a Responses stream. */
export function isFinalFrame(frame: string): boolean {
  const match = /^event: response\.([a-z_]+)\n/.exec(frame);
  return match !== null && FINAL_EVENT_STATUSES.has(match[1]!);
}

/** The sequence number in an SSE frame's `data:` JSON, or undefined when it has none. */
function sequenceOf(frame: string): number | undefined {
  const start = frame.indexOf('\ndata: ');
  if (start < 0) return undefined;
  const end = frame.indexOf('\n', start + 1);
  try {
    const data = JSON.parse(frame.slice(start + '\ndata: '.length, end < 0 ? undefined : end)) as {
      sequence_number?: unknown;
    };
    return typeof data.sequence_number === 'number' ? data.sequence_number : undefined;
  } catch {
    return undefined;
  }
}

/** Options of `ResponseEventLog`. */
export interface ResponseEventLogOptions {
  store: ResponseStore;
  responseId: string;
  logger: Logger;
  /** Called after each batch is stored: this process's followers read on. */
  onStored: () => void;
  /** True once the events written should be dropped (the response was cancelled: its stream just ends). */
  dropped: () => boolean;
  /** How long an event may wait for its batch, ms. Default 25. */
  flushMs?: number;
}

/** An `SseSink` that keeps what is written to it in the store, as numbered events. */
export class ResponseEventLog implements SseSink {
  private pending: StoredResponseEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private readonly flushMs: number;

  constructor(private readonly options: ResponseEventLogOptions) {
    this.flushMs = options.flushMs ?? 25;
  }

  /** Never: no client holds this sink. */
  get closed(): boolean {
    return false;
  }

  open(): void {}

  write(text: string): Promise<void> | undefined {
    if (this.options.dropped()) return undefined;
    for (const part of text.split('\n\n')) {
      if (part === '') continue;
      const frame = `${part}\n\n`;
      const sequenceNumber = sequenceOf(frame);
      if (sequenceNumber === undefined) continue;
      this.pending.push({ sequenceNumber, frame });
    }
    if (this.pending.length >= MAX_PENDING) return this.flush();
    this.timer ??= setTimeout(() => void this.flush(), this.flushMs);
    return undefined;
  }

  holdForEnd(): void {}

  end(): void {
    void this.flush();
  }

  onClose(): void {}

  /** Resolves once every event written so far is stored (or its batch failed, which is logged). */
  drain(): Promise<void> {
    return this.flush();
  }

  /** Stores the pending events, after any batch being stored; batches never overlap, so they land in order. */
  private flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flushing = this.flushing.then(async () => {
      const batch = this.pending;
      if (batch.length === 0) return;
      this.pending = [];
      try {
        await this.options.store.appendResponseEvents(this.options.responseId, batch);
      } catch (error: unknown) {
        // Followers skip the missing events; the stored response still ends as the run ends.
        this.options.logger.error(
          { err: error, responseId: this.options.responseId, events: batch.length },
          'events of a streamed background response not stored',
        );
      }
      this.options.onStored();
    });
    return this.flushing;
  }
}
