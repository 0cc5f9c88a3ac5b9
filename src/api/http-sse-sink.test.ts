import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { chunksOf } from '../../test/support/chunked-body.js';
import { HttpSseSink } from './http-sse-sink.js';

/** A server whose one response is handed to the test, and a raw client that sees the chunked encoding as sent. */
async function openResponse(): Promise<{
  response: ServerResponse;
  socket: Socket;
  raw: () => string;
  server: Server;
}> {
  let handed: (response: ServerResponse) => void = () => {};
  const responded = new Promise<ServerResponse>((resolve) => {
    handed = resolve;
  });
  const server = createServer((_request, response) => handed(response));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const socket = connect(port, '127.0.0.1');
  let received = '';
  socket.setEncoding('latin1');
  socket.on('data', (text: string) => {
    received += text;
  });
  socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  return { response: await responded, socket, raw: () => received, server };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('HttpSseSink', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("sends one turn's events as one chunk, and what is left with the end", async () => {
    const { response, socket, raw, server } = await openResponse();
    servers.push(server);
    const sink = new HttpSseSink(response);
    sink.open({ 'x-request-id': 'req_1' });
    for (let index = 0; index < 20; index++) expect(sink.write(`data: {"n":${index}}\n\n`)).toBeUndefined();
    await turn();
    await turn();
    sink.write('data: {"n":20}\n\n');
    sink.write('data: [DONE]\n\n');
    sink.end();
    await new Promise<void>((resolve) => {
      const check = () => (raw().endsWith('0\r\n\r\n') ? resolve() : setTimeout(check, 5));
      check();
    });
    socket.destroy();
    expect(raw()).toContain('x-request-id: req_1');
    const chunks = chunksOf(raw());
    expect(chunks).toHaveLength(2);
    expect(chunks[0]).toBe(Array.from({ length: 20 }, (_, index) => `data: {"n":${index}}\n\n`).join(''));
    expect(chunks[1]).toBe('data: {"n":20}\n\ndata: [DONE]\n\n');
  });

  it('sends held events with the end in one write, or a turn later when the end does not come', async () => {
    const { response, socket, raw, server } = await openResponse();
    servers.push(server);
    const sink = new HttpSseSink(response);
    sink.open({});
    sink.write('data: {"n":0}\n\n');
    sink.holdForEnd();
    // The tail comes when the settlement is durable: later in the same turn.
    setImmediate(() => {
      sink.write('data: [DONE]\n\n');
      sink.end();
    });
    const other = await openResponse();
    servers.push(other.server);
    const late = new HttpSseSink(other.response);
    late.open({});
    late.write('data: {"n":0}\n\n');
    late.holdForEnd();
    await new Promise<void>((resolve) => {
      const check = () =>
        raw().endsWith('0\r\n\r\n') && chunksOf(other.raw()).length === 1 ? resolve() : setTimeout(check, 5);
      check();
    });
    expect(chunksOf(raw())).toEqual(['data: {"n":0}\n\ndata: [DONE]\n\n']);
    expect(chunksOf(other.raw())).toEqual(['data: {"n":0}\n\n']);
    late.end();
    socket.destroy();
    other.socket.destroy();
  });

  it('asks the relay to wait once the client stops reading, and resolves when it reads again', async () => {
    const { response, socket, server } = await openResponse();
    servers.push(server);
    socket.pause();
    const sink = new HttpSseSink(response);
    sink.open({});
    const event = `data: ${'x'.repeat(16 * 1024)}\n\n`;
    // Write as a relay does, waiting whenever the sink asks, until a wait does not end: the client holds the stream.
    let held: Promise<void> | undefined;
    let written = 0;
    while (held === undefined && written < 10_000) {
      const pending = sink.write(event);
      written += 1;
      if (pending === undefined) {
        if (written % 4 === 0) await turn();
        continue;
      }
      const waited = await Promise.race([
        pending.then(() => 'drained'),
        new Promise((resolve) => setTimeout(resolve, 200, 'held')),
      ]);
      if (waited === 'held') held = pending;
    }
    expect(held).toBeInstanceOf(Promise);
    // Kernel buffers hold some megabytes at most; a sink without backpressure would take all 10,000 events (160 MB).
    expect(written).toBeLessThan(2_000);
    socket.resume();
    await held;
    socket.destroy();
  });

  it('drops what a disconnected client would have got, and says it is closed', async () => {
    const { response, socket, server } = await openResponse();
    servers.push(server);
    const sink = new HttpSseSink(response);
    let told = 0;
    sink.onClose(() => {
      told += 1;
    });
    sink.open({});
    sink.write('data: {}\n\n');
    socket.destroy();
    await new Promise<void>((resolve) => response.once('close', () => resolve()));
    expect(sink.closed).toBe(true);
    expect(told).toBe(1);
    expect(sink.write('data: {}\n\n')).toBeUndefined();
    sink.end();
    await turn();
  });
});
