/**
 * One HTTP exchange with an upstream through undici's dispatch interface (a handler per request), not `pool.request`.
 *
 * `pool.request` wraps every response body in a `Readable`: a stream object, its buffer, `readable`/`end`/`close`
 * events and their ticks, for a body the gateway wants as one string (whole answers) or as raw chunks (streams).
 * The handler keeps just the chunks. In a Fastify + undici floor (JSON in, JSON out, 32 connections, this machine)
 * the handler took 5–30% less CPU per request than `pool.request` with `body.json()` (six pairs); with this
 * session's other cuts, the gateway's CPU per request at 1,000 req/s fell 8–10% (`npm run bench:ab` against an A/A
 * run of the same build, docs/benchmarks.md, session 12).
 *
 * What the handler owes the caller, and `pool.request` gave for free:
 * - the signal: aborting it aborts the exchange at once (rejecting the response, or failing the body's listener),
 *   also while the request still waits for a connection; its listener is removed when the exchange ends, so a
 *   connection's signal, shared by the requests of a keep-alive connection, does not collect them;
 * - an error answer's body is read up to `maxErrorBodyBytes` (then the connection is dropped, not drained);
 * - a streamed body waits, paused, for its reader, and `destroy()` closes the connection.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';

/** What the upstream answered. */
export interface ExchangeResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /**
   * The body as UTF-8 (a leading byte-order mark dropped): all of it for a whole answer, the first
   * `maxErrorBodyBytes` or so of a non-2xx one or of a JSON or HTML answer to a stream request, `''` for a streamed
   * 2xx (read it from `body`).
   */
  text: string;
  /** A streamed 2xx answer's body, paused until its reader resumes it. Undefined otherwise (and for a 2xx answer to a
   * stream request that is JSON or HTML, not a stream). */
  body: StreamingBody | undefined;
}

/** Receives a streamed body. After `onEnd` or `onError` nothing more comes. */
export interface BodyListener {
  onData(chunk: Buffer): void;
  onEnd(): void;
  onError(error: unknown): void;
}

/** A streamed response body: raw chunks to one listener, with flow control. */
export interface StreamingBody {
  /** Attaches the reader; anything the body already ended or failed with is delivered at once. */
  listen(listener: BodyListener): void;
  /** Asks for no more chunks (at most the one being delivered still arrives). */
  pause(): void;
  /** Asks for more chunks. */
  resume(): void;
  /** Gives up the body: the exchange is aborted and its connection closed. The listener hears nothing more. */
  destroy(): void;
}

/** How to read the answer. */
export interface ExchangeOptions {
  /** True: a 2xx answer resolves at its headers with a `StreamingBody`. False: it resolves with its whole text. */
  streaming: boolean;
  /** Bytes of a non-2xx body kept for its error message. */
  maxErrorBodyBytes: number;
}

/**
 * Sends one request on `dispatcher` and resolves with the answer (see `ExchangeResponse`). Rejects with undici's
 * error on transport failures and with `signal.reason` when the signal aborts first.
 */
export function exchange(
  dispatcher: Dispatcher,
  request: Dispatcher.DispatchOptions,
  signal: AbortSignal,
  options: ExchangeOptions,
): Promise<ExchangeResponse> {
  if (signal.aborted) return Promise.reject(signal.reason);
  const handler = new Exchange(signal, options);
  dispatcher.dispatch(request, handler);
  return handler.response;
}

/** Whether a 2xx answer of this content type cannot be an event stream. */
function notAStream(contentType: string | string[] | undefined): boolean {
  const type = (Array.isArray(contentType) ? contentType[0] : contentType)?.trimStart().toLowerCase() ?? '';
  return type.startsWith('application/json') || type.startsWith('text/html');
}

/** Where an exchange is: before its promise settled, delivering a streamed body, or over. */
type Phase = 'waiting' | 'streaming' | 'over';

