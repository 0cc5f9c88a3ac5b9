/**
 * `server.workers: 2` on one SQLite file: both workers journal their settlements and commit them in the background,
 * yet a billing read served by either worker sees every request that ended before it (a settle round through the
 * primary), and a worker killed with SIGKILL loses nothing: its replacement settles what it journaled.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { processTreeRss } from '../bench/process-tree-stats.js';
import {
  demoKeyOf,
  expectRevokedOnEveryWorkerAtOnce,
  requireBuiltCli,
  serve,
  shortQuestions,
  workspace,
} from './support/cli-process.js';
import { pricedSimulatedConfig, slowPricedSimulatedConfig } from './support/test-gateway.js';

const children: ChildProcess[] = [];
beforeAll(requireBuiltCli);
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** Starting a primary and two workers, twice on a loaded CI host, takes longer than the default 30 s. */
const TEST_TIMEOUT_MS = 90_000;
const REQUESTS = 24;

/** The child processes of `pid` (the cluster's workers). */
function childrenOf(pid: number): number[] {
  return processTreeRss(pid)
    .processes.filter((entry) => entry.parent === pid)
    .map((entry) => entry.pid);
}

/** What a tenant's billing reads show: its balance, what is reserved, and the requests in its usage. */
async function billingView(url: string, key: string): Promise<{ balance: string; reserved: string; requests: number }> {
  const headers = { authorization: `Bearer ${key}` };
  const balance = (await (await fetch(`${url}/v1/billing/balance`, { headers })).json()) as {
    balance: string;
    reserved: string;
  };
  const start = Math.floor(Date.now() / 1000) - 3600;
  const usage = (await (await fetch(`${url}/v1/usage?start_time=${start}&bucket_width=1h`, { headers })).json()) as {
    data: { results: { num_model_requests: number }[] }[];
  };
  const requests = usage.data.flatMap((bucket) => bucket.results).reduce((sum, row) => sum + row.num_model_requests, 0);
  return { balance: balance.balance, reserved: balance.reserved, requests };
}

/**
 * `count` stories asked for at once, each through a client of its own (its own connection: the primary hands them to
 * both workers in turn), streamed or whole, read to the end; resolves with how many failed (a worker died under them).
 */
async function slowStories(
  url: string,
  key: string,
  count: number,
  options: { stream: boolean; maxTokens: number },
): Promise<number> {
  const outcomes = await Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
      const request = {
        model: 'sim-pro-32k',
        messages: [{ role: 'user' as const, content: `Tell me story ${index}.` }],
        max_tokens: options.maxTokens,
      };
      try {
        if (options.stream) {
          for await (const _chunk of await client.chat.completions.create({ ...request, stream: true })) {
            // Read to the end (or until the worker dies).
          }
        } else await client.chat.completions.create(request);
        return true;
      } catch {
        return false;
      }
    }),
  );
  return outcomes.filter((ok) => !ok).length;
}

/** Reads the billing view until `done` holds of it or `withinMs` passed; returns the last read. */
async function billingViewWhen(
  url: string,
  key: string,
  done: (view: Awaited<ReturnType<typeof billingView>>) => boolean,
  withinMs: number,
): Promise<Awaited<ReturnType<typeof billingView>>> {
  const deadline = Date.now() + withinMs;
  let view = await billingView(url, key);
  while (!done(view) && Date.now() < deadline) {
    await sleep(250);
    view = await billingView(url, key);
  }
  return view;
}

