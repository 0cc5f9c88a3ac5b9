import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad, summarizeSamples } from './load.js';
import { startMinimalUpstream } from './minimal-upstream.js';

describe('summarizeSamples', () => {
  it('computes nearest-rank percentiles, mean and max', () => {
    // 1..1000 shuffled: the p-th percentile by nearest rank is exactly p * 10.
    const values = Array.from({ length: 1000 }, (_, index) => index + 1).sort(() => Math.random() - 0.5);
    const summary = summarizeSamples(Float64Array.from(values));
    expect(summary).toEqual({ count: 1000, mean: 500.5, p50: 500, p90: 900, p99: 990, p999: 999, max: 1000 });
  });

  it('returns NaN statistics for no samples', () => {
    const summary = summarizeSamples(new Float64Array(0));
    expect(summary.count).toBe(0);
    expect(summary.p50).toBeNaN();
  });
});

describe('runLoad against the minimal upstream', () => {
  let server: Server;
  let url = '';
  beforeAll(async () => {
    server = await startMinimalUpstream();
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('rate mode sends the offered number of requests and sees every stream end with [DONE]', async () => {
    const result = await runLoad({
      mode: 'rate',
      url,
      headers: {},
      body: JSON.stringify({ model: 'm', stream: true }),
      durationSeconds: 1,
      warmupSeconds: 0,
      rate: 200,
      connections: 8,
    });
    expect(result.ok).toBe(200);
    expect(result.errors + result.non2xx + (result.incompleteStreams ?? 0)).toBe(0);
    expect(result.latency.count).toBe(200);
    expect(result.sentRate).toBe(200);
    expect(result.latency.p50).toBeGreaterThan(0);
    expect(result.latency.p50).toBeLessThanOrEqual(result.latency.p99);
  });

  it('rate mode counts a wrong endpoint as non-2xx, not as a success', async () => {
    const result = await runLoad({
      mode: 'rate',
      url: url.replace('/chat/completions', '/nothing'),
      headers: {},
      body: '{}',
      durationSeconds: 0.5,
      warmupSeconds: 0,
      rate: 100,
      connections: 4,
    });
    expect(result.ok).toBe(0);
    expect(result.non2xx).toBe(50);
  });

  it('max mode measures throughput from the 2xx responses it timed', async () => {
    const result = await runLoad({
      mode: 'max',
      url,
      headers: {},
      body: JSON.stringify({ model: 'm' }),
      durationSeconds: 1,
      warmupSeconds: 0,
      connections: 4,
    });
    expect(result.ok).toBeGreaterThan(100);
    expect(result.latency.count).toBe(result.ok);
    expect(result.throughput).toBeCloseTo(result.ok / result.elapsedSeconds, 6);
  });
});
