import { afterAll } from 'vitest';
import { conformanceStoreUrls } from '../../test/support/postgres-schema.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { describeBatchStoreConformance } from './batch-store-conformance.js';
import { KyselyBatchStore } from './kysely-batch-store.js';

const urls = conformanceStoreUrls('batch_store');

async function open(url: string): Promise<{ store: Store; batches: KyselyBatchStore }> {
  const store = await createStore(url);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  return { store, batches: new KyselyBatchStore(store.kysely) };
}

afterAll(() => urls.cleanup());

describeBatchStoreConformance('sqlite', { open: () => open(urls.sqlite) });

describeBatchStoreConformance('postgres', { open: async () => open(await urls.postgres()) });
