import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../store/store.js';
import type { ResponseStore, StoredResponse, StoredResponseEvent } from './response-store.js';

/** How the conformance suite reaches one implementation. */
export interface ResponseStoreConformanceOptions {
  /** Opens a new, migrated gateway store and the response store over it. The suite closes the gateway store. */
  open: () => Promise<{ store: Store; responses: ResponseStore }>;
}

const unique = () => randomBytes(6).toString('hex');

/**
 * The time most tests store at, and the heartbeat of their running responses. The sweep test keeps its expiries far
 * below it, and the stale-heartbeat test its heartbeats, so that each sees only its own responses even though every
 * test shares one database.
 */
const NOW = 1_700_000_000_000;
const HOUR = 3_600_000;

/** Text that JSON and the databases could each get wrong: accents, CJK, an emoji, quotes, escapes, a NUL. */
const AWKWARD_TEXT = 'Grüße, 世界 👋 "quoted" \\ back\nslash\ttab \u0000 nul';

function storedResponse(tenantId: string, overrides: Partial<StoredResponse> = {}): StoredResponse {
  const id = overrides.id ?? `resp_${unique()}`;
  return {
    id,
    tenantId,
    keyId: `key_${unique()}`,
    previousResponseId: null,
    inputItems: [
      {
        id: `msg_${unique()}`,
        type: 'message',
        role: 'user',
        content: [{ type: 'input_text', text: AWKWARD_TEXT }],
      },
      { id: `fco_${unique()}`, type: 'function_call_output', call_id: 'call_1', output: '{"ok":true}' },
    ],
    response: {
      id,
      object: 'response',
      created_at: NOW / 1000,
      status: 'completed',
      model: 'gpt-test',
      instructions: null,
      output: [
        {
          id: `msg_${unique()}`,
          type: 'message',
          role: 'assistant',
          content: [{ type: 'output_text', text: 'Ответ ✓ 🚀', annotations: [] }],
        },
      ],
      usage: { input_tokens: 12, input_tokens_details: { cached_tokens: 0 }, output_tokens: 3, total_tokens: 15 },
      temperature: 0.7,
      top_p: 1e-7,
      max_safe: Number.MAX_SAFE_INTEGER,
      negative: -42.5,
      metadata: { nested: { deeper: [1, [2, { three: true }]] } },
    },
    createdAt: NOW,
    expiresAt: NOW + HOUR,
    heartbeatAt: null,
    ...overrides,
  };
}

/** A response run in the background, stored with `status` and a heartbeat (`NOW` unless overridden). */
function runningResponse(tenantId: string, status: string, overrides: Partial<StoredResponse> = {}): StoredResponse {
  const record = storedResponse(tenantId, { heartbeatAt: NOW, ...overrides });
  return { ...record, response: { ...record.response, status, output: [], usage: null } };
}

/** `record`'s Response object with `status` and one output message saying `text`. */
function answered(record: StoredResponse, status: string, text = 'done'): Record<string, unknown> {
  const output = [
    { id: `msg_${unique()}`, type: 'message', role: 'assistant', content: [{ type: 'output_text', text }] },
  ];
  return { ...record.response, status, output };
}

/** The event `sequenceNumber` of a streamed response, framed as the gateway sends it, its delta saying `text`. */
function streamEvent(sequenceNumber: number, text = `part ${sequenceNumber}`): StoredResponseEvent {
  const type = 'response.output_text.delta';
  const data = JSON.stringify({ type, delta: text, sequence_number: sequenceNumber });
  return { sequenceNumber, frame: `event: ${type}\ndata: ${data}\n\n` };
}

/** Events `from` to `from + count - 1`. */
function streamEvents(from: number, count: number): StoredResponseEvent[] {
  return Array.from({ length: count }, (_, index) => streamEvent(from + index));
}

