/**
 * The abort signals of API requests: one per client connection, aborted when the client disconnects, or by the
 * gateway itself with a reason when shutdown stops what still runs at the end of its grace (`stopAll`).
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { GatewayError } from '../errors/gateway-error.js';

/** The abort controller of a client connection (see `ConnectionSignals.of`). */
const CONNECTION_GONE = Symbol('tollgate.connectionGone');

type SocketWithSignal = Socket & { [CONNECTION_GONE]?: AbortController };

export class ConnectionSignals {
  /** The controllers of the connections still open. */
  private readonly open = new Set<AbortController>();
  private stoppedWith: GatewayError | undefined;

  /**
   * The signal of the request answered on `response`: aborted when the client disconnects before the response
   * finished, plainly (no reason of the gateway's), or by `stopAll` with its reason. One signal per connection,
   * aborted when the connection closes. An HTTP/1.1 connection carries one request at a time (pipelined ones wait
   * their turn, and a disconnect abandons them too), and nothing uses a request's signal after its response ends, so
   * a connection's close is exactly its in-flight request's disconnect.
   *
   * Per connection rather than per request because Node's `AbortSignal`s end up in V8's old generation, where only a
   * full collection frees them: 200,000 discarded `AbortController`s grow the old space by 11–73 MB (with the default
   * and the serving young generation), as many plain `EventTarget`s by nothing. At 1,000 req/s on keep-alive
   * connections, one per request grew the old generation by ~1 MB/s, which brought a 6–13 ms mark-compact every 3–4 s;
   * shared by a connection's requests, ~0.2 MB/s.
   */
  of(response: ServerResponse): AbortSignal {
    if (this.stoppedWith !== undefined) return AbortSignal.abort(this.stoppedWith);
    const socket = response.socket as SocketWithSignal | null;
    if (socket === null || socket.destroyed) {
      // Already gone (or never had one): an aborted signal, so no upstream call starts for nobody.
      return AbortSignal.abort();
    }
    let controller = socket[CONNECTION_GONE];
    if (controller === undefined) {
      const created = new AbortController();
      socket[CONNECTION_GONE] = created;
      this.open.add(created);
      socket.once('close', () => {
        this.open.delete(created);
        created.abort();
      });
      controller = created;
    }
    return controller.signal;
  }

  /**
   * Aborts the work of every request in flight, and of any that asks for its signal from now on, with `reason`: each
   * ends its answer with that error (a whole answer as an error response, a stream with an error event) on a
   * connection that stays open until the answer is out.
   */
  stopAll(reason: GatewayError): void {
    this.stoppedWith = reason;
    for (const controller of this.open) controller.abort(reason);
  }
}
