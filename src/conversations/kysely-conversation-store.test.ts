import { afterAll } from 'vitest';
import { conformanceStoreUrls } from '../../test/support/postgres-schema.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { describeConversationStoreConformance } from './conversation-store-conformance.js';
import { KyselyConversationStore } from './kysely-conversation-store.js';

const urls = conformanceStoreUrls('conversations_store');

async function open(url: string): Promise<{ store: Store; conversations: KyselyConversationStore }> {
  const store = await createStore(url);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  return { store, conversations: new KyselyConversationStore(store.kysely) };
}

afterAll(() => urls.cleanup());

describeConversationStoreConformance('sqlite', { open: () => open(urls.sqlite) });

describeConversationStoreConformance('postgres', { open: async () => open(await urls.postgres()) });
