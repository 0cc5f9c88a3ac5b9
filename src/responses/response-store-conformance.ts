import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../store/store.js';
import type { ResponseStore, StoredResponse } from './response-store.js';

/** How the conformance suite reaches one implementation. */
export interface ResponseStoreConformanceOptions {
  /** Opens a new, migrated gateway store and the response store over it. The suite closes the gateway store. */
  open: () => Promise<{ store: Store; responses: ResponseStore }>;
}

const unique = () => randomBytes(6).toString('hex');

/**
 * The time most tests store at. The sweep test keeps its expiries far below it, so that its counts see only its
 * own responses even though every test shares one database.
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
    ...overrides,
  };
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
  });
}
