import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceStoreUrls } from '../../test/support/postgres-schema.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import { KyselyResponseStore, type ResponseTables } from './kysely-response-store.js';
import type { StoredResponse } from './response-store.js';
import { describeResponseStoreConformance } from './response-store-conformance.js';

const urls = conformanceStoreUrls('responses_store');
const cascadeUrls = conformanceStoreUrls('responses_cascade');

async function open(url: string): Promise<{ store: KyselyStore; responses: KyselyResponseStore }> {
  const store = await createStore(url);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  return { store, responses: new KyselyResponseStore(store.kysely) };
}

afterAll(async () => {
  await urls.cleanup();
  await cascadeUrls.cleanup();
});

describeResponseStoreConformance('sqlite', { open: () => open(urls.sqlite) });

describeResponseStoreConformance('postgres', { open: async () => open(await urls.postgres()) });

const NOW = 1_700_000_000_000;
const HOUR = 3_600_000;

/** A running background response of `tenantId`, expiring at `expiresAt`. */
function runningResponse(tenantId: string, expiresAt = NOW + HOUR): StoredResponse {
  const id = `resp_${randomBytes(6).toString('hex')}`;
  return {
    id,
    tenantId,
    keyId: 'key_a',
    previousResponseId: null,
    inputItems: [],
    response: { id, object: 'response', status: 'in_progress', output: [] },
    createdAt: NOW - HOUR,
    expiresAt,
    heartbeatAt: NOW,
  };
}

// Events are deleted by the foreign key's cascade, not by the store's deletes: check that no path leaves any behind.
for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`KyselyResponseStore on ${kind}: events go with their response`, () => {
    let store: KyselyStore;
    let responses: KyselyResponseStore;

    beforeAll(async () => {
      ({ store, responses } = await open(kind === 'sqlite' ? cascadeUrls.sqlite : await cascadeUrls.postgres()));
    });
    afterAll(async () => store?.close());

    /** Saves `records` with 600 events each (two INSERTs' worth). */
    async function saveWithEvents(...records: StoredResponse[]): Promise<void> {
      for (const record of records) {
        await responses.saveResponse(record);
        const events = Array.from({ length: 600 }, (_, sequenceNumber) => ({
          sequenceNumber,
          frame: `event: response.output_text.delta\ndata: {"sequence_number":${sequenceNumber}}\n\n`,
        }));
        await responses.appendResponseEvents(record.id, events);
      }
    }

    /** How many rows of `response_events` belong to each of `records`, read with raw Kysely. */
    async function eventRows(...records: StoredResponse[]): Promise<number[]> {
      return Promise.all(
        records.map(async (record) => {
          const row = await store.kysely
            .withTables<ResponseTables>()
            .selectFrom('response_events')
            .select((eb) => eb.fn.countAll<number | string>().as('count'))
            .where('response_id', '=', record.id)
            .executeTakeFirstOrThrow();
          return Number(row.count);
        }),
      );
    }

    it('deleteResponse deletes the events of the response, and of no other', async () => {
      const [deleted, kept] = [runningResponse('ten_one'), runningResponse('ten_one')];
      await saveWithEvents(deleted, kept);
      expect(await eventRows(deleted, kept)).toEqual([600, 600]);
      expect(await responses.deleteResponse('ten_one', deleted.id, NOW)).toBe(true);
      expect(await eventRows(deleted, kept)).toEqual([0, 600]);
    });

    it("deleteTenantResponses deletes the events of the tenant's responses, expired ones too, and no other's", async () => {
      const tenant = `ten_${randomBytes(6).toString('hex')}`;
      const [live, expired, other] = [
        runningResponse(tenant),
        runningResponse(tenant, NOW - HOUR),
        runningResponse('ten_other'),
      ];
      await saveWithEvents(live, expired, other);
      expect(await responses.deleteTenantResponses(tenant)).toBe(2);
      expect(await eventRows(live, expired, other)).toEqual([0, 0, 600]);
    });

    it('deleteExpiredResponses deletes the events of the expired responses it sweeps, and of no other', async () => {
      // Expiries far below every other test's, so the sweep finds these only.
      const [oldest, older, live] = [
        runningResponse('ten_a', 10),
        runningResponse('ten_b', 20),
        runningResponse('ten_a'),
      ];
      await saveWithEvents(oldest, older, live);
      expect(await responses.deleteExpiredResponses(NOW, 1)).toBe(1);
      expect(await eventRows(oldest, older, live)).toEqual([0, 600, 600]);
      expect(await responses.deleteExpiredResponses(NOW, 10)).toBe(1);
      expect(await eventRows(oldest, older, live)).toEqual([0, 0, 600]);
    });
  });
}
