import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { UnavailableError } from '../errors/gateway-error.js';
import { ConnectionSignals } from './connection-signals.js';

/** A server that hands each request's response to the test and answers only when told to. */
async function holdingServer() {
  const held: ServerResponse[] = [];
  const arrived: Array<() => void> = [];
  const server = createServer((_request, response) => {
    held.push(response);
    arrived.shift()?.();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const next = () => new Promise<ServerResponse>((resolve) => arrived.push(() => resolve(held.at(-1)!)));
  return { server, url, next };
}

const servers: Array<ReturnType<typeof createServer>> = [];
afterEach(() => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    server.close();
  }
});

describe('ConnectionSignals', () => {
  it('gives the requests of one connection one signal, aborted without a reason of its own when the client leaves', async () => {
    const { server, url, next } = await holdingServer();
    servers.push(server);
    const signals = new ConnectionSignals();
    const agent = new Agent({ connections: 1, keepAliveTimeout: 10_000 });

    const first = next();
    const firstCall = request(url, { dispatcher: agent });
    const firstResponse = await first;
    const signal = signals.of(firstResponse);
    firstResponse.end('one');
    await (await firstCall).body.text();

    const second = next();
    const secondCall = request(url, { dispatcher: agent });
    const secondResponse = await second;
    expect(signals.of(secondResponse)).toBe(signal);
    expect(signal.aborted).toBe(false);

    await agent.destroy();
    await secondCall.catch(() => undefined);
    if (!signal.aborted) await once(signal, 'abort');
    expect(signal.reason).not.toBeInstanceOf(UnavailableError);
  });

  it('stops every open connection with its reason, and hands later requests a signal already stopped', async () => {
    const { server, url, next } = await holdingServer();
    servers.push(server);
    const signals = new ConnectionSignals();
    const pending = [next(), request(url).catch(() => undefined)] as const;
    const response = await pending[0];
    const signal = signals.of(response);

    const reason = new UnavailableError('The gateway is shutting down.', 'server_shutting_down');
    signals.stopAll(reason);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);

    const later = next();
    const laterCall = request(url).catch(() => undefined);
    const laterSignal = signals.of(await later);
    expect(laterSignal.aborted).toBe(true);
    expect(laterSignal.reason).toBe(reason);
    response.end();
    (await later).end();
    await Promise.all([pending[1], laterCall]);
  });
});
