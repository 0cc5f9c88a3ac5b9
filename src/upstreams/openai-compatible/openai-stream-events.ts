/**
 * Turns an OpenAI-compatible SSE response body into the gateway's `StreamEvent`s, pulling from the socket only as
 * the consumer pulls, and cancelling the upstream request when the consumer stops early.
 */
import { UpstreamError } from '../../errors/gateway-error.js';
import { generatedText } from '../generated-text.js';
import type { StreamEvent } from '../upstream.js';
import { type Usage, usageFromOpenAI } from '../usage.js';
import { type SseMessage, SseParser } from './sse-parser.js';
import type { BodyListener, StreamingBody } from './upstream-exchange.js';
import { findUpstreamError, toUpstreamFailure, upstreamReportedError } from './upstream-failure.js';

/** Bytes still read after `[DONE]` so the connection can go back to the pool; beyond that it is closed. */
const MAX_DRAIN_BYTES = 64 * 1024;

/**
 * Body bytes read ahead of the consumer before the body is paused. Pausing the body after every chunk (undici's
 * `Readable` then, before `upstream-exchange.ts`) made each resume read the whole socket buffer and unshift what one
 * event did not use: with large events (16 KB) that copied megabytes per event and let the socket buffer grow to the
 * whole upstream response (66 MB relayed in 55 s, the upstream 19 MB ahead after 500 events). With a read-ahead, one
 * resume takes a read-ahead's worth, which keeps the socket buffer small, and backpressure still holds the upstream to
 * this plus the kernel's socket buffers.
 */
const READ_AHEAD_BYTES = 64 * 1024;

const DONE_RESULT: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * The events of one streamed answer. Single use: iterate it once. The body is read at most `READ_AHEAD_BYTES` ahead of
 * `next()`, so an idle consumer applies backpressure all the way to the upstream's socket.
 *
 * - Chunks with choices become `chunk` events (with `usage` when the upstream attached it); a chunk without choices
 *   but with usage becomes the `usage` event; iteration ends after `data: [DONE]`.
 * - An error object in the stream (or an `event: error`) throws `UpstreamError` code `upstream_stream_error`; a body
 *   ending without `[DONE]` throws `upstream_stream_truncated` after the events that did arrive; transport failures
 *   throw what `toUpstreamFailure` maps them to; an aborted `signal` throws `signal.reason`.
 * - `return()` (a `break` out of `for await`), a throw, or an aborted signal destroys the body, which makes undici
 *   close the upstream connection.
 */
export class OpenAIStreamEvents implements AsyncIterableIterator<StreamEvent>, BodyListener {
  private readonly parser = new SseParser();
  private readonly pending: SseMessage[] = [];
  private pendingIndex = 0;
  /** Body chunks read ahead and not yet parsed, and their bytes. */
  private readonly chunks: Buffer[] = [];
  private chunksIndex = 0;
  private queuedBytes = 0;
  private ended = false;
  private failed = false;
  private failure: unknown = undefined;
  private wake: (() => void) | undefined = undefined;
  /** No more events will be produced: `[DONE]`, an error, or `return()`. */
  private finished = false;
  private drainedBytes = 0;

