import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceStoreUrls } from '../../test/support/postgres-schema.js';
import { NotFoundError } from '../errors/gateway-error.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { Conversations } from './conversations.js';
import { KyselyConversationStore } from './kysely-conversation-store.js';

const urls = conformanceStoreUrls('conversations_service');
let store: Store;
let conversations: Conversations;
const tenant = 'ten_alice';

beforeAll(async () => {
  store = await createStore(urls.sqlite);
  await store.migrate();
  if (!(store instanceof KyselyStore)) throw new Error('expected a Kysely store');
  conversations = new Conversations(new KyselyConversationStore(store.kysely), { now: () => 1_764_000_000_000 });
});
afterAll(async () => {
  await store?.close();
  await urls.cleanup();
});

describe('Conversations', () => {
  it('keeps what a response added after the items it was given, in order', async () => {
    const created = await conversations.create(tenant, { items: [{ role: 'user', content: 'Hi.' }] });
    expect(created).toEqual({ id: created.id, object: 'conversation', created_at: 1_764_000_000, metadata: {} });
    const [given] = await conversations.historyOf(tenant, created.id);
    expect(given).toMatchObject({ type: 'message', role: 'user', status: 'completed' });
    expect(given!.content).toEqual([{ type: 'input_text', text: 'Hi.' }]);
    const input = [{ id: 'msg_in', type: 'message', role: 'user', content: [] }];
    await conversations.appendResponse(tenant, created.id, input, {
      output: [{ id: 'msg_out', type: 'message', role: 'assistant', content: [] }],
    });
    expect((await conversations.historyOf(tenant, created.id)).map((item) => item.id)).toEqual([
      given!.id,
      'msg_in',
      'msg_out',
    ]);
  });

  it('says which is missing: the conversation (404, param conversation for a response) or the item', async () => {
    const created = await conversations.create(tenant, {});
    await expect(conversations.historyOf('ten_bob', created.id)).rejects.toMatchObject({
      status: 404,
      code: 'conversation_not_found',
      param: 'conversation',
    });
    await expect(conversations.getItem(tenant, created.id, 'msg_none')).rejects.toMatchObject({
      code: 'item_not_found',
    });
    await expect(conversations.getItem(tenant, 'conv_none', 'msg_none')).rejects.toMatchObject({
      code: 'conversation_not_found',
    });
    await expect(
      conversations.listItems(tenant, created.id, { limit: 5, order: 'asc', after: 'msg_none' }),
    ).rejects.toMatchObject({ param: 'after', code: 'invalid_value' });
    await conversations.delete(tenant, created.id);
    await expect(conversations.appendResponse(tenant, created.id, [], { output: [] })).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});
