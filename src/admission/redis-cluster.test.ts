import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type TranspiledTree, transpileForChild } from '../store/transpile-for-child.js';
import type { AcquireRequest, AdmissionStore } from './admission-store.js';
import type { Limits } from './limits.js';
import { type AdmissionLogger, createRedisAdmissionStore, type RedisAdmissionStore } from './redis-admission-store.js';

const SHARED_REDIS = 'redis://127.0.0.1:6379';
const prefix = `tgtest:cluster:${process.pid}:${Math.random().toString(36).slice(2, 10)}:`;

async function deleteKeys(url: string, keyPrefix: string): Promise<void> {
  const client = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    await client.quit();
  }
}

interface HammerReport {
  admitted: number[];
  attempts: number;
}

describe('cluster: 4 gateway processes sharing one Redis', () => {
  let tree: TranspiledTree;
  beforeAll(async () => {
    tree = await transpileForChild(['src/admission/acquire-hammer.child.ts']);
  });
  afterAll(async () => {
    await tree.remove();
    await deleteKeys(SHARED_REDIS, prefix);
  });

  const hammer = async (limits: Limits, windowMs: number, bucketMs: number, durationMs: number) => {
    const tenantId = `ten_${Math.random().toString(36).slice(2, 10)}`;
    const startAt = Date.now() + 1500;
    const argument = JSON.stringify({
      redisUrl: SHARED_REDIS,
      keyPrefix: prefix,
      tenantId,
      limits,
      windowMs,
      bucketMs,
      startAt,
      endAt: startAt + durationMs,
      parallel: 4,
    });
    return Promise.all(
      Array.from({ length: 4 }, async (): Promise<HammerReport> => {
        const child = spawn(process.execPath, [tree.pathOf('src/admission/acquire-hammer.child.ts'), argument], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
        });
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
        });
        const [code] = await once(child, 'exit');
        if (code !== 0) throw new Error(`hammer exited with ${code}: ${stderr}`);
        return JSON.parse(stdout) as HammerReport;
      }),
    );
  };

  it('hold a 600 RPM limit: the limit passes within the minute, never more', async () => {
    const reports = await hammer({ rpm: 600 }, 60_000, 1000, 2000);
    const total = reports.reduce((sum, report) => sum + report.admitted.length, 0);
    expect(total).toBeLessThanOrEqual(600);
    expect(total).toBeGreaterThanOrEqual(594);
    // Every process competed and was refused: the limit, not the offered load, bounded the total.
    for (const report of reports) expect(report.attempts).toBeGreaterThan(report.admitted.length);
    expect(reports.reduce((sum, report) => sum + report.attempts, 0)).toBeGreaterThan(1200);
  });

  it('hold a sliding limit over several windows (60 per 2 s in 100 ms buckets): no 2 s interval above it', async () => {
    const windowMs = 2000;
    const reports = await hammer({ rpm: 60 }, windowMs, 100, 4500);
    const times = reports.flatMap((report) => report.admitted).sort((a, b) => a - b);
    let busiest = 0;
    let end = 0;
    for (let start = 0; start < times.length; start++) {
      while (end < times.length && times[end]! < times[start]! + windowMs) end++;
      busiest = Math.max(busiest, end - start);
    }
    expect(busiest).toBeLessThanOrEqual(60);
    expect(busiest).toBeGreaterThanOrEqual(60 * 0.99);
    // Budget came back and was used again: at least two windows' worth.
    expect(times.length).toBeGreaterThanOrEqual(120);
  });
});