class Exchange implements Dispatcher.DispatchHandler, StreamingBody {
  readonly response: Promise<ExchangeResponse>;
  private resolveResponse!: (response: ExchangeResponse) => void;
  private rejectResponse!: (error: unknown) => void;
  private phase: Phase = 'waiting';
  private controller: Dispatcher.DispatchController | undefined = undefined;
  /** Why the exchange was aborted before undici handed over its controller; applied when it does. */
  private abortReason: unknown = undefined;
  private aborted = false;
  private status = 0;
  private headers: IncomingHttpHeaders = {};
  /** A whole or error body so far; or a streamed body's chunks that arrived before its listener. */
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** A 2xx body read only up to `maxErrorBodyBytes`, as an error body is: a stream request answered without a stream. */
  private capped = false;
  private listener: BodyListener | undefined = undefined;
  /** A streamed body's end (`true`) or failure, when it came before the listener. */
  private streamEnd: { error: unknown } | true | undefined = undefined;

  constructor(
    private readonly signal: AbortSignal,
    private readonly options: ExchangeOptions,
  ) {
    this.response = new Promise<ExchangeResponse>((resolve, reject) => {
      this.resolveResponse = resolve;
      this.rejectResponse = reject;
    });
    signal.addEventListener('abort', this.onAbort);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.aborted) controller.abort(this.abortReason as Error);
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200 || this.phase !== 'waiting') return;
    this.status = status;
    this.headers = headers;
    if (!this.options.streaming || status >= 300) return;
    // A JSON or HTML answer to a stream request is no stream (an error object, a proxy's page): it is read as an
    // error body is, so the caller can fail before the client's stream opens (and try another deployment).
    if (notAStream(headers['content-type'])) {
      this.capped = true;
      return;
    }
    this.phase = 'streaming';
    controller.pause();
    this.resolveResponse({ status, headers, text: '', body: this });
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.phase === 'streaming') {
      if (this.listener === undefined) this.chunks.push(chunk);
      else this.listener.onData(chunk);
      return;
    }
    if (this.phase !== 'waiting') return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= this.options.maxErrorBodyBytes && (this.capped || this.status < 200 || this.status >= 300)) {
      // Enough of an error page for its message; the rest is not worth keeping the connection for.
      this.settle();
      this.abort(new Error('error body truncated'));
    }
  }

  onResponseEnd(): void {
    if (this.phase === 'streaming') {
      this.finish();
      if (this.listener === undefined) this.streamEnd = true;
      else this.listener.onEnd();
      return;
    }
    if (this.phase === 'waiting') this.settle();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.phase === 'streaming') {
      this.finish();
      if (this.listener === undefined) this.streamEnd = { error };
      else this.listener.onError(error);
      return;
    }
    if (this.phase === 'waiting') {
      this.finish();
      this.rejectResponse(error);
    }
  }

  listen(listener: BodyListener): void {
    this.listener = listener;
    const held = this.chunks;
    this.chunks = [];
    for (const chunk of held) listener.onData(chunk);
    const end = this.streamEnd;
    if (end === true) listener.onEnd();
    else if (end !== undefined) listener.onError(end.error);
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  destroy(): void {
    if (this.phase !== 'streaming') return;
    this.finish();
    this.abort(new Error('response body destroyed'));
  }

  /** Resolves a whole (or error) answer with the body read so far. */
  private settle(): void {
    this.finish();
    this.resolveResponse({
      status: this.status,
      headers: this.headers,
      text: decodeBody(this.chunks),
      body: undefined,
    });
    this.chunks = [];
  }

  /** The exchange is over for its caller: nothing more is delivered, and the signal is let go. */
  private finish(): void {
    this.phase = 'over';
    this.signal.removeEventListener('abort', this.onAbort);
  }

  private abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.abortReason = reason;
    this.controller?.abort(reason as Error);
  }

  private readonly onAbort = (): void => {
    const reason = this.signal.reason;
    if (this.phase === 'waiting') {
      this.finish();
      this.rejectResponse(reason);
    } else if (this.phase === 'streaming') {
      this.finish();
      if (this.listener === undefined) this.streamEnd = { error: reason };
      else this.listener.onError(reason);
    }
    this.abort(reason);
  };
}

/** Chunks as UTF-8 text, without a leading byte-order mark (as undici's `body.text()` reads them). */
function decodeBody(chunks: readonly Buffer[]): string {
  if (chunks.length === 0) return '';
  const buffer = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  const start = buffer.length >= 3 && buffer[0] === 0xef && buffer[1] === 0xbb && buffer[2] === 0xbf ? 3 : 0;
  return buffer.toString('utf8', start);
}
