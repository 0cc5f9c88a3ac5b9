import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestLogFixture } from '../store/ledger-fixtures.js';
import type { Store } from '../store/store.js';
import type { BatchRecord, BatchStore, FileRecord, NewBatchLine } from './batch-store.js';

/** How the conformance suite reaches one implementation. */
export interface BatchStoreConformanceOptions {
  /** Opens a new, migrated gateway store and the batch store over it. The suite closes the gateway store. */
  open: () => Promise<{ store: Store; batches: BatchStore }>;
}

const unique = () => randomBytes(6).toString('hex');

function file(tenantId: string, createdAt: number, overrides: Partial<FileRecord> = {}): FileRecord {
  return {
    id: `file-${unique()}`,
    tenantId,
    purpose: 'batch',
    filename: 'in.jsonl',
    bytes: 123,
    createdAt,
    expiresAt: null,
    ...overrides,
  };
}

function batch(tenantId: string, createdAt: number, overrides: Partial<BatchRecord> = {}): BatchRecord {
  return {
    id: `batch_${unique()}`,
    tenantId,
    keyId: 'key_1',
    endpoint: '/v1/chat/completions',
    model: null,
    inputFileId: 'file-x',
    completionWindow: '24h',
    status: 'validating',
    outputFileId: null,
    errorFileId: null,
    errors: null,
    metadata: { team: 'a' },
    createdAt,
    expiresAt: createdAt + 86_400_000,
    outputExpiresAfterSeconds: null,
    inProgressAt: null,
    finalizingAt: null,
    completedAt: null,
    failedAt: null,
    expiredAt: null,
    cancellingAt: null,
    cancelledAt: null,
    ...overrides,
  };
}

function lines(batchId: string, count: number): NewBatchLine[] {
  return Array.from({ length: count }, (_, index) => ({
    batchId,
    lineIndex: index,
    customId: `c${index}`,
    url: '/v1/chat/completions',
    body: index % 5 === 4 ? null : JSON.stringify({ model: 'm', n: index }),
    estimatedTokens: 10 + index,
    state: index % 5 === 4 ? ('failed' as const) : ('pending' as const),
    requestId: `${batchId}_${index}`,
    error: index % 5 === 4 ? { code: 'invalid_json_line', message: 'bad' } : null,
  }));
}

