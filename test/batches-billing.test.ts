/**
 * Batch lines that take more than one attempt, and batches whose key stops being valid, through the official SDK:
 * a line refused for a while (429) or cut by a graceful shutdown is billed exactly once, when it succeeds, under its
 * line's request id (the one its output line reports); every refused or cut attempt stays visible in the request
 * log under an id of its own. A revoked or expired key runs no further line: the rest of its batch fails line by
 * line with the online 401 code, and what had finished stays in the output file.
 */
import path from 'node:path';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countPromptTokens } from '../src/metering/token-counter.js';
import type { RequestLogRecord } from '../src/store/store.js';
import {
  chatLine,
  decimalToNano,
  type InputLine,
  isFinal,
  listNano,
  pricedFleetWith,
  readJsonl,
  slowUpstream,
  startChatBatch,
  waitForBatch,
} from './support/batch-fixtures.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

const config = { ...pricedFleetWith([slowUpstream]), batch: { batch_concurrency: 2, poll_interval_ms: 20 } };

/** What the tenant's wallet lost, nano-yuan (it started with `credit` yuan). */
async function spent(harness: TestGateway, tenantId: string, credit: string): Promise<bigint> {
  const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
  expect(balance.body.reserved).toBe('0');
  return decimalToNano(credit) - decimalToNano(balance.body.balance);
}

async function requestLog(harness: TestGateway, tenantId: string): Promise<RequestLogRecord[]> {
  await harness.gateway.settled();
  return harness.gateway.store.listRequestLogs({ tenantId, limit: 10_000 });
}

describe('a batch line that takes more than one attempt', () => {
  let harness: TestGateway;
  beforeAll(async () => {
    harness = await startTestGateway(config);
  });
  afterAll(async () => harness?.close());

  it('is billed once when a retry succeeds after 429s; each refused attempt is logged under its own id', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    // One request at a time: of the two lines the runner hands over at once, one is refused (429) and retried.
    expect((await harness.admin('PUT', `/tenants/${tenantId}/plan`, { concurrency: 1 })).status).toBe(200);
    const client = harness.client(key);
    const input = Array.from({ length: 6 }, (_, index) => chatLine(`rl-${index}`, 'sim-pro-32k', 3 + index));
    const created = await startChatBatch(client, input);
    const batch = await waitForBatch(client, created.id, isFinal);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 6, completed: 6, failed: 0 });

    const output = await readJsonl(client, batch.output_file_id!);
    let expected = 0n;
    for (const [index, line] of input.entries()) {
      const result = output.find((entry) => entry.custom_id === line.custom_id);
      expect(result.response.request_id).toBe(`${batch.id}_${index}`);
      expected += listNano(countPromptTokens('chat', line.body), line.body.max_tokens as number);
    }
    expect(await spent(harness, tenantId, '10')).toBe(expected / 2n);

    const log = await requestLog(harness, tenantId);
    for (const index of input.keys()) {
      // The line's own id holds the success that was billed, with its usage.
      const row = log.find((entry) => entry.requestId === `${batch.id}_${index}`);
      expect(row).toMatchObject({ status: 200, completionTokens: input[index]!.body.max_tokens });
    }
    const refused = log.filter((entry) => entry.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    for (const entry of refused) {
      expect(entry.requestId).toMatch(new RegExp(`^${batch.id}_\\d+_attempt\\d+$`));
      expect(entry.completionTokens).toBe(0);
    }
    expect(new Set(log.map((entry) => entry.requestId)).size).toBe(log.length);
  });

  it('is billed once when the gateway shuts down mid-line and runs it again after restart', async () => {
    const first = await startTestGateway(config);
    const storeUrl = `sqlite://${path.join(first.dataDir, 'tollgate.db')}`;
    let second: TestGateway | undefined;
    try {
      const { key, tenantId } = await first.createTenantWithKey({ credit: '10' });
      const input = Array.from({ length: 6 }, (_, index) => chatLine(`cut-${index}`, 'sim-slow', 40));
      const created = await startChatBatch(first.client(key), input);
      // Two lines run at a time for ~0.8 s: once one has finished, the next two are mid-way.
      await waitForBatch(first.client(key), created.id, (batch) => (batch.request_counts?.completed ?? 0) >= 1);
      await first.close();

      second = await startTestGateway(config, {}, { storeUrl });
      const client = second.client(key);
      const batch = await waitForBatch(client, created.id, isFinal);
      expect(batch.status).toBe('completed');
      expect(batch.request_counts).toEqual({ total: 6, completed: 6, failed: 0 });
      const output = await readJsonl(client, batch.output_file_id!);
      expect(output).toHaveLength(6);
      for (const line of output) {
        expect(line.response.request_id).toBe(`${batch.id}_${line.custom_id.slice('cut-'.length)}`);
      }

      const prompt = countPromptTokens('chat', input[0]!.body);
      expect(await spent(second, tenantId, '10')).toBe((listNano(prompt, 40) * 6n) / 2n);
      const log = await requestLog(second, tenantId);
      for (const index of input.keys()) {
        expect(log.find((entry) => entry.requestId === `${batch.id}_${index}`)).toMatchObject({
          status: 200,
          completionTokens: 40,
        });
      }
      // The cut attempts are in the log, unbilled, under ids of their own.
      const cut = log.filter((entry) => entry.status === 499);
      expect(cut.length).toBeGreaterThan(0);
      for (const entry of cut) {
        expect(entry.requestId).toMatch(new RegExp(`^${batch.id}_\\d+_attempt\\d+$`));
        expect(entry.completionTokens).toBe(0);
      }
    } finally {
      await second?.close();
      await first.close();
    }
  });
});

