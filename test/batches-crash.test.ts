/**
 * Batch durability under `kill -9`: `tollgate serve` runs a batch of a few hundred lines on a slow simulated fleet,
 * is killed mid-way, restarted; the batch completes with exactly one output line per input line, one usage event per
 * line (request id `<batchId>_<index>`), and the wallet moved by exactly their sum (half the list price).
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import OpenAI, { toFile } from 'openai';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KyselyBatchStore } from '../src/batch/kysely-batch-store.js';
import { createStore } from '../src/store/create-store.js';
import { KyselyStore } from '../src/store/kysely-store.js';
import { jsonl, waitForBatch } from './support/batch-fixtures.js';
import { demoKeyOf, killHard, requireBuiltCli, serve, workspace } from './support/cli-process.js';
import { slowPricedSimulatedConfig } from './support/test-gateway.js';

const children: ChildProcess[] = [];
beforeAll(requireBuiltCli);
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** Its own deadlines (20 s before the kill, 30 s after) and two starts exceed the default 30 s per test. */
const TEST_TIMEOUT_MS = 120_000;

const LINES = 240;
const MAX_TOKENS = 20;

/** ~10 ms per decode step: a 20-token line takes ~0.2 s, 16 at a time, so the batch runs for a few seconds. */
const slowFleet = {
  ...slowPricedSimulatedConfig,
  log: { level: 'warn' },
  batch: { concurrency: 16, batch_concurrency: 16, poll_interval_ms: 20 },
};

describe('kill -9 in the middle of a batch', { timeout: TEST_TIMEOUT_MS }, () => {
  it('continues after restart: no line lost or doubled, one usage event per line, billing exact', async () => {
    const dir = workspace(slowFleet);
    const first = await serve(dir, children);
    const key = demoKeyOf(first.banner);
    const client = new OpenAI({ baseURL: `${first.url}/v1`, apiKey: key, maxRetries: 0 });
    const input = Array.from({ length: LINES }, (_, index) => ({
      custom_id: `crash-${index}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: {
        model: 'sim-pro-32k',
        messages: [{ role: 'user', content: `Line ${index} ${'word '.repeat(index % 9)}` }],
        max_tokens: MAX_TOKENS,
      },
    }));
    const content = jsonl(input);
    const file = await client.files.create({
      file: await toFile(Buffer.from(content), 'crash.jsonl'),
      purpose: 'batch',
    });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });

    const before = await waitForBatch(client, created.id, (batch) => batch.request_counts!.completed >= 40, 20_000);
    await killHard(first.child);
    expect(before.status).toBe('in_progress');
    expect(before.request_counts!.completed).toBeLessThan(LINES / 2);

    const second = await serve(dir, children);
    const again = new OpenAI({ baseURL: `${second.url}/v1`, apiKey: key, maxRetries: 0 });
    const batch = await waitForBatch(again, created.id, (entry) => entry.status === 'completed', 30_000);
    expect(batch.request_counts).toEqual({ total: LINES, completed: LINES, failed: 0 });

    const output = (await (await again.files.content(batch.output_file_id!)).text())
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line));
    expect(output).toHaveLength(LINES);
    const customIds = output.map((line) => line.custom_id as string);
    expect(new Set(customIds).size).toBe(LINES);
    expect([...customIds].sort()).toEqual(input.map((line) => line.custom_id).sort());

    // Half the list price of sim-pro-32k (0.8 / 2 yuan per million = 800 / 2000 nano-yuan per token), per line.
    let expected = 0n;
    for (const line of output) {
      const usage = line.response.body.usage as { prompt_tokens: number; completion_tokens: number };
      expect(usage.completion_tokens).toBe(MAX_TOKENS);
      expected += (BigInt(usage.prompt_tokens) * 800n + BigInt(usage.completion_tokens) * 2000n) / 2n;
    }

    // A billing read waits until every settlement so far is committed (responses only wait for the journal), so the
    // store read after the kill sees them all.
    const balance = await fetch(`${second.url}/v1/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
    expect(balance.status).toBe(200);
    for (const child of children.splice(0)) child.kill('SIGKILL');
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    try {
      const events = await store.listUsageEvents({ start: 0, end: Date.now() + 1, limit: 100_000 });
      const batchEvents = events.filter((event) => event.requestId.startsWith(`${batch.id}_`));
      expect(batchEvents).toHaveLength(LINES);
      expect(new Set(batchEvents.map((event) => event.requestId)).size).toBe(LINES);
      for (const event of batchEvents) expect(event.batch).toBe(true);
      expect(events).toHaveLength(LINES);
      const spent = batchEvents.reduce((sum, event) => sum + event.amount, 0n);
      expect(spent).toBe(expected);
      const wallet = await store.getWallet(batchEvents[0]!.tenantId);
      expect(wallet?.balance).toBe(10_000_000_000n - spent);
      expect(wallet?.reserved).toBe(0n);
      // The kill really interrupted lines: those running then were run again after the restart (billed once).
      if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
      const lines = await new KyselyBatchStore(store.kysely).listLines(batch.id, 0, LINES);
      expect(lines.filter((line) => line.attempts > 1).length).toBeGreaterThan(0);
      expect(lines.every((line) => line.state === 'succeeded')).toBe(true);
    } finally {
      await store.close();
    }
  });
});
