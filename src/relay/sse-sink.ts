/**
 * Where a relayed stream goes: an HTTP response in production, a buffer in tests. Writes honour backpressure.
 */

/** A destination for server-sent events. */
export interface SseSink {
  /** Sends the status line and headers (200, `text/event-stream`). */
  open(headers: Record<string, string>): void;
  /**
   * Writes bytes. Returns a promise only when the client's buffer is full, resolving on `drain` or when the client
   * has gone; the relay awaits it before pulling the next upstream event.
   */
  write(text: string): Promise<void> | undefined;
  /**
   * Says the upstream's stream is over: events written and not yet sent wait one more event-loop turn, so that the
   * tail the relay writes once the settlement is durable (usage chunk, `[DONE]`) and the end of the response leave
   * with them, in one write, instead of in two.
   */
  holdForEnd(): void;
  end(): void;
  /** True once the client disconnected. */
  readonly closed: boolean;
  /** Calls `listener` once when the client disconnects before `end`. */
  onClose(listener: () => void): void;
}
