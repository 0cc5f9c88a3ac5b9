import { afterAll } from 'vitest';
import { conformanceStoreUrls } from '../../test/support/postgres-schema.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { KyselyResponseStore } from './kysely-response-store.js';
import { describeResponseStoreConformance } from './response-store-conformance.js';

const urls = conformanceStoreUrls('responses_store');

async function open(url: string): Promise<{ store: Store; responses: KyselyResponseStore }> {
  const store = await createStore(url);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  return { store, responses: new KyselyResponseStore(store.kysely) };
}

afterAll(() => urls.cleanup());

describeResponseStoreConformance('sqlite', { open: () => open(urls.sqlite) });

describeResponseStoreConformance('postgres', { open: async () => open(await urls.postgres()) });
