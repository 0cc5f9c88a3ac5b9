/** `SseSink` over a Node HTTP response, with backpressure and disconnect detection. */
import type { ServerResponse } from 'node:http';
import type { SseSink } from '../relay/sse-sink.js';

/** Streams server-sent events to one HTTP client. */
export class HttpSseSink implements SseSink {
  private isClosed = false;
  private ended = false;
  private readonly listeners: Array<() => void> = [];
  private corked = false;
  private readonly uncork = () => {
    if (!this.corked) return;
    this.corked = false;
    this.response.uncork();
  };

  constructor(private readonly response: ServerResponse) {
    // `close` on the response fires when the socket goes away or after `end`: only the former is a disconnect.
    response.once('close', () => {
      if (this.ended) return;
      this.isClosed = true;
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
    // Headers go out with the first event (corked into the same write), not in a system call of their own.
  }

  write(text: string): Promise<void> | undefined {
    if (this.isClosed) return undefined;
    // Events that arrive in the same turn (one upstream read often holds several) leave in one system call: cork on
    // the first write of a turn, uncork when the turn's events have been written.
    if (!this.corked) {
      this.corked = true;
      this.response.cork();
      setImmediate(this.uncork);
    }
    if (this.response.write(text)) return undefined;
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

  end(): void {
    if (this.isClosed || this.ended) return;
    this.ended = true;
    if (this.corked) {
      this.corked = false;
      this.response.uncork();
    }
    this.response.end();
  }

  onClose(listener: () => void): void {
    if (this.isClosed) listener();
    else this.listeners.push(listener);
  }
}