/** Registers the `ResponseStore` conformance tests (Vitest) for one implementation. */
export function describeResponseStoreConformance(name: string, options: ResponseStoreConformanceOptions): void {
  describe(`ResponseStore conformance: ${name}`, () => {
    let store: Store;
    let responses: ResponseStore;

    beforeAll(async () => {
      ({ store, responses } = await options.open());
    });
    afterAll(async () => store?.close());

    it('gives back what it saved, field for field, with or without a previous response', async () => {
      const tenant = `ten_${unique()}`;
      const first = storedResponse(tenant);
      const next = storedResponse(tenant, { previousResponseId: first.id, createdAt: NOW + 1 });
      await responses.saveResponse(first);
      await responses.saveResponse(next);
      expect(await responses.getResponse(tenant, first.id, NOW)).toEqual(first);
      expect(await responses.getResponse(tenant, next.id, NOW)).toEqual(next);
      expect(await responses.getResponse(tenant, `resp_${unique()}`, NOW)).toBeUndefined();
    });

    it("hides another tenant's response", async () => {
      const owned = storedResponse(`ten_${unique()}`);
      await responses.saveResponse(owned);
      expect(await responses.getResponse(`ten_${unique()}`, owned.id, NOW)).toBeUndefined();
    });

    it('reads a response until its expiry and not from then on', async () => {
      const tenant = `ten_${unique()}`;
      const record = storedResponse(tenant);
      await responses.saveResponse(record);
      expect(await responses.getResponse(tenant, record.id, record.expiresAt - 1)).toEqual(record);
      expect(await responses.getResponse(tenant, record.id, record.expiresAt)).toBeUndefined();
      expect(await responses.getResponse(tenant, record.id, record.expiresAt + HOUR)).toBeUndefined();
    });

    /** Saves one response of `tenant` per entry of `overrides`, each going on from the one before; oldest first. */
    async function saveChain(tenant: string, overrides: Partial<StoredResponse>[]): Promise<StoredResponse[]> {
      const chain: StoredResponse[] = [];
      for (const [index, override] of overrides.entries()) {
        const previousResponseId = chain.at(-1)?.id ?? null;
        const record = storedResponse(tenant, { previousResponseId, createdAt: NOW + index, ...override });
        await responses.saveResponse(record);
        chain.push(record);
      }
      return chain;
    }

    /** The ids `responseChain` reads from `id` at `NOW`. */
    async function chainIds(tenant: string, id: string, limit: number, now = NOW): Promise<string[]> {
      return (await responses.responseChain(tenant, id, now, limit)).map((record) => record.id);
    }

    it('reads a chain of responses whole, newest first, field for field', async () => {
      const tenant = `ten_${unique()}`;
      // One of them with a heartbeat, as a response run in the background has.
      const chain = await saveChain(tenant, [{}, {}, { heartbeatAt: NOW - 1 }, {}, {}]);
      const newestFirst = [...chain].reverse();
      expect(await responses.responseChain(tenant, newestFirst[0]!.id, NOW, 10)).toEqual(newestFirst);
      expect(await responses.responseChain(tenant, newestFirst[0]!.id, NOW, 5)).toEqual(newestFirst);
      expect(await responses.responseChain(tenant, chain[1]!.id, NOW, 10)).toEqual([chain[1], chain[0]]);
      expect(await responses.responseChain(tenant, chain[0]!.id, NOW, 10)).toEqual([chain[0]]);
    });

    it('reads at most `limit` responses of a chain, the newest', async () => {
      const tenant = `ten_${unique()}`;
      const chain = await saveChain(tenant, [{}, {}, {}, {}, {}]);
      const newest = chain[4]!.id;
      expect(await chainIds(tenant, newest, 3)).toEqual([chain[4]!.id, chain[3]!.id, chain[2]!.id]);
      expect(await chainIds(tenant, newest, 1)).toEqual([newest]);
      expect(await chainIds(tenant, newest, 0)).toEqual([]);
      expect(await chainIds(tenant, newest, -1)).toEqual([]);
    });

    it('stops a chain before a deleted response', async () => {
      const tenant = `ten_${unique()}`;
      const chain = await saveChain(tenant, [{}, {}, {}, {}, {}]);
      expect(await responses.deleteResponse(tenant, chain[2]!.id, NOW)).toBe(true);
      const read = await responses.responseChain(tenant, chain[4]!.id, NOW, 10);
      expect(read).toEqual([chain[4], chain[3]]);
      // The caller learns which response is missing from the last one read.
      expect(read.at(-1)?.previousResponseId).toBe(chain[2]!.id);
      expect(await chainIds(tenant, chain[2]!.id, 10)).toEqual([]);
    });

    it('stops a chain before an expired response, from its expiry on', async () => {
      const tenant = `ten_${unique()}`;
      const chain = await saveChain(tenant, [{}, {}, { expiresAt: NOW + 10 }, {}, {}]);
      const newest = chain[4]!.id;
      expect(await chainIds(tenant, newest, 10, NOW + 9)).toHaveLength(5);
      expect(await chainIds(tenant, newest, 10, NOW + 10)).toEqual([chain[4]!.id, chain[3]!.id]);
      expect(await chainIds(tenant, chain[2]!.id, 10, NOW + 10)).toEqual([]);
      // The first response expired: nothing is read, as by getResponse.
      expect(await chainIds(tenant, newest, 10, chain[4]!.expiresAt)).toEqual([]);
    });

    it("stops a chain before another tenant's response, and reads none of another tenant's chain", async () => {
      const [tenant, other] = [`ten_${unique()}`, `ten_${unique()}`];
      // The middle response is the other tenant's, and goes on from the tenant's first.
      const chain = await saveChain(tenant, [{}, { tenantId: other }, {}]);
      expect(await chainIds(tenant, chain[2]!.id, 10)).toEqual([chain[2]!.id]);
      expect(await chainIds(other, chain[1]!.id, 10)).toEqual([chain[1]!.id]);
      expect(await chainIds(other, chain[2]!.id, 10)).toEqual([]);
      expect(await chainIds(tenant, chain[0]!.id, 10)).toEqual([chain[0]!.id]);
    });

    it('reads no chain from an unknown id', async () => {
      expect(await chainIds(`ten_${unique()}`, `resp_${unique()}`, 10)).toEqual([]);
    });

    it('ends a chain that loops back on itself after `limit` responses', async () => {
      const tenant = `ten_${unique()}`;
      // Not made by the gateway (ids are random), but a bad row must not make a read loop forever.
      const selfId = `resp_${unique()}`;
      const self = storedResponse(tenant, { id: selfId, previousResponseId: selfId });
      const [firstId, secondId] = [`resp_${unique()}`, `resp_${unique()}`];
      const first = storedResponse(tenant, { id: firstId, previousResponseId: secondId });
      const second = storedResponse(tenant, { id: secondId, previousResponseId: firstId });
      for (const record of [self, first, second]) await responses.saveResponse(record);

      expect(await responses.responseChain(tenant, selfId, NOW, 3)).toEqual([self, self, self]);
      expect(await chainIds(tenant, selfId, 1_000)).toHaveLength(1_000);
      expect(await chainIds(tenant, firstId, 5)).toEqual([firstId, secondId, firstId, secondId, firstId]);
    });

    it('deletes a response once', async () => {
      const tenant = `ten_${unique()}`;
      const record = storedResponse(tenant);
      const kept = storedResponse(tenant);
      await responses.saveResponse(record);
      await responses.saveResponse(kept);
      expect(await responses.deleteResponse(tenant, record.id, NOW)).toBe(true);
      expect(await responses.getResponse(tenant, record.id, NOW)).toBeUndefined();
      expect(await responses.deleteResponse(tenant, record.id, NOW)).toBe(false);
      expect(await responses.getResponse(tenant, kept.id, NOW)).toEqual(kept);
    });

    it("does not delete another tenant's response, nor an expired one", async () => {
      const tenant = `ten_${unique()}`;
      const record = storedResponse(tenant);
      await responses.saveResponse(record);
      expect(await responses.deleteResponse(`ten_${unique()}`, record.id, NOW)).toBe(false);
      expect(await responses.getResponse(tenant, record.id, NOW)).toEqual(record);
      expect(await responses.deleteResponse(tenant, record.id, record.expiresAt)).toBe(false);
      expect(await responses.getResponse(tenant, record.id, NOW)).toEqual(record);
    });

    it("deletes every response of one tenant, expired ones too, and no other tenant's", async () => {
      const [tenant, other] = [`ten_${unique()}`, `ten_${unique()}`];
      const kept = storedResponse(other);
      for (const record of [storedResponse(tenant), storedResponse(tenant, { expiresAt: NOW - HOUR }), kept]) {
        await responses.saveResponse(record);
      }
      expect(await responses.deleteTenantResponses(tenant)).toBe(2);
      expect(await responses.deleteTenantResponses(tenant)).toBe(0);
      expect(await responses.getResponse(other, kept.id, NOW)).toEqual(kept);
    });

    it('rejects an id already stored, by any tenant, and keeps the first', async () => {
      const tenant = `ten_${unique()}`;
      const record = storedResponse(tenant);
      await responses.saveResponse(record);
      await expect(responses.saveResponse(storedResponse(tenant, { id: record.id }))).rejects.toThrow();
      await expect(responses.saveResponse(storedResponse(`ten_${unique()}`, { id: record.id }))).rejects.toThrow();
      expect(await responses.getResponse(tenant, record.id, NOW)).toEqual(record);
    });

    it('sweeps expired responses, oldest expiry first, at most `limit` at a time, and leaves live ones', async () => {
      const tenant = `ten_${unique()}`;
      const other = `ten_${unique()}`;
      const at = (expiresAt: number, tenantId = tenant) => storedResponse(tenantId, { createdAt: 1, expiresAt });
      const [oldest, middle, newest, live] = [at(10), at(20, other), at(30), at(40)];
      for (const record of [newest, live, oldest, middle]) await responses.saveResponse(record);
      const readable = async (now: number) => {
        const found = await Promise.all(
          [oldest, middle, newest, live].map((record) => responses.getResponse(record.tenantId, record.id, now)),
        );
        return found.flatMap((record) => (record === undefined ? [] : [record.id]));
      };

      expect(await responses.deleteExpiredResponses(5, 10)).toBe(0);
      expect(await responses.deleteExpiredResponses(30, 0)).toBe(0);
      expect(await responses.deleteExpiredResponses(30, 2)).toBe(2);
      expect(await readable(0)).toEqual([newest.id, live.id]);
      expect(await responses.deleteExpiredResponses(30, 2)).toBe(1);
      expect(await responses.deleteExpiredResponses(30, 2)).toBe(0);
      expect(await readable(0)).toEqual([live.id]);
      expect(await responses.getResponse(tenant, live.id, 30)).toEqual(live);
    });

    it('gives back the heartbeat and the status of a response run in the background', async () => {
      const tenant = `ten_${unique()}`;
      const queued = runningResponse(tenant, 'queued');
      const finished = storedResponse(tenant, { heartbeatAt: null });
      await responses.saveResponse(queued);
      await responses.saveResponse(finished);
      expect(await responses.getResponse(tenant, queued.id, NOW)).toEqual(queued);
      expect(await responses.getResponse(tenant, finished.id, NOW)).toEqual(finished);

      // The status column was written from the Response object: the queued one is running, the completed one not.
      const done = answered(queued, 'completed', AWKWARD_TEXT);
      expect(await responses.replaceRunningResponse(tenant, queued.id, done, NOW, null)).toBe(true);
      expect(await responses.getResponse(tenant, queued.id, NOW)).toEqual({
        ...queued,
        response: done,
        heartbeatAt: null,
      });
      expect(await responses.replaceRunningResponse(tenant, finished.id, answered(finished, 'failed'), NOW, null)).toBe(
        false,
      );
      expect(await responses.getResponse(tenant, finished.id, NOW)).toEqual(finished);
    });

    it('replaces a running response, queued or in progress, until it is replaced by a final one', async () => {
      const tenant = `ten_${unique()}`;
      const queued = runningResponse(tenant, 'queued');
      const inProgress = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(queued);
      await responses.saveResponse(inProgress);

      const started = answered(queued, 'in_progress', 'partial');
      expect(await responses.replaceRunningResponse(tenant, queued.id, started, NOW + 1, NOW + 1)).toBe(true);
      expect(await responses.getResponse(tenant, queued.id, NOW + 1)).toEqual({
        ...queued,
        response: started,
        heartbeatAt: NOW + 1,
      });
      const completed = answered(queued, 'completed');
      expect(await responses.replaceRunningResponse(tenant, queued.id, completed, NOW + 2, null)).toBe(true);
      expect(
        await responses.replaceRunningResponse(tenant, queued.id, answered(queued, 'cancelled'), NOW + 3, null),
      ).toBe(false);
      expect(await responses.getResponse(tenant, queued.id, NOW + 3)).toEqual({
        ...queued,
        response: completed,
        heartbeatAt: null,
      });

      const cancelled = answered(inProgress, 'cancelled');
      expect(await responses.replaceRunningResponse(tenant, inProgress.id, cancelled, NOW, null)).toBe(true);
      expect(
        await responses.replaceRunningResponse(tenant, inProgress.id, answered(inProgress, 'completed'), NOW, null),
      ).toBe(false);
      expect(await responses.getResponse(tenant, inProgress.id, NOW)).toEqual({
        ...inProgress,
        response: cancelled,
        heartbeatAt: null,
      });
    });

    it("does not replace a finished response, one without a status, another tenant's, an expired one or an unknown one", async () => {
      const tenant = `ten_${unique()}`;
      const completed = runningResponse(tenant, 'completed', { heartbeatAt: null });
      const cancelled = runningResponse(tenant, 'cancelled', { heartbeatAt: null });
      const statusless = storedResponse(tenant);
      delete statusless.response.status;
      const running = runningResponse(tenant, 'in_progress');
      for (const record of [completed, cancelled, statusless, running]) await responses.saveResponse(record);
      const replace = (record: StoredResponse, tenantId = tenant, now = NOW) =>
        responses.replaceRunningResponse(tenantId, record.id, answered(record, 'completed'), now, null);

      expect(await replace(completed)).toBe(false);
      expect(await replace(cancelled)).toBe(false);
      expect(await replace(statusless)).toBe(false);
      expect(await replace(running, `ten_${unique()}`)).toBe(false);
      expect(await replace(running, tenant, running.expiresAt)).toBe(false);
      expect(await replace(storedResponse(tenant))).toBe(false);
      for (const record of [completed, cancelled, statusless, running]) {
        expect(await responses.getResponse(tenant, record.id, NOW)).toEqual(record);
      }
    });

    it('lets exactly one of concurrent replaces of a running response win', async () => {
      const tenant = `ten_${unique()}`;
      const records = [1, 2, 3, 4, 5].map(() => runningResponse(tenant, 'in_progress'));
      for (const record of records) await responses.saveResponse(record);
      // The end of each run and a cancel of it, all at once.
      const attempts = records.flatMap((record) =>
        ['completed', 'cancelled'].map((status) => ({ record, response: answered(record, status) })),
      );
      const won = await Promise.all(
        attempts.map(({ record, response }) =>
          responses.replaceRunningResponse(tenant, record.id, response, NOW, null),
        ),
      );
      for (const record of records) {
        const winners = attempts.filter((attempt, index) => attempt.record === record && won[index]);
        expect(winners).toHaveLength(1);
        expect((await responses.getResponse(tenant, record.id, NOW))?.response).toEqual(winners[0]?.response);
      }
    });

    it('touches the heartbeat of the running responses it is given, any tenant, and names only those', async () => {
      const [tenant, other] = [`ten_${unique()}`, `ten_${unique()}`];
      const queued = runningResponse(tenant, 'queued');
      const inProgress = runningResponse(other, 'in_progress');
      const completed = runningResponse(tenant, 'completed', { heartbeatAt: null });
      const deleted = runningResponse(tenant, 'in_progress');
      const expired = runningResponse(tenant, 'in_progress', { expiresAt: NOW + 10 });
      for (const record of [queued, inProgress, completed, deleted, expired]) await responses.saveResponse(record);
      expect(await responses.deleteResponse(tenant, deleted.id, NOW)).toBe(true);

      const ids = [queued, inProgress, completed, deleted, expired].map((record) => record.id);
      const touched = await responses.touchRunningResponses([...ids, `resp_${unique()}`], NOW + 20);
      expect(touched.sort()).toEqual([queued.id, inProgress.id].sort());
      expect(await responses.getResponse(tenant, queued.id, NOW)).toEqual({ ...queued, heartbeatAt: NOW + 20 });
      expect(await responses.getResponse(other, inProgress.id, NOW)).toEqual({ ...inProgress, heartbeatAt: NOW + 20 });
      expect(await responses.getResponse(tenant, completed.id, NOW)).toEqual(completed);
      expect(await responses.getResponse(tenant, expired.id, NOW)).toEqual(expired);

      // Once replaced by its final response, a run is no longer touched: its process aborts it.
      await responses.replaceRunningResponse(tenant, queued.id, answered(queued, 'cancelled'), NOW + 21, null);
      expect(await responses.touchRunningResponses(ids, NOW + 22)).toEqual([inProgress.id]);
      expect(await responses.touchRunningResponses([], NOW + 22)).toEqual([]);
    });

    it('touches running responses named among more ids than one statement takes', async () => {
      const tenant = `ten_${unique()}`;
      const [first, last] = [runningResponse(tenant, 'queued'), runningResponse(tenant, 'in_progress')];
      await responses.saveResponse(first);
      await responses.saveResponse(last);
      const unknown = Array.from({ length: 1_200 }, () => `resp_${unique()}`);
      const touched = await responses.touchRunningResponses([first.id, ...unknown, last.id], NOW + 30);
      expect(touched.sort()).toEqual([first.id, last.id].sort());
      expect((await responses.getResponse(tenant, last.id, NOW))?.heartbeatAt).toBe(NOW + 30);
    });

    it('finds running responses with an old heartbeat, any tenant, oldest heartbeat first, at most `limit`', async () => {
      // Heartbeats far below NOW: no other test's running response has one this old.
      const [tenant, other] = [`ten_${unique()}`, `ten_${unique()}`];
      const oldest = runningResponse(tenant, 'in_progress', { heartbeatAt: 1_000 });
      const middle = runningResponse(other, 'queued', { heartbeatAt: 2_000 });
      const newest = runningResponse(tenant, 'in_progress', { heartbeatAt: 3_000 });
      const fresh = runningResponse(tenant, 'in_progress', { heartbeatAt: 5_000 });
      const finished = runningResponse(tenant, 'failed', { heartbeatAt: 500 });
      const expired = runningResponse(other, 'in_progress', { heartbeatAt: 1_500, expiresAt: 4_000 });
      for (const record of [newest, fresh, finished, oldest, expired, middle]) await responses.saveResponse(record);
      const stale = async (heartbeatBefore: number, limit: number) =>
        (await responses.staleRunningResponses(heartbeatBefore, 6_000, limit)).map((record) => record.id);

      expect(await responses.staleRunningResponses(5_000, 6_000, 10)).toEqual([oldest, middle, newest]);
      expect(await stale(5_000, 2)).toEqual([oldest.id, middle.id]);
      expect(await stale(2_000, 10)).toEqual([oldest.id]);
      expect(await stale(1_000, 10)).toEqual([]);
      expect(await stale(5_000, 0)).toEqual([]);
      expect(await stale(5_000, -1)).toEqual([]);
      expect(await responses.staleRunningResponses(5_000, 3_999, 10)).toHaveLength(4);

      // A touched run is no longer stale, nor one replaced by its final response.
      expect(await responses.touchRunningResponses([oldest.id], 6_000)).toEqual([oldest.id]);
      expect(await responses.replaceRunningResponse(other, middle.id, answered(middle, 'failed'), 6_000, null)).toBe(
        true,
      );
      expect(await stale(5_000, 10)).toEqual([newest.id]);
    });

    it('gives back appended events in sequence order, after a sequence number, a page at a time', async () => {
      const tenant = `ten_${unique()}`;
      const record = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(record);
      // More than one INSERT takes, and given in reverse: the order read is the sequence numbers', not the appends'.
      const events = streamEvents(0, 1_200);
      await responses.appendResponseEvents(record.id, [...events].reverse());
      await responses.appendResponseEvents(record.id, []);
      const read = (after: number, limit: number) => responses.responseEvents(tenant, record.id, after, limit, NOW);

      const pages: StoredResponseEvent[][] = [];
      for (let after = -1; ; ) {
        const page = await read(after, 500);
        if (page.length === 0) break;
        pages.push(page);
        after = page[page.length - 1]?.sequenceNumber ?? after;
      }
      expect(pages.map((page) => page.length)).toEqual([500, 500, 200]);
      expect(pages.flat()).toEqual(events);
      expect(await read(10, 3)).toEqual(events.slice(11, 14));
      expect(await read(1_199, 10)).toEqual([]);

      // A later append goes on from the last event.
      const more = streamEvents(1_200, 2);
      await responses.appendResponseEvents(record.id, more);
      expect(await read(1_198, 10)).toEqual([events[1_199], ...more]);
    });

    it('gives back frames byte for byte', async () => {
      const tenant = `ten_${unique()}`;
      const record = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(record);
      // As sent, the text is JSON in a data line (its NUL escaped); raw in a frame, it is every awkward character but
      // NUL, which no frame holds.
      const events = [
        streamEvent(0, AWKWARD_TEXT),
        { sequenceNumber: 1, frame: `: ${AWKWARD_TEXT.replaceAll('\u0000', '')}\n\n` },
        streamEvent(2, ''),
      ];
      await responses.appendResponseEvents(record.id, events);
      expect(await responses.responseEvents(tenant, record.id, -1, 10, NOW)).toEqual(events);
    });

    it('rejects a sequence number stored already or given twice, and keeps what was stored', async () => {
      const tenant = `ten_${unique()}`;
      const record = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(record);
      const stored = streamEvents(0, 3);
      await responses.appendResponseEvents(record.id, stored);

      await expect(
        responses.appendResponseEvents(record.id, [streamEvent(3), streamEvent(1, 'again')]),
      ).rejects.toThrow();
      await expect(responses.appendResponseEvents(record.id, [streamEvent(3), streamEvent(3)])).rejects.toThrow();
      // The duplicate in the last of several INSERTs takes the earlier ones back too.
      await expect(
        responses.appendResponseEvents(record.id, [...streamEvents(3, 1_100), streamEvent(2, 'again')]),
      ).rejects.toThrow();
      expect(await responses.responseEvents(tenant, record.id, -1, 2_000, NOW)).toEqual(stored);
    });

    it('rejects events of a response not stored', async () => {
      await expect(responses.appendResponseEvents(`resp_${unique()}`, streamEvents(0, 2))).rejects.toThrow();
    });

    it("reads no events of another tenant's response, an expired one, a deleted one or an unknown one", async () => {
      const tenant = `ten_${unique()}`;
      const record = runningResponse(tenant, 'in_progress');
      const deleted = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(record);
      await responses.saveResponse(deleted);
      const events = streamEvents(0, 3);
      await responses.appendResponseEvents(record.id, events);
      await responses.appendResponseEvents(deleted.id, events);
      expect(await responses.deleteResponse(tenant, deleted.id, NOW)).toBe(true);

      expect(await responses.responseEvents(tenant, record.id, -1, 10, record.expiresAt - 1)).toEqual(events);
      expect(await responses.responseEvents(`ten_${unique()}`, record.id, -1, 10, NOW)).toEqual([]);
      expect(await responses.responseEvents(tenant, record.id, -1, 10, record.expiresAt)).toEqual([]);
      expect(await responses.responseEvents(tenant, deleted.id, -1, 10, NOW)).toEqual([]);
      expect(await responses.responseEvents(tenant, `resp_${unique()}`, -1, 10, NOW)).toEqual([]);
    });

    it('reads no events with a limit of 0 or below', async () => {
      const tenant = `ten_${unique()}`;
      const record = runningResponse(tenant, 'in_progress');
      await responses.saveResponse(record);
      await responses.appendResponseEvents(record.id, streamEvents(0, 3));
      expect(await responses.responseEvents(tenant, record.id, -1, 0, NOW)).toEqual([]);
      expect(await responses.responseEvents(tenant, record.id, -1, -1, NOW)).toEqual([]);
      expect(await responses.responseEvents(tenant, record.id, -1, 1, NOW)).toEqual([streamEvent(0)]);
    });
  });
}
