/**
 * The benchmarks' floor for any gateway written on Node: a reverse proxy that does nothing but forward. It reads the
 * client's request body, sends it to the upstream over an undici keep-alive pool (the client Tollgate uses), and
 * relays the status, content type and body back as they arrive — no parsing, no authentication, no accounting.
 *
 * What it costs on top of direct-to-upstream is what one more HTTP hop costs on this machine (two more sockets, the
 * server and client side of the extra process, and their wake-ups), whatever the gateway does; the bench runs it next
 * to Tollgate so that Tollgate's numbers can be split into "the hop" and "Tollgate's own work".
 *
 * Run it as its own process: `node dist/bench/bare-proxy.js --upstream http://127.0.0.1:PORT [--port 0]`. It prints
 * `{"event":"listening","port":N}` on stdout once it accepts connections.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { Pool } from 'undici';

/** How the bare proxy runs. */
export interface BareProxyOptions {
  /** Origin of the upstream, e.g. `http://127.0.0.1:8000`. */
  upstream: string;
  /** Listen port; 0 picks a free one. */
  port: number;
  /** Keep-alive connections to the upstream. Default 128 (Tollgate's default pool size). */
  connections?: number;
}

/** Starts the bare proxy; resolves once it listens. */
export async function startBareProxy(options: BareProxyOptions): Promise<Server> {
  const pool = new Pool(options.upstream, { connections: options.connections ?? 128, pipelining: 1 });
  const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (request, response) => {
    const parts: Buffer[] = [];
    request.on('data', (part: Buffer) => parts.push(part));
    request.on('end', () => {
      const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      pool
        .request({
          method: 'POST',
          path: request.url ?? '/',
          headers: { 'content-type': 'application/json' },
          body,
        })
        .then(
          async (upstream) => {
            const type = upstream.headers['content-type'];
            response.writeHead(upstream.statusCode, typeof type === 'string' ? { 'content-type': type } : {});
            for await (const chunk of upstream.body) {
              if (!response.write(chunk)) await once(response, 'drain');
            }
            response.end();
          },
          () => {
            response.writeHead(502).end();
          },
        );
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port, '127.0.0.1', resolve));
  server.once('close', () => void pool.close());
  return server;
}

async function main(): Promise<void> {
  const flags = new Command('bare-proxy')
    .description('A forward-only reverse proxy on node:http + undici: the floor of any Node gateway.')
    .requiredOption('--upstream <origin>', 'upstream origin, e.g. http://127.0.0.1:8000')
    .option('--port <n>', 'listen port (0: any free port)', '0')
    .option('--connections <n>', 'keep-alive connections to the upstream', '128')
    .parse()
    .opts<{ upstream: string; port: string; connections: string }>();
  const connections = Number(flags.connections);
  if (!Number.isInteger(connections) || connections < 1) throw new Error('--connections: expected a positive integer');
  const server = await startBareProxy({ upstream: flags.upstream, port: Number(flags.port), connections });
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port })}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
