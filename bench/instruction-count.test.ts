import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BenchProcesses } from './bench-processes.js';
import { callgrindWrapper, dumpInstructions, sendRequests, zeroCounters } from './instruction-count.js';

const processes = new BenchProcesses();
afterAll(() => processes.stopAll());

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/x`;
}

describe('sendRequests', () => {
  it('sends exactly count requests, at most concurrency at once, and fails on a non-2xx answer', async () => {
    let received = 0;
    let open = 0;
    let mostOpen = 0;
    const server = createServer((request, response) => {
      received++;
      const index = received;
      open++;
      mostOpen = Math.max(mostOpen, open);
      request.resume();
      setTimeout(() => {
        open--;
        response.statusCode = index === 30 ? 500 : 200;
        response.end('{}');
      }, 2);
    });
    const url = await listen(server);
    try {
      await sendRequests({ url, headers: {}, body: '{}', count: 25, concurrency: 4 });
      expect(received).toBe(25);
      expect(mostOpen).toBe(4);
      await expect(sendRequests({ url, headers: {}, body: '{}', count: 10, concurrency: 2 })).rejects.toThrow(/500/);
    } finally {
      server.close();
    }
  });
});

describe('instructions counted under callgrind', () => {
  it('counts instructions in proportion to the requests sent between a zero and a dump', {
    timeout: 180_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tollgate-callgrind-test-'));
    try {
      const script = join(dir, 'server.mjs');
      await writeFile(
        script,
        "import { createServer } from 'node:http';\n" +
          "createServer((q, s) => { q.resume(); q.on('end', () => s.end('{}')); })" +
          ".listen(0, '127.0.0.1', function () { console.log(this.address().port); });\n",
      );
      const [command, ...args] = [...callgrindWrapper(dir), process.execPath, script];
      let resolvePort: (port: number) => void = () => {};
      const port = new Promise<number>((resolve) => {
        resolvePort = resolve;
      });
      const started = processes.spawn({
        name: 'callgrind-server',
        command: command!,
        args,
        cwd: dir,
        env: {},
        onLine: (line) => {
          if (/^\d+$/.test(line.trim())) resolvePort(Number(line.trim()));
        },
      });
      const url = `http://127.0.0.1:${await port}/v1/x`;
      const batch = (count: number) => ({ url, headers: {}, body: '{}', count, concurrency: 2 });
      await sendRequests(batch(100));
      await zeroCounters(started.pid);
      await sendRequests(batch(100));
      const hundred = (await dumpInstructions(started.pid, dir)).instructions;
      await sendRequests(batch(300));
      const threeHundred = (await dumpInstructions(started.pid, dir)).instructions;
      expect(hundred).toBeGreaterThan(100 * 10_000);
      // Each dump counts what ran since the one before: three times the requests, about three times the count.
      expect(threeHundred / hundred).toBeGreaterThan(2.2);
      expect(threeHundred / hundred).toBeLessThan(3.8);
    } finally {
      await processes.stopAll();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
