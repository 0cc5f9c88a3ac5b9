import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBareProxy } from './bare-proxy.js';
import { startMinimalUpstream } from './minimal-upstream.js';

const servers: Server[] = [];
const urlOf = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

function post(base: string, body: string) {
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
}

afterAll(async () => {
  for (const server of servers.reverse()) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

describe('bare proxy', () => {
  let upstream = '';
  let proxy = '';
  beforeAll(async () => {
    const upstreamServer = await startMinimalUpstream({ chunkDelayMs: 1, chunks: 5 });
    servers.push(upstreamServer);
    upstream = urlOf(upstreamServer);
    const proxyServer = await startBareProxy({ upstream, port: 0, connections: 4 });
    servers.push(proxyServer);
    proxy = urlOf(proxyServer);
  });

  it.each([
    ['whole', JSON.stringify({ model: 'm', messages: [] })],
    ['streamed', JSON.stringify({ model: 'm', messages: [], stream: true, stream_options: { include_usage: true } })],
    ['refused', '[1]'],
  ])('relays a %s answer byte for byte, with its status and content type', async (_, body) => {
    const direct = await post(upstream, body);
    const proxied = await post(proxy, body);
    expect(proxied.status).toBe(direct.status);
    expect(proxied.headers.get('content-type')).toBe(direct.headers.get('content-type'));
    expect(await proxied.text()).toBe(await direct.text());
  });

  it('answers 502 when the upstream is gone', async () => {
    const orphan = await startBareProxy({ upstream: 'http://127.0.0.1:1', port: 0, connections: 1 });
    servers.push(orphan);
    const response = await post(urlOf(orphan), '{}');
    expect(response.status).toBe(502);
  });
});
