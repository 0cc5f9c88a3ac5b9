import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import {
  MIGRATION_TEST_KINDS,
  migrationTestStores,
  tablesAndIndexesOf,
} from '../../../test/support/migration-stores.js';
import type { KyselyStore } from '../kysely-store.js';

const BEFORE = '0013-background-responses';
const openStore = migrationTestStores('m0014');

/** Whether the store has the `response_events` table. */
async function hasTable(store: KyselyStore): Promise<boolean> {
  return (await tablesAndIndexesOf(store)).has('response_events');
}

/** Stores the response `id` with raw SQL, as the table stands after migration 0013. */
async function insertResponse(store: KyselyStore, id: string): Promise<void> {
  await sql`insert into responses (id, tenant_id, key_id, previous_response_id, input_items, response, created_at,
    expires_at, status, heartbeat_at) values (${id}, 'ten_a', 'key_a', null, '[]', '{"status":"in_progress"}', 1, 2,
    'in_progress', 1)`.execute(store.kysely);
}

/** Stores events 0 to `count - 1` of the response `id`. */
async function insertEvents(store: KyselyStore, id: string, count: number): Promise<void> {
  for (let sequence = 0; sequence < count; sequence++) {
    await sql`insert into response_events (response_id, sequence_number, frame)
      values (${id}, ${sequence}, ${`event: e\ndata: {"sequence_number":${sequence}}\n\n`})`.execute(store.kysely);
  }
}

/** The response ids of the stored events, one per event, in order. */
async function eventsOf(store: KyselyStore): Promise<string[]> {
  const rows = await sql<{ response_id: string }>`select response_id from response_events
    order by response_id, sequence_number`.execute(store.kysely);
  return rows.rows.map((row) => row.response_id);
}

for (const kind of MIGRATION_TEST_KINDS) {
  describe(`migration 0014 (response events) on ${kind}`, () => {
    it('creates the table, drops it going down, and comes back up', async () => {
      const store = await openStore(kind);
      try {
        await store.migrate(BEFORE);
        expect(await hasTable(store)).toBe(false);
        await insertResponse(store, 'resp_old');

        await store.migrate();
        expect(await hasTable(store)).toBe(true);
        await insertEvents(store, 'resp_old', 2);

        await store.migrate(BEFORE);
        expect(await hasTable(store)).toBe(false);
        const kept = await sql<{ id: string }>`select id from responses`.execute(store.kysely);
        expect(kept.rows).toEqual([{ id: 'resp_old' }]);

        await store.migrate();
        expect(await hasTable(store)).toBe(true);
        expect(await eventsOf(store)).toEqual([]);
      } finally {
        await store.close();
      }
    });

    it("deletes a response's events with it, rejects events of no stored response and a sequence number twice", async () => {
      const store = await openStore(kind);
      try {
        await store.migrate();
        await insertResponse(store, 'resp_gone');
        await insertResponse(store, 'resp_kept');
        await insertEvents(store, 'resp_gone', 3);
        await insertEvents(store, 'resp_kept', 2);

        await sql`delete from responses where id = 'resp_gone'`.execute(store.kysely);
        expect(await eventsOf(store)).toEqual(['resp_kept', 'resp_kept']);

        await expect(insertEvents(store, 'resp_never', 1)).rejects.toThrow();
        await expect(insertEvents(store, 'resp_kept', 1)).rejects.toThrow();
        expect(await eventsOf(store)).toEqual(['resp_kept', 'resp_kept']);
      } finally {
        await store.close();
      }
    });
  });
}
