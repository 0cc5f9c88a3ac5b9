/** `SseSink` over a Node HTTP response, with backpressure and disconnect detection. */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { SseSink } from '../relay/sse-sink.js';

/**
 * Takes `reply` over from Fastify for a stream: the headers hooks set on it (the request id, CORS) go out with the
 * stream's own, and the request's trace says it streamed.
 */
export function hijackForStream(request: FastifyRequest, reply: FastifyReply): void {
  if (request.trace !== undefined) request.trace.stream = true;
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) reply.raw.setHeader(name, value);
  }
  reply.hijack();
}

/** A turn's events are written at once when they reach this many characters, not held to the end of the turn. */
const MAX_BATCH_CHARS = 64 * 1024;

/** Streams server-sent events to one HTTP client. */
export class HttpSseSink implements SseSink {
  private isClosed = false;
  private ended = false;
  private readonly listeners: Array<() => void> = [];
  /**
   * Events written this turn and not yet handed to the response. One upstream read often holds many events; they
   * leave as one response write. Each `response.write` of a chunked response adds a chunk header and a CRLF and
   * converts its string on its own, so 22 small writes (corked) became one `writev` of ~66 buffers; joined, they are
   * one write of three.
   */
  private batch = '';
  private flushScheduled = false;
  /** Set by `holdForEnd`: the scheduled flush waits one more turn for the end. */
  private holding = false;
  private readonly flush = () => {
    this.flushScheduled = false;
    if (this.batch === '' || this.isClosed || this.ended) return;
    if (this.holding) {
      // The settlement is normally durable later in this turn, and the end follows; if not, the events go out anyway.
      this.holding = false;
      this.flushScheduled = true;
      setImmediate(this.flush);
      return;
    }
    const text = this.batch;
    this.batch = '';
    this.response.write(text);
  };

  constructor(private readonly response: ServerResponse) {
    // `close` on the response fires when the socket goes away or after `end`: only the former is a disconnect.
    response.once('close', () => {
      if (this.ended) return;
      this.isClosed = true;
      this.batch = '';
      for (const listener of this.listeners.splice(0)) listener();
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  open(headers: Record<string, string>): void {
    this.response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    // Headers go out with the first events, not in a system call of their own.
  }

  write(text: string): Promise<void> | undefined {
    if (this.isClosed || this.ended) return undefined;
    this.batch += text;
    if (this.batch.length >= MAX_BATCH_CHARS) {
      this.holding = false;
      this.flush();
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
    // Backpressure: once a write has filled the response's buffer, the relay waits for `drain` before it pulls more.
    // What joins the batch meanwhile is bounded by one upstream read.
    if (!this.response.writableNeedDrain) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        this.response.off('drain', done);
        this.response.off('close', done);
        resolve();
      };
      this.response.on('drain', done);
      this.response.on('close', done);
    });
  }

  holdForEnd(): void {
    // Only a flush still pending has anything to hold: events that left in an earlier turn are gone already.
    if (this.flushScheduled) this.holding = true;
  }

  end(): void {
    if (this.isClosed || this.ended) return;
    this.ended = true;
    const text = this.batch;
    this.batch = '';
    if (text === '') this.response.end();
    else this.response.end(text);
  }

  onClose(listener: () => void): void {
    if (this.isClosed) listener();
    else this.listeners.push(listener);
  }
}