describe('a batch whose key stops being valid', () => {
  let harness: TestGateway;
  beforeAll(async () => {
    harness = await startTestGateway(config);
  });
  afterAll(async () => harness?.close());

  /** A batch of slow lines created with `key`; polled and read with another key of the tenant. */
  async function slowBatch(key: string, tenantId: string, lines: number) {
    const input = Array.from({ length: lines }, (_, index) => chatLine(`line-${index}`, 'sim-slow', 40));
    const created = await startChatBatch(harness.client(key), input);
    const other = await harness.admin('POST', `/tenants/${tenantId}/keys`, {});
    return { input, created, reader: harness.client(other.body.key) };
  }

  /**
   * Checks a batch whose key stopped being valid at `stoppedAt` (epoch ms): the lines finished before stay in the
   * output file and are billed, the rest fail with `code`, and no line was handed to the gateway after.
   */
  async function expectStoppedBy(
    reader: OpenAI,
    batch: OpenAI.Batches.Batch,
    tenantId: string,
    input: readonly InputLine[],
    code: string,
    stoppedAt: number,
  ): Promise<void> {
    expect(batch.status).toBe('completed');
    const done = batch.request_counts!.completed;
    expect(done).toBeGreaterThanOrEqual(1);
    expect(done).toBeLessThan(input.length);
    expect(batch.request_counts).toEqual({ total: input.length, completed: done, failed: input.length - done });
    expect(await readJsonl(reader, batch.output_file_id!)).toHaveLength(done);
    const errors = await readJsonl(reader, batch.error_file_id!);
    expect(errors).toHaveLength(input.length - done);
    for (const line of errors) expect(line).toMatchObject({ response: null, error: { code } });
    const prompt = countPromptTokens('chat', input[0]!.body);
    expect(await spent(harness, tenantId, '10')).toBe((listNano(prompt, 40) * BigInt(done)) / 2n);
    // Lines running when the key stopped finish, as online requests do; none starts later (a pass that read the key
    // just before may still hand its lines over: a few ms).
    const lines = (await requestLog(harness, tenantId)).filter((entry) => entry.requestId.startsWith(batch.id));
    expect(lines.filter((entry) => entry.createdAt > stoppedAt + 200)).toEqual([]);
  }

  it('fails the remaining lines with revoked_api_key once the key is revoked', async () => {
    const { key, keyId, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const { input, created, reader } = await slowBatch(key, tenantId, 10);
    await waitForBatch(reader, created.id, (batch) => (batch.request_counts?.completed ?? 0) >= 1);
    expect((await harness.admin('DELETE', `/keys/${keyId}`)).status).toBe(200);
    const revokedAt = Date.now();
    const batch = await waitForBatch(reader, created.id, isFinal);
    await expectStoppedBy(reader, batch, tenantId, input, 'revoked_api_key', revokedAt);
  });

  it('fails the remaining lines with expired_api_key once the key has expired', async () => {
    const expiresAt = Math.ceil(Date.now() / 1000) + 2;
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10', expires_at: expiresAt });
    const { input, created, reader } = await slowBatch(key, tenantId, 16);
    const batch = await waitForBatch(reader, created.id, isFinal);
    await expectStoppedBy(reader, batch, tenantId, input, 'expired_api_key', expiresAt * 1000);
  });
});