describe('Redis stopped mid-test', () => {
  /**
   * The stores' command timeout, ms: longer than a loaded host's stall, so no command times out unless Redis is hung,
   * and so "at once" below (well under it) cannot be a command that waited for its timeout.
   */
  const COMMAND_TIMEOUT_MS = 3_000;
  let server: ChildProcess | undefined;
  let port = 0;
  let url = '';
  const stores: RedisAdmissionStore[] = [];
  const closedLogger = { warn: vi.fn(), info: vi.fn() };
  const openLogger = { warn: vi.fn(), info: vi.fn() };
  let closedStore: RedisAdmissionStore;
  let openStore: RedisAdmissionStore;
  let otherOpenStore: RedisAdmissionStore;

  const startRedis = async (): Promise<void> => {
    server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      {
        stdio: 'ignore',
      },
    );
    const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null });
    probe.on('error', () => {});
    await probe.connect().catch(() => {});
    await probe.ping();
    probe.disconnect();
  };
  const stopRedis = async (): Promise<void> => {
    const running = server;
    if (running === undefined || running.exitCode !== null) return;
    running.kill('SIGCONT');
    running.kill('SIGKILL');
    await once(running, 'exit');
    server = undefined;
  };
  const request = (tenantId: string, limits: Limits = { rpm: 1000 }): AcquireRequest => ({
    tenantId,
    scopes: [{ id: `tenant:${tenantId}`, limits }],
    tokens: 1,
    leaseMs: 5000,
  });
  /** Retries `acquire` until the store answers from Redis again. */
  const untilRecovered = async (store: RedisAdmissionStore): Promise<void> => {
    const deadline = performance.now() + 10_000;
    for (;;) {
      try {
        await store.acquire(request('ten_warmup'));
        if (!store.unavailable) return;
      } catch {
        // Still down (fail-closed): keep polling.
      }
      if (performance.now() > deadline) throw new Error('the store did not recover within 10 s');
      await sleep(100);
    }
  };

  beforeAll(async () => {
    port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
      });
    });
    url = `redis://127.0.0.1:${port}`;
    await startRedis();
    const open = async (policy: 'closed' | 'open', logger: AdmissionLogger) => {
      const store = await createRedisAdmissionStore({
        redis: url,
        failurePolicy: policy,
        logger,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        // During an outage a request comes to Redis only once per interval: the fail-closed store's comes no sooner
        // than a stalled test's next request (which must fail at once, not wait for a timeout).
        probeIntervalMs: policy === 'closed' ? COMMAND_TIMEOUT_MS : 500,
      });
      stores.push(store);
      return store;
    };
    closedStore = await open('closed', closedLogger as unknown as AdmissionLogger);
    openStore = await open('open', openLogger as unknown as AdmissionLogger);
    otherOpenStore = await open('open', { warn: vi.fn(), info: vi.fn() } as unknown as AdmissionLogger);
  });

  afterAll(async () => {
    for (const store of stores) await store.close();
    await stopRedis();
  });

  it('a hung Redis makes acquire fail after the command timeout, not hang', async () => {
    expect((await closedStore.acquire(request('ten_hang'))).ok).toBe(true);
    server!.kill('SIGSTOP');
    try {
      const started = performance.now();
      await expect(closedStore.acquire(request('ten_hang'))).rejects.toMatchObject({
        code: 'admission_store_unavailable',
        status: 503,
      });
      // One command timeout, then a failure, with room for a stalled machine: not a hang.
      expect(performance.now() - started).toBeLessThan(COMMAND_TIMEOUT_MS + 5_000);
      // During the outage further requests fail at once, without waiting for another timeout.
      const again = performance.now();
      await expect(closedStore.acquire(request('ten_hang'))).rejects.toMatchObject({
        code: 'admission_store_unavailable',
      });
      expect(performance.now() - again).toBeLessThan(1_000);
    } finally {
      server!.kill('SIGCONT');
    }
    await untilRecovered(closedStore);
  });

  it('fail-closed refuses with the distinct error and fail-open admits on per-process limits', async () => {
    closedLogger.warn.mockClear();
    openLogger.warn.mockClear();
    const held = await closedStore.acquire(request('ten_held', { rpm: 1000, concurrency: 5 }));
    if (!held.ok) throw new Error('expected an admission');
    await untilRecovered(openStore);
    await untilRecovered(otherOpenStore);

    await stopRedis();

    const started = performance.now();
    for (let i = 0; i < 5; i++) {
      await expect(closedStore.acquire(request('ten_closed'))).rejects.toMatchObject({
        code: 'admission_store_unavailable',
        status: 503,
      });
    }
    // Not one of them waited for a command timeout.
    expect(performance.now() - started).toBeLessThan(COMMAND_TIMEOUT_MS);
    // A request no scope limits needs no counter, so not even fail-closed refuses it.
    expect((await closedStore.acquire({ tenantId: 'ten_free', scopes: [], tokens: 5, leaseMs: 1000 })).ok).toBe(true);
    // Settling a ticket Redis issued does not throw while Redis is gone; the lease expires by itself.
    await closedStore.reconcile(held.ticket, 0);
    await closedStore.release(held.ticket);

    const limits = { rpm: 3 };
    const admitted = async (store: AdmissionStore): Promise<number> => {
      let count = 0;
      for (let i = 0; i < 10; i++) if ((await store.acquire(request('ten_open', limits))).ok) count++;
      return count;
    };
    // Each process enforces the limit on its own: 3 each, not 3 in total.
    expect(await admitted(openStore)).toBe(3);
    expect(await admitted(otherOpenStore)).toBe(3);
    expect(await openStore.acquire(request('ten_open', limits))).toMatchObject({ ok: false, reason: 'rpm' });

    expect(openLogger.warn).toHaveBeenCalledTimes(1);
    const outageWarnings = closedLogger.warn.mock.calls.filter((call) => String(call[1]).includes('refusing requests'));
    expect(outageWarnings).toHaveLength(1);
  });

  it('returns to the shared counters when Redis is back', async () => {
    openLogger.info.mockClear();
    await startRedis();
    await untilRecovered(closedStore);
    await untilRecovered(openStore);
    await untilRecovered(otherOpenStore);
    expect(openLogger.info).toHaveBeenCalledTimes(1);

    const limits = { rpm: 3 };
    let passed = 0;
    for (const store of [openStore, otherOpenStore, openStore, otherOpenStore, closedStore]) {
      if ((await store.acquire(request('ten_back', limits))).ok) passed++;
    }
    // Shared again: 3 in total across the three processes.
    expect(passed).toBe(3);
  });
});
