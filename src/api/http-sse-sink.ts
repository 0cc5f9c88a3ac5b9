/** `SseSink` over a Node HTTP response, with backpressure and disconnect detection. */
import type { ServerResponse } from 'node:http';
import type { SseSink } from '../relay/sse-sink.js';

/** Streams server-sent events to one HTTP client. */
export class HttpSseSink implements SseSink {
  private isClosed = false;
  private ended = false;
  private readonly listeners: Array<() => void> = [];

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
    this.response.flushHeaders();
  }

  write(text: string): Promise<void> | undefined {
    if (this.isClosed) return undefined;
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
    this.response.end();
  }

  onClose(listener: () => void): void {
    if (this.isClosed) listener();
    else this.listeners.push(listener);
  }
}