/** Registers the `BatchStore` conformance tests (Vitest) for one implementation. */
export function describeBatchStoreConformance(name: string, options: BatchStoreConformanceOptions): void {
  describe(`BatchStore conformance: ${name}`, () => {
    let store: Store;
    let batches: BatchStore;

    beforeAll(async () => {
      ({ store, batches } = await options.open());
    });
    afterAll(async () => store?.close());

    it('stores files per tenant, filters by purpose, pages by cursor in both orders, deletes', async () => {
      const tenant = `ten_${unique()}`;
      const made = [
        file(tenant, 1000),
        file(tenant, 2000, { purpose: 'batch_output' }),
        file(tenant, 3000),
        file(tenant, 3000),
      ];
      for (const record of made) await batches.insertFile(record);
      await batches.insertFile(file(`ten_${unique()}`, 5000));
      expect(await batches.getFile(made[0]!.id)).toEqual(made[0]);
      const newestFirst = [...made].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
      const all = await batches.listFiles({ tenantId: tenant, limit: 10 });
      expect(all.map((record) => record.id)).toEqual(newestFirst.map((record) => record.id));
      const first = await batches.listFiles({ tenantId: tenant, limit: 2 });
      const second = await batches.listFiles({ tenantId: tenant, limit: 2, after: first[1]!.id });
      expect([...first, ...second].map((record) => record.id)).toEqual(newestFirst.map((record) => record.id));
      const ascending = await batches.listFiles({ tenantId: tenant, limit: 10, order: 'asc' });
      expect(ascending.map((record) => record.id)).toEqual([...newestFirst].reverse().map((record) => record.id));
      const outputs = await batches.listFiles({ tenantId: tenant, limit: 10, purpose: 'batch_output' });
      expect(outputs.map((record) => record.id)).toEqual([made[1]!.id]);
      expect(await batches.deleteFile(made[0]!.id)).toBe(true);
      expect(await batches.deleteFile(made[0]!.id)).toBe(false);
      expect(await batches.getFile(made[0]!.id)).toBeUndefined();
    });

    it('leaves expired files out of a list at a time, and finds the expired ones soonest first', async () => {
      const tenant = `ten_${unique()}`;
      const early = file(tenant, 1000, { expiresAt: 5000 });
      const late = file(tenant, 2000, { expiresAt: 9000 });
      const forever = file(tenant, 3000);
      for (const record of [late, forever, early]) await batches.insertFile(record);
      const ids = (records: FileRecord[]) => records.map((record) => record.id);
      const listed = (liveAt: number) => batches.listFiles({ tenantId: tenant, limit: 10, liveAt });
      expect(ids(await listed(4999))).toEqual([forever.id, late.id, early.id]);
      expect(ids(await listed(5000))).toEqual([forever.id, late.id]);
      expect(ids(await listed(9000))).toEqual([forever.id]);
      expect(ids(await batches.listFiles({ tenantId: tenant, limit: 10 }))).toEqual([forever.id, late.id, early.id]);
      const expired = async (now: number) =>
        ids((await batches.listExpiredFiles(now, 1000)).filter((record) => record.tenantId === tenant));
      expect(await expired(4999)).toEqual([]);
      expect(await expired(5000)).toEqual([early.id]);
      expect(await expired(10_000)).toEqual([early.id, late.id]);
      expect(await batches.listExpiredFiles(10_000, 1)).toHaveLength(1);
    });

    it('stores batches, lists them newest first per tenant or for all, moves status by compare-and-set', async () => {
      const tenant = `ten_${unique()}`;
      const a = batch(tenant, 10_000);
      const b = batch(tenant, 20_000, { outputExpiresAfterSeconds: 3600 });
      const c = batch(tenant, 30_000);
      for (const record of [a, b, c]) await batches.insertBatch(record);
      expect(await batches.getBatch(a.id)).toEqual(a);
      expect(await batches.getBatch(b.id)).toEqual(b);
      const page1 = await batches.listBatches({ tenantId: tenant, limit: 2 });
      expect(page1.map((record) => record.id)).toEqual([c.id, b.id]);
      const page2 = await batches.listBatches({ tenantId: tenant, limit: 2, after: b.id });
      expect(page2.map((record) => record.id)).toEqual([a.id]);
      expect(await batches.transitionBatch(a.id, ['in_progress'], { status: 'completed' })).toBe(false);
      expect(
        await batches.transitionBatch(a.id, ['validating'], {
          status: 'in_progress',
          inProgressAt: 11_000,
          model: 'm',
        }),
      ).toBe(true);
      expect(await batches.transitionBatch(a.id, ['validating'], { status: 'failed', failedAt: 12_000 })).toBe(false);
      const errors = [{ code: 'x', message: 'y', param: null, line: 3 }];
      expect(await batches.transitionBatch(a.id, ['in_progress'], { status: 'failed', errors, failedAt: 13_000 })).toBe(
        true,
      );
      expect(await batches.getBatch(a.id)).toEqual({
        ...a,
        status: 'failed',
        model: 'm',
        inProgressAt: 11_000,
        failedAt: 13_000,
        errors,
      });
      const validating = await batches.listBatchesByStatus(['validating']);
      expect(validating.map((record) => record.id)).toEqual(expect.arrayContaining([b.id, c.id]));
      expect(validating.map((record) => record.id)).not.toContain(a.id);
    });

    it('keeps per-line state: claims without overlap, finishes, requeues, resets, closes, counts', async () => {
      const id = `batch_${unique()}`;
      const input = lines(id, 20);
      await batches.insertLines(input);
      await batches.insertLines(input.slice(0, 3)); // idempotent
      const valid = input.filter((line) => line.state === 'pending');
      let counts = await batches.lineCounts(id);
      expect(counts.total).toBe(20);
      expect(counts.byState.pending).toBe(valid.length);
      expect(counts.byState.failed).toBe(4);
      expect(counts.remainingEstimatedTokens).toBe(valid.reduce((sum, line) => sum + line.estimatedTokens, 0));

      const [x, y] = await Promise.all([batches.claimLines(id, 5, 100), batches.claimLines(id, 5, 100)]);
      const claimed = [...x, ...y].map((line) => line.lineIndex);
      expect(new Set(claimed).size).toBe(claimed.length);
      expect(claimed.length).toBeGreaterThanOrEqual(5);
      for (const line of [...x, ...y]) {
        expect(line.state).toBe('running');
        expect(line.attempts).toBe(1);
        expect(line.startedAt).toBe(100);
      }
      const first = x[0] ?? y[0]!;
      const outcome = {
        state: 'succeeded' as const,
        statusCode: 200,
        response: '{"ok":true}',
        error: null,
        finishedAt: 200,
        inputTokens: 7,
        cachedTokens: 1,
        outputTokens: 5,
        reasoningTokens: 0,
      };
      expect(await batches.finishLine(id, first.lineIndex, outcome)).toBe(true);
      expect(await batches.finishLine(id, first.lineIndex, outcome)).toBe(false);
      const second = [...x, ...y].find((line) => line.lineIndex !== first.lineIndex)!;
      expect(await batches.requeueLine(id, second.lineIndex)).toBe(true);
      expect(await batches.requeueLine(id, second.lineIndex)).toBe(false);
      const reclaimed = await batches.claimLines(id, 1, 300);
      // Claims take the lowest pending index: the requeued line comes back first, with a second attempt.
      expect(reclaimed[0]).toMatchObject({ lineIndex: second.lineIndex, attempts: 2, startedAt: 300 });

      const runningBefore = (await batches.lineCounts(id)).byState.running;
      expect(await batches.resetRunningLines(id, 250)).toBe(runningBefore - 1); // the one started at 300 stays
      expect(await batches.resetRunningLines(id, 301)).toBe(1);
      counts = await batches.lineCounts(id);
      expect(counts.byState.running).toBe(0);
      expect(counts.byState.succeeded).toBe(1);
      expect(counts.usage).toEqual({ inputTokens: 7, cachedTokens: 1, outputTokens: 5, reasoningTokens: 0 });
      expect(counts.usedTokens).toBe(12);
      const pending = counts.byState.pending;
      expect(await batches.closePendingLines(id, 'expired', 400)).toBe(pending);
      counts = await batches.lineCounts(id);
      expect(counts.byState.expired).toBe(pending);
      expect(counts.remainingEstimatedTokens).toBe(0);

      const listed = [...(await batches.listLines(id, 0, 7)), ...(await batches.listLines(id, 7, 100))];
      expect(listed.map((line) => line.lineIndex)).toEqual(input.map((line) => line.lineIndex));
      const done = listed.find((line) => line.lineIndex === first.lineIndex)!;
      expect(done).toMatchObject({ state: 'succeeded', statusCode: 200, response: '{"ok":true}', inputTokens: 7 });
      expect(listed[4]).toMatchObject({ state: 'failed', error: { code: 'invalid_json_line', message: 'bad' } });

      await batches.deleteLines(id);
      expect((await batches.lineCounts(id)).total).toBe(0);
    });

    it('fails the pending lines of a batch with one error, leaving running and finished lines alone', async () => {
      const id = `batch_${unique()}`;
      const input = lines(id, 10);
      await batches.insertLines(input);
      const running = await batches.claimLines(id, 2, 100);
      const pending = input.filter((line) => line.state === 'pending').length - running.length;
      const error = { code: 'revoked_api_key', message: 'The API key that created this batch has been revoked.' };
      expect(await batches.failPendingLines(id, error, 500)).toBe(pending);
      expect(await batches.failPendingLines(id, error, 600)).toBe(0);
      const counts = await batches.lineCounts(id);
      expect(counts.byState).toMatchObject({ pending: 0, running: 2, failed: 10 - 2 });
      expect(counts.remainingEstimatedTokens).toBe(running.reduce((sum, line) => sum + line.estimatedTokens, 0));
      const listed = await batches.listLines(id, 0, 100);
      const refused = listed.filter((line) => line.error?.code === 'revoked_api_key');
      expect(refused).toHaveLength(pending);
      for (const line of refused) {
        expect(line).toMatchObject({ state: 'failed', error, statusCode: null, response: null, finishedAt: 500 });
      }
    });

    it('sees whether a request id is in the request log', async () => {
      const requestId = `batch_${unique()}_0`;
      expect(await batches.requestLogged(requestId)).toBe(false);
      await store.insertRequestLogs([
        requestLogFixture({
          requestId,
          tenantId: 't',
          status: 429,
          errorCode: 'rate_limit_exceeded',
          attempts: 0,
          createdAt: Date.now(),
        }),
      ]);
      expect(await batches.requestLogged(requestId)).toBe(true);
    });
  });
}
