/**
 * Files and Batches API end to end through the official SDK: upload, batch, poll, download, exact batch-discounted
 * billing, cancellation and expiry of a slow batch, bad input (per-line errors and whole-file failures), tenant
 * isolation and the upload size limit.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countPromptTokens } from '../src/metering/token-counter.js';
import type { KyselyStore } from '../src/store/kysely-store.js';
import {
  chatBatch,
  chatLine,
  decimalToNano,
  hasStatus,
  isFinal,
  jsonl,
  listNano,
  pricedFleetWith,
  readJsonl,
  slowUpstream,
  startChatBatch,
  uploadInput,
  waitForBatch,
} from './support/batch-fixtures.js';
import { openAIErrors } from './support/openai-schema.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

const MAX_FILE_BYTES = 64 * 1024;
const MAX_LINE_BYTES = 2048;

const config = {
  ...pricedFleetWith([
    slowUpstream,
    // As slow, with one batch slot: the scheduler runs one line at a time and the runner's second line waits in its
    // queue.
    { ...slowUpstream, name: 'tiny', profile: { ...slowUpstream.profile, max_batch: 1 } },
  ]),
  batch: {
    max_file_bytes: MAX_FILE_BYTES,
    max_line_bytes: MAX_LINE_BYTES,
    completion_windows: ['24h', '4s'],
    batch_concurrency: 2,
    poll_interval_ms: 20,
  },
};

async function caught(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await promise;
  } catch (error: unknown) {
    return error as InstanceType<typeof OpenAI.APIError>;
  }
  throw new Error('expected an error');
}

let harness: TestGateway;
beforeAll(async () => {
  harness = await startTestGateway(config);
});
afterAll(async () => harness?.close());

describe('Files API', () => {
  it('uploads, lists, retrieves, downloads and deletes a file; objects match the OpenAPI schema', async () => {
    const { key } = await harness.createTenantWithKey();
    const client = harness.client(key);
    const content = jsonl([chatLine('a', 'sim-pro-32k', 3)]);
    const file = await uploadInput(client, content, 'mine.jsonl');
    expect(openAIErrors('OpenAIFile', file)).toEqual([]);
    expect(file).toMatchObject({ object: 'file', purpose: 'batch', filename: 'mine.jsonl' });
    expect(file.bytes).toBe(Buffer.byteLength(content));
    expect(await client.files.retrieve(file.id)).toEqual(file);
    const listed = await client.files.list();
    expect(listed.data.map((entry) => entry.id)).toEqual([file.id]);
    expect(await (await client.files.content(file.id)).text()).toBe(content);
    const deleted = await client.files.delete(file.id);
    expect(deleted).toEqual({ id: file.id, object: 'file', deleted: true });
    expect(openAIErrors('DeleteFileResponse', deleted)).toEqual([]);
    expect((await caught(client.files.retrieve(file.id))).status).toBe(404);
  });

  it('pages the list with limit and after', async () => {
    const { key } = await harness.createTenantWithKey();
    const client = harness.client(key);
    const ids: string[] = [];
    for (let index = 0; index < 3; index++) ids.push((await uploadInput(client, jsonl([chatLine('a', 'm', 1)]))).id);
    const response = await fetch(`${harness.url}/v1/files?limit=2`, { headers: { authorization: `Bearer ${key}` } });
    const page = (await response.json()) as { data: { id: string }[]; has_more: boolean; last_id: string };
    expect(openAIErrors('ListFilesResponse', page)).toEqual([]);
    expect(page.data).toHaveLength(2);
    expect(page.has_more).toBe(true);
    const rest = await fetch(`${harness.url}/v1/files?limit=2&after=${page.last_id}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    const second = (await rest.json()) as { data: { id: string }[]; has_more: boolean };
    expect(second.has_more).toBe(false);
    expect([...page.data, ...second.data].map((entry) => entry.id).sort()).toEqual([...ids].sort());
  });

  it('refuses an after cursor that names no file or batch of the list with 400 param after', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '1' });
    const other = await harness.createTenantWithKey({ credit: '1' });
    const client = harness.client(key);
    const otherClient = harness.client(other.key);
    const file = await uploadInput(client, jsonl([chatLine('a', 'sim-pro-32k', 1)]));
    const otherFile = await uploadInput(otherClient, jsonl([chatLine('a', 'sim-pro-32k', 1)]));
    const otherBatch = await chatBatch(otherClient, otherFile.id);
    expect((await client.files.list({ after: file.id })).data).toEqual([]);
    for (const after of ['file-nope', '', otherFile.id]) {
      const error = await caught(client.files.list({ after }));
      expect(error.status).toBe(400);
      expect(error).toMatchObject({ code: 'invalid_value', param: 'after' });
    }
    for (const after of ['batch_nope', otherBatch.id]) {
      const error = await caught(client.batches.list({ after }));
      expect(error.status).toBe(400);
      expect(error).toMatchObject({ code: 'invalid_value', param: 'after' });
    }
    for (const query of ['after=batch_nope', `tenant_id=${tenantId}&after=${otherBatch.id}`]) {
      const admin = await harness.admin('GET', `/batches?${query}`);
      expect(admin.status).toBe(400);
      expect(admin.body.error).toMatchObject({ code: 'invalid_value', param: 'after' });
    }
    // A cursor of another tenant's batch is fine for the admin list of every tenant.
    expect((await harness.admin('GET', `/batches?after=${otherBatch.id}`)).status).toBe(200);
  });

  it('takes a limit only as a decimal integer in range, as OpenAI does: 1e1, 0x10, +5 are a 400 param limit', async () => {
    const { key } = await harness.createTenantWithKey();
    const headers = { authorization: `Bearer ${key}` };
    const refused = async (path: string, limit: string, admin = false) => {
      const url = `${admin ? `${harness.url}/admin/v1` : harness.url}${path}?limit=${encodeURIComponent(limit)}`;
      const response = await fetch(url, {
        headers: { authorization: `Bearer ${admin ? harness.adminToken : key}` },
      });
      expect(response.status, url).toBe(400);
      const body = (await response.json()) as { error: unknown };
      expect(body.error, url).toMatchObject({ type: 'invalid_request_error', param: 'limit' });
    };
    for (const limit of ['1e1', '0x10', '0b1', '+5', ' 5', '5.0', '0', '-1', '']) {
      await refused('/v1/files', limit);
      await refused('/v1/batches', limit);
      await refused('/batches', limit, true);
    }
    await refused('/v1/files', '10001');
    await refused('/v1/batches', '101');
    await refused('/batches', '1001', true);
    for (const limit of ['1', '07', '100']) {
      expect((await fetch(`${harness.url}/v1/batches?limit=${limit}`, { headers })).status).toBe(200);
      expect((await fetch(`${harness.url}/v1/files?limit=${limit}`, { headers })).status).toBe(200);
    }
  });

  it('expires a file when asked (expires_after): gone from list, retrieve and content at once, its bytes at the sweep', async () => {
    const { key } = await harness.createTenantWithKey();
    const client = harness.client(key);
    const content = jsonl([chatLine('a', 'sim-pro-32k', 1)]);
    const expiring = await client.files.create({
      file: await toFile(Buffer.from(content), 'expiring.jsonl'),
      purpose: 'batch',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    expect(openAIErrors('OpenAIFile', expiring)).toEqual([]);
    expect(expiring.expires_at).toBe(expiring.created_at + 3600);
    // Without expires_after a batch input lasts 30 days, as on OpenAI.
    const kept = await uploadInput(client, content);
    expect(kept.expires_at).toBe(kept.created_at + 30 * 86_400);
    const runner = harness.gateway.batches!.runner;
    const storage = harness.gateway.batches!.service.files;
    // Not expired yet: a sweep leaves it.
    expect(await runner.sweepExpiredFiles()).toBe(0);
    expect((await client.files.retrieve(expiring.id)).id).toBe(expiring.id);

    // An hour later (the record's expiry moved into the past).
    await sql`update files set expires_at = ${Date.now() - 1} where id = ${expiring.id}`.execute(
      (harness.gateway.store as KyselyStore).kysely,
    );
    for (const attempt of [
      client.files.retrieve(expiring.id),
      client.files.content(expiring.id),
      chatBatch(client, expiring.id),
    ]) {
      expect(await caught(attempt)).toBeInstanceOf(OpenAI.NotFoundError);
    }
    expect((await client.files.list()).data.map((file) => file.id)).toEqual([kept.id]);
    expect(existsSync(storage.pathOf(expiring.id))).toBe(true);
    expect(await runner.sweepExpiredFiles()).toBe(1);
    expect(existsSync(storage.pathOf(expiring.id))).toBe(false);
    expect(existsSync(storage.pathOf(kept.id))).toBe(true);
    expect((await client.files.retrieve(kept.id)).id).toBe(kept.id);
  });

  it('refuses an expires_after OpenAI would refuse, naming the field, and keeps nothing', async () => {
    const { key } = await harness.createTenantWithKey();
    const client = harness.client(key);
    const content = Buffer.from(jsonl([chatLine('a', 'sim-pro-32k', 1)]));
    const storage = path.dirname(harness.gateway.batches!.service.files.pathOf('file-x'));
    const stored = readdirSync(storage).length;
    const cases: [Record<string, unknown>, string, string][] = [
      [{ anchor: 'created_at', seconds: 3599 }, 'expires_after.seconds', 'invalid_value'],
      [{ anchor: 'created_at', seconds: 2_592_001 }, 'expires_after.seconds', 'invalid_value'],
      [{ anchor: 'created_at', seconds: '1e4' }, 'expires_after.seconds', 'invalid_value'],
      [{ anchor: 'created_at' }, 'expires_after.seconds', 'missing_required_parameter'],
      [{ anchor: 'last_active_at', seconds: 3600 }, 'expires_after.anchor', 'invalid_value'],
      [{ seconds: 3600 }, 'expires_after.anchor', 'missing_required_parameter'],
    ];
    for (const [expiresAfter, param, code] of cases) {
      const error = await caught(
        client.files.create({
          file: await toFile(content, 'in.jsonl'),
          purpose: 'batch',
          expires_after: expiresAfter as never,
        }),
      );
      expect(error.status, JSON.stringify(expiresAfter)).toBe(400);
      expect(error, JSON.stringify(expiresAfter)).toMatchObject({ param, code });
    }
    expect((await client.files.list()).data).toEqual([]);
    expect(readdirSync(storage)).toHaveLength(stored);
  });

  it('refuses a file over the size limit with 413 and keeps nothing', async () => {
    const { key } = await harness.createTenantWithKey();
    const client = harness.client(key);
    const error = await caught(uploadInput(client, Buffer.alloc(MAX_FILE_BYTES + 10, 'a')));
    expect(error.status).toBe(413);
    expect(error.code).toBe('file_too_large');
    expect((await client.files.list()).data).toEqual([]);
    // Exactly at the limit is accepted.
    const atLimit = await uploadInput(client, Buffer.alloc(MAX_FILE_BYTES, 'a'));
    expect(atLimit.bytes).toBe(MAX_FILE_BYTES);
  });

  it("answers 404 for another tenant's file, everywhere", async () => {
    const owner = await harness.createTenantWithKey();
    const other = await harness.createTenantWithKey({ credit: '1' });
    const file = await uploadInput(harness.client(owner.key), jsonl([chatLine('a', 'sim-pro-32k', 1)]));
    const client = harness.client(other.key);
    for (const attempt of [
      client.files.retrieve(file.id),
      client.files.content(file.id),
      client.files.delete(file.id),
      chatBatch(client, file.id),
    ]) {
      const error = await caught(attempt);
      expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    }
    expect((await client.files.list()).data).toEqual([]);
    expect((await harness.client(owner.key).files.retrieve(file.id)).id).toBe(file.id);
  });

  it('names input_file_id in the 404 for an unknown input file of a batch', async () => {
    const { key } = await harness.createTenantWithKey({ credit: '1' });
    const error = await caught(
      harness.client(key).batches.create({
        input_file_id: 'file-nope',
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      }),
    );
    expect(error.status).toBe(404);
    expect(error).toMatchObject({ code: 'file_not_found', param: 'input_file_id' });
  });
});

describe('Batches API', () => {
  it('runs a batch end to end: one output line per input line, usage per line, billed at half the list price', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const client = harness.client(key);
    const input = Array.from({ length: 40 }, (_, index) =>
      chatLine(`line-${index}`, 'sim-pro-32k', 2 + (index % 7), `Tell me about ${index} ${'x'.repeat(index)}`),
    );
    const file = await uploadInput(client, jsonl(input));
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { project: 'docs' },
    });
    expect(openAIErrors('Batch', created)).toEqual([]);
    expect(created).toMatchObject({ object: 'batch', input_file_id: file.id, metadata: { project: 'docs' } });
    expect(['validating', 'in_progress']).toContain(created.status);

    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(openAIErrors('Batch', batch)).toEqual([]);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 40, completed: 40, failed: 0 });
    expect(batch.error_file_id).toBeUndefined();
    expect(batch.completed_at).toBeGreaterThanOrEqual(batch.created_at);
    expect(batch.model).toBe('sim-pro-32k');

    const output = await readJsonl(client, batch.output_file_id!);
    expect(output).toHaveLength(40);
    expect(output.map((line) => line.custom_id).sort()).toEqual(input.map((line) => line.custom_id).sort());
    let expectedList = 0n;
    let promptTotal = 0;
    let completionTotal = 0;
    for (const line of output) {
      const source = input.find((entry) => entry.custom_id === line.custom_id)!;
      const prompt = countPromptTokens('chat', source.body);
      const completion = source.body.max_tokens as number;
      expect(line.error).toBeNull();
      expect(line.response.status_code).toBe(200);
      expect(line.response.request_id).toBe(`${batch.id}_${input.indexOf(source)}`);
      expect(line.response.body.usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: completion });
      expect(line.response.body.object).toBe('chat.completion');
      expectedList += listNano(prompt, completion);
      promptTotal += prompt;
      completionTotal += completion;
    }
    expect(batch.usage).toMatchObject({ input_tokens: promptTotal, output_tokens: completionTotal });

    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(10_000_000_000n - decimalToNano(balance.body.balance)).toBe(expectedList / 2n);
    expect(balance.body.reserved).toBe('0');

    const listed = await client.batches.list();
    expect(listed.data.map((entry) => entry.id)).toEqual([batch.id]);
    const raw = await fetch(`${harness.url}/v1/batches?limit=1`, { headers: { authorization: `Bearer ${key}` } });
    const page = await raw.json();
    expect(openAIErrors('ListBatchesResponse', page)).toEqual([]);
    expect(page).toMatchObject({ object: 'list', first_id: batch.id, last_id: batch.id, has_more: false });

    const outputFile = await client.files.retrieve(batch.output_file_id!);
    expect(openAIErrors('OpenAIFile', outputFile)).toEqual([]);
    expect(outputFile.purpose).toBe('batch_output');

    const admin = await harness.admin('GET', `/batches/${batch.id}`);
    expect(admin.status).toBe(200);
    expect(admin.body).toMatchObject({ tenant_id: tenantId, status: 'completed' });
    expect(admin.body.progress).toMatchObject({ lines_done: 40, lines_total: 40, tokens_remaining: 0, eta_seconds: 0 });
    expect(admin.body.progress.tokens_used).toBe(promptTotal + completionTotal);
    const all = await harness.admin('GET', `/batches?tenant_id=${tenantId}`);
    expect(all.body.data.map((entry: { id: string }) => entry.id)).toEqual([batch.id]);
    expect(all.body).toMatchObject({ object: 'list', first_id: batch.id, last_id: batch.id, has_more: false });

    const metrics = await (await fetch(`${harness.url}/metrics`)).text();
    expect(metrics).toMatch(/tollgate_batch_lines\{state="done"\} (\d+)/);
    expect(Number(/tollgate_batch_lines\{state="done"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(40);
    expect(metrics).toContain('tollgate_batch_capacity_share');
  });

  it('gives the output and error files the expiry the batch asked for (output_expires_after), counted from their creation', async () => {
    const { key } = await harness.createTenantWithKey({ credit: '1' });
    const client = harness.client(key);
    const file = await uploadInput(client, jsonl([chatLine('good', 'sim-pro-32k', 2), chatLine('bad', 'sim-nope', 2)]));
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      output_expires_after: { anchor: 'created_at', seconds: 7200 },
    });
    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(batch.request_counts).toEqual({ total: 2, completed: 1, failed: 1 });
    for (const id of [batch.output_file_id!, batch.error_file_id!]) {
      const result = await client.files.retrieve(id);
      expect(result.expires_at).toBe(result.created_at + 7200);
    }
    // A batch without output_expires_after gives files that stay (its input, uploaded without one, lasts 30 days).
    const input = await client.files.retrieve(file.id);
    expect(input.expires_at).toBe(input.created_at + 30 * 86_400);
    const plain = await waitForBatch(client, (await chatBatch(client, file.id)).id, isFinal, 15_000);
    expect((await client.files.retrieve(plain.output_file_id!)).expires_at).toBeUndefined();
  });

  it('cancels a slow batch: cancelling, then cancelled; work done is returned and billed, nothing after', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const client = harness.client(key);
    const input = Array.from({ length: 12 }, (_, index) => chatLine(`slow-${index}`, 'sim-slow', 40));
    const created = await startChatBatch(client, input);
    await waitForBatch(client, created.id, hasStatus('in_progress'), 15_000);
    // Let a first pair of lines finish, then cancel while the next pair runs.
    const deadline = Date.now() + 10_000;
    while ((await client.batches.retrieve(created.id)).request_counts!.completed < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const cancelling = await client.batches.cancel(created.id);
    expect(openAIErrors('Batch', cancelling)).toEqual([]);
    expect(['cancelling', 'cancelled']).toContain(cancelling.status);
    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(batch.status).toBe('cancelled');
    expect(batch.cancelling_at).toBeDefined();
    expect(batch.cancelled_at).toBeDefined();
    const done = batch.request_counts!.completed;
    expect(done).toBeGreaterThanOrEqual(2);
    expect(done).toBeLessThan(12);
    expect(batch.request_counts).toEqual({ total: 12, completed: done, failed: 12 - done });

    const output = await readJsonl(client, batch.output_file_id!);
    expect(output).toHaveLength(done);
    const errors = await readJsonl(client, batch.error_file_id!);
    expect(errors).toHaveLength(12 - done);
    for (const line of errors) expect(line).toMatchObject({ response: null, error: { code: 'batch_cancelled' } });
    expect(new Set([...output, ...errors].map((line) => line.custom_id)).size).toBe(12);

    const prompt = countPromptTokens('chat', input[0]!.body);
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(10_000_000_000n - decimalToNano(balance.body.balance)).toBe((listNano(prompt, 40) * BigInt(done)) / 2n);
    expect(balance.body.reserved).toBe('0');
    // A cancelled batch stays cancelled; cancelling it again is harmless.
    expect((await client.batches.cancel(created.id)).status).toBe('cancelled');
  });

  it('withdraws a cancelled batch’s lines still queued for capacity: they never run and are not billed', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const client = harness.client(key);
    const input = Array.from({ length: 6 }, (_, index) => chatLine(`tiny-${index}`, 'sim-tiny', 40));
    const created = await startChatBatch(client, input);
    // Cancel right after a line finished: the next one runs (≈0.8 s) and the one after waits in the scheduler queue.
    const queueDepth = async () => {
      const metrics = await (await fetch(`${harness.url}/metrics`)).text();
      return Number(/tollgate_queue_depth\{model="sim-tiny",class="batch"\} (\d+)/.exec(metrics)?.[1] ?? 'NaN');
    };
    const deadline = Date.now() + 10_000;
    while ((await client.batches.retrieve(created.id)).request_counts!.completed < 1 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    while ((await queueDepth()) < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await queueDepth()).toBe(1);
    const cancelling = await client.batches.cancel(created.id);
    const doneAtCancel = cancelling.request_counts!.completed;
    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(batch.status).toBe('cancelled');
    expect(await queueDepth()).toBe(0);
    // The running line finishes; the queued one does not (without withdrawal it would run next and be billed).
    const done = batch.request_counts!.completed;
    expect(done).toBeGreaterThanOrEqual(doneAtCancel);
    expect(done).toBeLessThanOrEqual(doneAtCancel + 1);
    expect(batch.request_counts).toEqual({ total: 6, completed: done, failed: 6 - done });
    const errors = await readJsonl(client, batch.error_file_id!);
    expect(errors).toHaveLength(6 - done);
    for (const line of errors) expect(line).toMatchObject({ response: null, error: { code: 'batch_cancelled' } });
    const prompt = countPromptTokens('chat', input[0]!.body);
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(10_000_000_000n - decimalToNano(balance.body.balance)).toBe((listNano(prompt, 40) * BigInt(done)) / 2n);
    expect(balance.body.reserved).toBe('0');
  });

  it('expires a batch that cannot finish in its window: batch_expired lines, work done returned', async () => {
    const { key } = await harness.createTenantWithKey({ credit: '10' });
    const client = harness.client(key);
    const input = Array.from({ length: 30 }, (_, index) => chatLine(`exp-${index}`, 'sim-slow', 40));
    const file = await uploadInput(client, jsonl(input));
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '4s' as '24h',
    });
    const batch = await waitForBatch(client, created.id, isFinal);
    expect(openAIErrors('Batch', batch)).toEqual([]);
    expect(batch.status).toBe('expired');
    expect(batch.expired_at).toBeGreaterThanOrEqual(batch.expires_at! - 1);
    const done = batch.request_counts!.completed;
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(30);
    const errors = await readJsonl(client, batch.error_file_id!);
    expect(errors).toHaveLength(30 - done);
    for (const line of errors) expect(line.error.code).toBe('batch_expired');
    expect(await readJsonl(client, batch.output_file_id!)).toHaveLength(done);
  });

  it('refuses a completion window the operator did not allow, and an unsupported endpoint', async () => {
    const { key } = await harness.createTenantWithKey({ credit: '1' });
    const client = harness.client(key);
    const file = await uploadInput(client, jsonl([chatLine('a', 'sim-pro-32k', 1)]));
    const window = await caught(
      client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '1h' as '24h',
      }),
    );
    expect(window.status).toBe(400);
    expect(window.param).toBe('completion_window');
    const endpoint = await caught(
      client.batches.create({ input_file_id: file.id, endpoint: '/v1/moderations', completion_window: '24h' }),
    );
    expect(endpoint.status).toBe(400);
    expect(endpoint.param).toBe('endpoint');
    expect((await caught(client.batches.retrieve('batch_nope'))).status).toBe(404);
  });
});

describe('a large input file', () => {
  it('validates in the background: a small batch created after it runs to the end meanwhile', async () => {
    const roomy = await startTestGateway({ ...config, batch: { ...config.batch, max_file_bytes: 16 * 1024 * 1024 } });
    try {
      const { key } = await roomy.createTenantWithKey({ credit: '10' });
      const client = roomy.client(key);
      // 40,000 lines: seconds of validation, where the small batch takes a fraction of one.
      const big = await uploadInput(
        client,
        jsonl(Array.from({ length: 40_000 }, (_, index) => chatLine(`big-${index}`, 'sim-pro-32k', 1))),
      );
      const bigBatch = await chatBatch(client, big.id);
      await waitForBatch(client, bigBatch.id, hasStatus('validating'), 5_000);
      const small = await uploadInput(
        client,
        jsonl([chatLine('a', 'sim-pro-32k', 2), chatLine('b', 'sim-pro-32k', 2)]),
      );
      const smallBatch = await chatBatch(client, small.id);
      const done = await waitForBatch(client, smallBatch.id, isFinal, 30_000);
      expect(done.status).toBe('completed');
      // Before, a pass validated a file to its end before looking at any other batch.
      expect((await client.batches.retrieve(bigBatch.id)).status).toBe('validating');
      await client.batches.cancel(bigBatch.id);
    } finally {
      await roomy.close();
    }
  });
});

describe('bad batch input', () => {
  it('fails a file that is not JSONL with a clear error and charges nothing', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '1' });
    const client = harness.client(key);
    const file = await uploadInput(client, randomBytes(5000), 'image.png');
    const created = await chatBatch(client, file.id);
    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(openAIErrors('Batch', batch)).toEqual([]);
    expect(batch.status).toBe('failed');
    expect(batch.failed_at).toBeDefined();
    expect(batch.errors?.data?.[0]).toMatchObject({ code: 'invalid_file_format' });
    expect(batch.output_file_id).toBeUndefined();
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(balance.body.balance).toBe('1');
  });

  it('sends bad lines to the error file with their own error and runs the good ones', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const client = harness.client(key);
    const good = [chatLine('good-1', 'sim-pro-32k', 3), chatLine('good-2', 'sim-pro-32k', 4)];
    const lines = [
      JSON.stringify(good[0]),
      JSON.stringify({ ...chatLine('unknown-url', 'sim-pro-32k', 1), url: '/v1/images/generations' }),
      JSON.stringify({
        custom_id: 'wrong-endpoint',
        method: 'POST',
        url: '/v1/embeddings',
        body: { model: 'sim-embed', input: 'x' },
      }),
      JSON.stringify(chatLine('good-1', 'sim-pro-32k', 1)), // duplicate custom_id
      JSON.stringify(chatLine('too-big', 'sim-pro-32k', 1, 'y'.repeat(MAX_LINE_BYTES))),
      '{"custom_id": "broken", ',
      JSON.stringify({ ...chatLine('', 'sim-pro-32k', 1), custom_id: undefined }),
      JSON.stringify({ ...chatLine('get', 'sim-pro-32k', 1), method: 'GET' }),
      JSON.stringify({ ...chatLine('not-object', 'sim-pro-32k', 1), body: 'hello' }),
      JSON.stringify(chatLine('no-such-model', 'sim-nope', 1)),
      JSON.stringify(good[1]),
    ];
    const file = await uploadInput(client, `${lines.join('\n')}\n`);
    const created = await chatBatch(client, file.id);
    const batch = await waitForBatch(client, created.id, isFinal, 15_000);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 11, completed: 2, failed: 9 });
    const output = await readJsonl(client, batch.output_file_id!);
    expect(output.map((line) => line.custom_id).sort()).toEqual(['good-1', 'good-2']);
    const errors = await readJsonl(client, batch.error_file_id!);
    const byId = (id: string | null) => errors.filter((line) => line.custom_id === id);
    expect(byId('unknown-url')[0].error.code).toBe('invalid_url');
    expect(byId('wrong-endpoint')[0].error.code).toBe('mismatched_endpoint');
    expect(byId('good-1')[0].error.code).toBe('duplicate_custom_id');
    expect(byId('get')[0].error.code).toBe('invalid_method');
    expect(byId('not-object')[0].error.code).toBe('invalid_body');
    const nulls = byId(null)
      .map((line) => line.error.code)
      .sort();
    expect(nulls).toEqual(['invalid_json_line', 'line_too_large', 'missing_custom_id']);
    // A line the gateway refuses (unknown model) carries the gateway's answer, as OpenAI's error file does.
    expect(byId('no-such-model')[0]).toMatchObject({
      response: { status_code: 404, body: { error: { code: 'model_not_found' } } },
      error: null,
    });
    expect(errors).toHaveLength(9);

    const expected = good.reduce(
      (sum, line) => sum + listNano(countPromptTokens('chat', line.body), line.body.max_tokens as number),
      0n,
    );
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(10_000_000_000n - decimalToNano(balance.body.balance)).toBe(expected / 2n);
  });
});
