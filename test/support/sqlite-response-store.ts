import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { KyselyResponseStore } from '../../src/responses/kysely-response-store.js';
import type { ResponseStore } from '../../src/responses/response-store.js';
import { createStore } from '../../src/store/create-store.js';
import { KyselyStore } from '../../src/store/kysely-store.js';

/**
 * A response store on a migrated SQLite file of its own, opened before the calling file's tests and closed (its
 * directory removed) after them. Read `current()` inside a test or hook: it is set once `beforeAll` has run.
 */
export function sqliteResponseStoreForFile(prefix: string): { current: () => ResponseStore } {
  const directory = mkdtempSync(join(tmpdir(), prefix));
  let store: KyselyStore | undefined;
  let responses: ResponseStore | undefined;
  beforeAll(async () => {
    const opened = await createStore(`sqlite://${join(directory, 'store.db')}`);
    await opened.migrate();
    if (!(opened instanceof KyselyStore)) throw new Error('expected a Kysely store');
    store = opened;
    responses = new KyselyResponseStore(opened.kysely);
  });
  afterAll(async () => {
    await store?.close();
    rmSync(directory, { recursive: true, force: true });
  });
  return {
    current: () => {
      if (responses === undefined) throw new Error('the response store opens in beforeAll');
      return responses;
    },
  };
}
