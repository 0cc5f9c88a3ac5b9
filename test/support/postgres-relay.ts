/**
 * A TCP relay to the test PostgreSQL that a test can break the way networks break: `cut` drops every connection and
 * refuses new ones (a server restart), `pause` stops forwarding without closing anything (a partition: nothing
 * errors, nothing answers).
 */
import { createServer, type Server, Socket } from 'node:net';

/** A running relay (see the module comment). */
export interface PostgresRelay {
  port: number;
  /** `url` with its host and port replaced by the relay's. */
  through(url: string): string;
  cut(): void;
  pause(): void;
  /** Ends a cut or a pause. */
  restore(): void;
  close(): Promise<void>;
}

/** Starts a relay to 127.0.0.1:5432 on a free port. */
export async function startPostgresRelay(): Promise<PostgresRelay> {
  let state: 'up' | 'cut' | 'paused' = 'up';
  const open = new Set<Socket>();
  const paused: (() => void)[] = [];
  const server: Server = createServer((client) => {
    if (state === 'cut') {
      client.destroy();
      return;
    }
    const upstream = new Socket();
    open.add(client).add(upstream);
    const forget = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', forget).on('close', forget);
    upstream.on('error', forget).on('close', forget);
    const connect = () =>
      upstream.connect(5432, '127.0.0.1', () => {
        client.pipe(upstream);
        upstream.pipe(client);
      });
    if (state === 'paused') paused.push(connect);
    else connect();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    through: (url) => url.replace(/@[^/]+\//, `@127.0.0.1:${port}/`),
    cut() {
      state = 'cut';
      for (const socket of open) socket.destroy();
    },
    pause() {
      state = 'paused';
      for (const socket of open) socket.pause();
    },
    restore() {
      if (state === 'paused') for (const socket of open) socket.resume();
      state = 'up';
      for (const connect of paused.splice(0)) connect();
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      }),
  };
}