describe('two workers on one SQLite file', { timeout: TEST_TIMEOUT_MS }, () => {
  it("a billing read through either worker sees every request that ended before it, both workers' included", async () => {
    const dir = workspace({ ...pricedSimulatedConfig, server: { workers: 2 } });
    const served = await serve(dir, children);
    expect(childrenOf(served.child.pid!)).toHaveLength(2);
    // In-memory admission: the banner says limits are counted per worker.
    expect(served.banner).toContain('up to 2 times a limit');
    const ask = shortQuestions(served);
    const key = demoKeyOf(served.banner);
    for (let round = 0; round < 3; round++) {
      // Concurrent requests open several connections, which the primary hands to both workers in turn.
      await Promise.all(Array.from({ length: REQUESTS }, (_, index) => ask(index)));
      // Read at once: the last settlements are journaled, their commits still gathering.
      const first = await billingView(served.url, key);
      expect(first.requests).toBe(REQUESTS * (round + 1));
      // Every reservation is released in its settlement's transaction: none is left once all are committed.
      expect(Number(first.reserved)).toBe(0);
      // Nothing more arrives later: the first read already had it all.
      await sleep(300);
      expect(await billingView(served.url, key)).toEqual(first);
    }
  });

  it('a key revoked through one worker stops working in the other at once (through the primary)', async () => {
    const served = await serve(workspace({ ...pricedSimulatedConfig, server: { workers: 2 } }), children);
    const adminToken = /Admin token: (\S+)/.exec(served.banner)![1]!;
    // Revoked through whichever worker takes the admin connection; the other must drop its cached copy at once.
    await expectRevokedOnEveryWorkerAtOnce(served.url, adminToken, served.url);
  });

  it('a worker killed with SIGKILL loses nothing: its replacement settles its journal, once', async () => {
    const dir = workspace({ ...pricedSimulatedConfig, server: { workers: 2 } });
    const served = await serve(dir, children);
    let stderr = '';
    served.child.stderr?.on('data', (data: Buffer) => {
      stderr += data.toString();
    });
    const key = demoKeyOf(served.banner);
    const ask = shortQuestions(served);
    await Promise.all(Array.from({ length: REQUESTS }, (_, index) => ask(index)));
    // At once, while the last commits gather: what it journaled and did not commit dies with it.
    const [victim] = childrenOf(served.child.pid!);
    process.kill(victim!, 'SIGKILL');
    // The primary forks a replacement, which settles the dead worker's journal before it serves.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const workers = childrenOf(served.child.pid!);
      if (workers.length === 2 && !workers.includes(victim!)) break;
      await sleep(100);
    }
    const view = await billingViewWhen(served.url, key, (each) => each.requests >= REQUESTS, deadline - Date.now());
    expect(view.requests).toBe(REQUESTS);
    // Still serving, on both workers.
    await Promise.all(Array.from({ length: REQUESTS }, (_, index) => ask(index)));
    expect((await billingView(served.url, key)).requests).toBe(2 * REQUESTS);
    // No read waited out a settle round: a worker still starting up (it has served nothing) is not asked.
    expect(stderr).not.toContain('settle round');
  });

  it('bills the streams a killed worker was relaying from their checkpoints, through the surviving worker', async () => {
    // 100 tokens/s per stream and a checkpoint every 100 ms: stale after 3 s, looked for every second. The dead
    // worker's owner is swept at the survivor's next heartbeat (every 250 ms with a 1.5 s timeout): what it leased
    // beyond the streams' reservations goes back then.
    const dir = workspace({
      ...slowPricedSimulatedConfig,
      billing: { checkpoint_interval_ms: 100, reservation_owner_timeout_ms: 1_500 },
      server: { workers: 2 },
    });
    const served = await serve(dir, children);
    const key = demoKeyOf(served.banner);
    const streams = 6;
    const relayed = slowStories(served.url, key, streams, { stream: true, maxTokens: 400 });
    await sleep(1500);
    const [victim] = childrenOf(served.child.pid!);
    process.kill(victim!, 'SIGKILL');
    const broken = await relayed;
    expect(broken).toBeGreaterThan(0);
    expect(broken).toBeLessThan(streams);
    // The broken streams were checkpointed; the surviving worker (or the replacement) bills them once stale.
    const view = await billingViewWhen(
      served.url,
      key,
      (each) => each.requests >= streams && Number(each.reserved) === 0,
      30_000,
    );
    expect(view.requests).toBe(streams);
    // Their reservations were released with them.
    expect(Number(view.reserved)).toBe(0);
  });

  it('when the primary is killed its workers exit at once, and what they left is billed by the next start, once', async () => {
    const dir = workspace({
      ...slowPricedSimulatedConfig,
      billing: { checkpoint_interval_ms: 100 },
      server: { workers: 2 },
    });
    const first = await serve(dir, children);
    const key = demoKeyOf(first.banner);
    // Whole requests that ended (journaled; some commits may still be gathering when the primary dies) ...
    const done = 8;
    expect(await slowStories(first.url, key, done, { stream: false, maxTokens: 5 })).toBe(0);
    // ... and streams still running on both workers, checkpointed every 100 ms.
    const streams = 4;
    const relayed = slowStories(first.url, key, streams, { stream: true, maxTokens: 400 });
    await sleep(1_500);
    const workers = childrenOf(first.child.pid!);
    expect(workers).toHaveLength(2);
    first.child.kill('SIGKILL');
    // A worker whose primary is gone exits at once (node:cluster's own rule; an orphan would finish these streams),
    // so no orphan keeps a store connection or a batch runner alive, and the next start, which takes everything left
    // in the store as a dead process's, races nobody.
    expect(await relayed).toBe(streams);
    const deadline = Date.now() + 10_000;
    while (workers.some((pid) => existsSync(`/proc/${pid}`)) && Date.now() < deadline) await sleep(100);
    expect(workers.filter((pid) => existsSync(`/proc/${pid}`))).toEqual([]);

    // The next start settles the dead workers' journals, and their cut streams are billed from their checkpoints.
    const second = await serve(dir, children);
    const settled = await billingViewWhen(second.url, key, (view) => view.requests >= done + streams, 10_000);
    expect(settled.requests).toBe(done + streams);
    expect(Number(settled.reserved)).toBe(0);
    expect(Number(settled.balance)).toBeLessThan(10);
    // Once: a third start finds nothing left to bill.
    second.child.kill('SIGTERM');
    await new Promise((resolve) => second.child.once('exit', resolve));
    const third = await serve(dir, children);
    expect(await billingView(third.url, key)).toEqual(settled);
  });

  it("releases a killed worker's reservations at the survivor's next heartbeat, before the owner timeout", async () => {
    // 100 tokens/s: a 300-token answer takes 3 s.
    const dir = workspace({ ...slowPricedSimulatedConfig, server: { workers: 2 } });
    const served = await serve(dir, children);
    const key = demoKeyOf(served.banner);
    const requests = 6;
    const answered = slowStories(served.url, key, requests, { stream: false, maxTokens: 300 });
    await sleep(1_000);
    // In flight on both workers: every request holds its reservation.
    expect(Number((await billingView(served.url, key)).reserved)).toBeGreaterThan(0);
    const [victim] = childrenOf(served.child.pid!);
    process.kill(victim!, 'SIGKILL');
    const failed = await answered;
    expect(failed).toBeGreaterThan(0);
    expect(failed).toBeLessThan(requests);
    // Its process is gone: the surviving worker sweeps its owner at its next heartbeat (every 5 s), not after the
    // 30 s timeout. Before owners existed the reservations stayed until the whole gateway restarted.
    const view = await billingViewWhen(served.url, key, (each) => Number(each.reserved) === 0, 10_000);
    expect(Number(view.reserved)).toBe(0);
    expect(view.requests).toBe(requests - failed);
  });
});