  constructor(
    private readonly body: StreamingBody,
    private readonly upstreamName: string,
    private readonly signal: AbortSignal,
  ) {
    // The body arrives paused; nothing is read until the consumer asks.
    body.listen(this);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<StreamEvent, undefined>> {
    try {
      for (;;) {
        if (this.finished) return DONE_RESULT;
        while (this.pendingIndex < this.pending.length) {
          const event = this.toEvent(this.pending[this.pendingIndex++]!);
          if (event !== undefined) return { done: false, value: event };
          if (this.finished) return DONE_RESULT;
        }
        this.pending.length = 0;
        this.pendingIndex = 0;
        const chunk = await this.nextChunk();
        if (chunk === undefined) {
          this.parser.end();
          throw new UpstreamError(`Upstream ${this.upstreamName} ended the stream before [DONE].`, {
            code: 'upstream_stream_truncated',
            retryable: true,
          });
        }
        this.parser.feed(chunk, this.pending);
      }
    } catch (error: unknown) {
      this.stop();
      if (this.signal.aborted) throw this.signal.reason;
      throw toUpstreamFailure(error, this.upstreamName);
    }
  }

  async return(): Promise<IteratorResult<StreamEvent, undefined>> {
    this.stop();
    return DONE_RESULT;
  }

  private toEvent(message: SseMessage): StreamEvent | undefined {
    const data = message.data;
    if (message.event === 'error') {
      throw upstreamReportedError(
        this.upstreamName,
        findUpstreamError(safeParse(data)) ?? { message: data, param: undefined },
        data,
      );
    }
    // Named events are not part of the OpenAI protocol (some proxies send pings); only unnamed ones carry chunks.
    if (message.event !== 'message') return undefined;
    if (data === '[DONE]') {
      this.finishAfterDone();
      return undefined;
    }
    if (data.length === 0) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch (error: unknown) {
      throw malformed(this.upstreamName, error);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw malformed(this.upstreamName);
    const chunk = parsed as Record<string, unknown>;
    if (chunk.error != null || chunk.object === 'error') {
      throw upstreamReportedError(
        this.upstreamName,
        findUpstreamError(chunk) ?? { message: undefined, param: undefined },
        data,
      );
    }
    const choices = chunk.choices;
    const hasChoices = Array.isArray(choices) && choices.length > 0;
    const usage: Usage | undefined = chunk.usage == null ? undefined : usageFromOpenAI(chunk.usage);
    if (!hasChoices && usage !== undefined) return { type: 'usage', data, usage };
    const text = hasChoices ? choicesText(choices) : '';
    return usage === undefined ? { type: 'chunk', data, text } : { type: 'chunk', data, text, usage };
  }

  /**
   * The next body chunk, or `undefined` at the end of the body. Resumes the body only when the read-ahead is used up:
   * each resume then takes a read-ahead's worth, not an event's.
   */
  private async nextChunk(): Promise<Buffer | undefined> {
    for (;;) {
      if (this.chunksIndex < this.chunks.length) {
        const chunk = this.chunks[this.chunksIndex++]!;
        if (this.chunksIndex === this.chunks.length) {
          this.chunks.length = 0;
          this.chunksIndex = 0;
        }
        this.queuedBytes -= chunk.length;
        return chunk;
      }
      if (this.failed) throw this.failure;
      if (this.ended) return undefined;
      const arrived = new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.body.resume();
      await arrived;
    }
  }

  onData(chunk: Buffer): void {
    if (this.finished) {
      this.drainedBytes += chunk.length;
      if (this.drainedBytes > MAX_DRAIN_BYTES) this.body.destroy();
      return;
    }
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes >= READ_AHEAD_BYTES) this.body.pause();
    this.notify();
  }

  onEnd(): void {
    this.ended = true;
    this.notify();
  }

  onError(error: unknown): void {
    if (!this.failed && !this.ended) {
      this.failed = true;
      this.failure = error;
    }
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    if (wake !== undefined) {
      this.wake = undefined;
      wake();
    }
  }

  /** After `[DONE]`: read the rest of the body (normally just the chunked-encoding terminator) to keep the socket. */
  private finishAfterDone(): void {
    this.finished = true;
    this.dropReadAhead();
    if (!this.ended && !this.failed) this.body.resume();
  }

  private dropReadAhead(): void {
    this.chunks.length = 0;
    this.chunksIndex = 0;
    this.queuedBytes = 0;
  }

  /** Ends iteration early: destroying an unfinished body makes undici abort the request and close its socket. */
  private stop(): void {
    if (this.finished && (this.ended || this.failed)) return;
    const alreadyDraining = this.finished;
    this.finished = true;
    this.dropReadAhead();
    if (!alreadyDraining && !this.ended && !this.failed) this.body.destroy();
  }
}

function malformed(upstreamName: string, cause?: unknown): UpstreamError {
  return new UpstreamError(`Upstream ${upstreamName} sent a stream chunk that is not a JSON object.`, {
    code: 'upstream_malformed_response',
    retryable: true,
    cause,
  });
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // An `event: error` may carry plain text; the caller then reports the text itself.
    return undefined;
  }
}

/** The text a chunk adds over all its choices (see `generatedText`), or a legacy completion's `text`. */
function choicesText(choices: unknown[]): string {
  let text = '';
  for (let index = 0; index < choices.length; index++) {
    const choice = choices[index];
    if (choice === null || typeof choice !== 'object') continue;
    const delta = (choice as { delta?: unknown }).delta;
    if (delta === null || typeof delta !== 'object') {
      const legacy = (choice as { text?: unknown }).text;
      if (typeof legacy === 'string') text += legacy;
      continue;
    }
    text += generatedText(delta as Record<string, unknown>);
  }
  return text;
}
