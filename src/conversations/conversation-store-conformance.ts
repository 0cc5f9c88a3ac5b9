import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../store/store.js';
import { type ConversationRecord, type ConversationStore, UnknownItemError } from './conversation-store.js';

/** How the conformance suite reaches one implementation. */
export interface ConversationStoreConformanceOptions {
  /** Opens a new, migrated gateway store and the conversation store over it. The suite closes the gateway store. */
  open: () => Promise<{ store: Store; conversations: ConversationStore }>;
}

const unique = () => randomBytes(6).toString('hex');

const NOW = 1_700_000_000_000;

/** Text that JSON and the databases could each get wrong: accents, CJK, an emoji, quotes, escapes, a NUL. */
const AWKWARD_TEXT = 'Grüße, 世界 👋 "quoted" \\ back\nslash\ttab \u0000 nul';

function conversationRecord(tenantId: string, metadata: Record<string, string> = {}): ConversationRecord {
  return { id: `conv_${unique()}`, tenantId, metadata, createdAt: NOW };
}

/** A user message with a fresh id (or `id`), labelled `text` so tests can tell items apart. */
function message(text: string, id = `msg_${unique()}`): Record<string, unknown> {
  return { id, type: 'message', role: 'user', content: [{ type: 'input_text', text }] };
}

/** The labels of `items` made by `message`. */
function texts(items: Record<string, unknown>[] | undefined): string[] | undefined {
  return items?.map((item) => (item.content as { text: string }[])[0]?.text ?? '');
}

/** Registers the `ConversationStore` conformance tests (Vitest) for one implementation. */
export function describeConversationStoreConformance(name: string, options: ConversationStoreConformanceOptions): void {
  describe(`ConversationStore conformance: ${name}`, () => {
    let store: Store;
    let conversations: ConversationStore;

    beforeAll(async () => {
      ({ store, conversations } = await options.open());
    });
    afterAll(async () => store?.close());

    /** A new conversation of `tenant` holding messages labelled `labels`. */
    async function created(tenant: string, labels: string[]): Promise<ConversationRecord> {
      const record = conversationRecord(tenant);
      await conversations.createConversation(
        record,
        labels.map((label) => message(label)),
      );
      return record;
    }

    it('gives back the conversation and its items as stored, unicode and all', async () => {
      const tenant = `ten_${unique()}`;
      const record = conversationRecord(tenant, { topic: AWKWARD_TEXT, 'ключ 🔑': 'значение' });
      const items = [
        message(AWKWARD_TEXT),
        {
          id: `fc_${unique()}`,
          type: 'function_call',
          call_id: 'call_1',
          name: 'lookup',
          arguments: '{"q":"Grüße"}',
          nested: { deeper: [1, [2, { three: true }]], max: Number.MAX_SAFE_INTEGER, small: 1e-7, none: null },
        },
        { id: `fco_${unique()}`, type: 'function_call_output', call_id: 'call_1', output: 'Ответ ✓ 🚀' },
      ];
      await conversations.createConversation(record, items);
      expect(await conversations.getConversation(tenant, record.id)).toEqual(record);
      expect(await conversations.allItems(tenant, record.id)).toEqual(items);
      expect(await conversations.getConversation(tenant, `conv_${unique()}`)).toBeUndefined();
      expect(await conversations.allItems(tenant, `conv_${unique()}`)).toBeUndefined();
    });

    it('keeps a conversation created without items, and appends to it', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, []);
      expect(await conversations.allItems(tenant, record.id)).toEqual([]);
      expect(await conversations.appendItems(tenant, record.id, [])).toBe(true);
      expect(await conversations.appendItems(tenant, record.id, [message('a')])).toBe(true);
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['a']);
      expect(await conversations.appendItems(tenant, `conv_${unique()}`, [])).toBe(false);
    });

    it('rejects an id already stored, by any tenant, and keeps the first', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, ['a']);
      await expect(conversations.createConversation({ ...record, metadata: { x: 'y' } }, [])).rejects.toThrow();
      await expect(
        conversations.createConversation({ ...record, tenantId: `ten_${unique()}` }, [message('b')]),
      ).rejects.toThrow();
      expect(await conversations.getConversation(tenant, record.id)).toEqual(record);
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['a']);
    });

    it("neither shows nor changes another tenant's conversation", async () => {
      const tenant = `ten_${unique()}`;
      const other = `ten_${unique()}`;
      const record = conversationRecord(tenant, { k: 'v' });
      const shared = message('shared');
      await conversations.createConversation(record, [shared, message('b')]);
      const itemId = shared.id as string;

      expect(await conversations.getConversation(other, record.id)).toBeUndefined();
      expect(await conversations.allItems(other, record.id)).toBeUndefined();
      expect(await conversations.listItems(other, record.id, { limit: 10, order: 'asc' })).toBeUndefined();
      expect(await conversations.getItem(other, record.id, itemId)).toBeUndefined();
      expect(await conversations.updateConversationMetadata(other, record.id, { k: 'changed' })).toBeUndefined();
      expect(await conversations.appendItems(other, record.id, [message('c')])).toBe(false);
      expect(await conversations.appendItems(other, record.id, [])).toBe(false);
      expect(await conversations.deleteItem(other, record.id, itemId)).toBe(false);
      expect(await conversations.deleteConversation(other, record.id)).toBe(false);
      expect(await conversations.deleteTenantConversations(other)).toBe(0);

      expect(await conversations.getConversation(tenant, record.id)).toEqual(record);
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['shared', 'b']);
      expect(await conversations.getItem(tenant, record.id, itemId)).toEqual(shared);
    });

    it('replaces the metadata and keeps the rest', async () => {
      const tenant = `ten_${unique()}`;
      const record = conversationRecord(tenant, { a: '1', b: '2' });
      await conversations.createConversation(record, [message('a')]);
      const updated = { ...record, metadata: { c: 'trois ✓' } };
      expect(await conversations.updateConversationMetadata(tenant, record.id, { c: 'trois ✓' })).toEqual(updated);
      expect(await conversations.getConversation(tenant, record.id)).toEqual(updated);
      expect(await conversations.updateConversationMetadata(tenant, record.id, {})).toEqual({
        ...record,
        metadata: {},
      });
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['a']);
      expect(await conversations.updateConversationMetadata(tenant, `conv_${unique()}`, {})).toBeUndefined();
    });

    it('appends after the last item, in order, append after append', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, ['1', '2']);
      expect(await conversations.appendItems(tenant, record.id, [message('3')])).toBe(true);
      expect(await conversations.appendItems(tenant, record.id, [message('4'), message('5'), message('6')])).toBe(true);
      expect(await conversations.appendItems(tenant, record.id, [message('7')])).toBe(true);
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['1', '2', '3', '4', '5', '6', '7']);
    });

    it('keeps each of many concurrent appends whole and in order, and loses none', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, []);
      const calls = 10;
      const perCall = 3;
      const results = await Promise.all(
        Array.from({ length: calls }, (_, call) =>
          conversations.appendItems(
            tenant,
            record.id,
            Array.from({ length: perCall }, (_, index) => message(`${call}.${index}`)),
          ),
        ),
      );
      expect(results).toEqual(Array.from({ length: calls }, () => true));
      const labels = texts(await conversations.allItems(tenant, record.id)) ?? [];
      expect(labels).toHaveLength(calls * perCall);
      for (let start = 0; start < labels.length; start += perCall) {
        const call = labels[start]?.split('.')[0];
        expect(labels.slice(start, start + perCall)).toEqual(
          Array.from({ length: perCall }, (_, index) => `${call}.${index}`),
        );
      }
      expect(new Set(labels.map((label) => label.split('.')[0])).size).toBe(calls);
    });

    it('pages items in either order, after an item, and says whether more follow', async () => {
      const tenant = `ten_${unique()}`;
      const items = ['0', '1', '2', '3', '4'].map((label) => message(label));
      const record = conversationRecord(tenant);
      await conversations.createConversation(record, items);
      const idOf = (index: number) => items[index]?.id as string;
      const page = async (order: 'asc' | 'desc', limit: number, after?: string) => {
        const result = await conversations.listItems(tenant, record.id, {
          order,
          limit,
          ...(after === undefined ? {} : { after }),
        });
        return result === undefined ? undefined : { labels: texts(result.items), hasMore: result.hasMore };
      };

      expect(await page('asc', 2)).toEqual({ labels: ['0', '1'], hasMore: true });
      expect(await page('asc', 2, idOf(1))).toEqual({ labels: ['2', '3'], hasMore: true });
      expect(await page('asc', 2, idOf(3))).toEqual({ labels: ['4'], hasMore: false });
      expect(await page('asc', 2, idOf(4))).toEqual({ labels: [], hasMore: false });
      expect(await page('asc', 5)).toEqual({ labels: ['0', '1', '2', '3', '4'], hasMore: false });
      expect(await page('asc', 100)).toEqual({ labels: ['0', '1', '2', '3', '4'], hasMore: false });
      expect(await page('desc', 2)).toEqual({ labels: ['4', '3'], hasMore: true });
      expect(await page('desc', 2, idOf(3))).toEqual({ labels: ['2', '1'], hasMore: true });
      expect(await page('desc', 2, idOf(1))).toEqual({ labels: ['0'], hasMore: false });
      expect(await page('desc', 1, idOf(0))).toEqual({ labels: [], hasMore: false });

      const unknown = conversations.listItems(tenant, record.id, { order: 'asc', limit: 2, after: 'msg_absent' });
      await expect(unknown).rejects.toBeInstanceOf(UnknownItemError);
      await expect(unknown).rejects.toMatchObject({ itemId: 'msg_absent' });
      // An item of another conversation is no item of this one.
      const elsewhere = await created(tenant, ['x']);
      const [foreign] = (await conversations.allItems(tenant, elsewhere.id)) ?? [];
      await expect(
        conversations.listItems(tenant, record.id, { order: 'asc', limit: 2, after: foreign?.id as string }),
      ).rejects.toBeInstanceOf(UnknownItemError);
      expect(await conversations.listItems(tenant, `conv_${unique()}`, { order: 'asc', limit: 2 })).toBeUndefined();
    });

    it('reads the last of two items sharing an id, pages after it, and deletes both', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, ['0']);
      const first = message('first', 'msg_twice');
      const last = message('last', 'msg_twice');
      await conversations.appendItems(tenant, record.id, [first, message('between')]);
      await conversations.appendItems(tenant, record.id, [last, message('after')]);

      expect(await conversations.getItem(tenant, record.id, 'msg_twice')).toEqual(last);
      const asc = await conversations.listItems(tenant, record.id, { order: 'asc', limit: 10, after: 'msg_twice' });
      expect(texts(asc?.items)).toEqual(['after']);
      const desc = await conversations.listItems(tenant, record.id, { order: 'desc', limit: 10, after: 'msg_twice' });
      expect(texts(desc?.items)).toEqual(['between', 'first', '0']);

      expect(await conversations.deleteItem(tenant, record.id, 'msg_twice')).toBe(true);
      expect(await conversations.getItem(tenant, record.id, 'msg_twice')).toBeUndefined();
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['0', 'between', 'after']);
      expect(await conversations.deleteItem(tenant, record.id, 'msg_twice')).toBe(false);
      expect(await conversations.getItem(tenant, `conv_${unique()}`, 'msg_twice')).toBeUndefined();
      expect(await conversations.deleteItem(tenant, `conv_${unique()}`, 'msg_twice')).toBe(false);

      // Appending after a deletion keeps going after the last item, never before.
      await conversations.appendItems(tenant, record.id, [message('later')]);
      expect(texts(await conversations.allItems(tenant, record.id))).toEqual(['0', 'between', 'after', 'later']);
    });

    it('deletes a conversation with its items, once', async () => {
      const tenant = `ten_${unique()}`;
      const record = await created(tenant, ['a', 'b']);
      const kept = await created(tenant, ['k']);
      const [item] = (await conversations.allItems(tenant, record.id)) ?? [];
      expect(await conversations.deleteConversation(tenant, record.id)).toBe(true);
      expect(await conversations.getConversation(tenant, record.id)).toBeUndefined();
      expect(await conversations.allItems(tenant, record.id)).toBeUndefined();
      expect(await conversations.getItem(tenant, record.id, item?.id as string)).toBeUndefined();
      expect(await conversations.appendItems(tenant, record.id, [message('c')])).toBe(false);
      expect(await conversations.deleteConversation(tenant, record.id)).toBe(false);
      expect(texts(await conversations.allItems(tenant, kept.id))).toEqual(['k']);

      // The id is free again, and a new conversation under it starts empty.
      await conversations.createConversation(record, []);
      expect(await conversations.allItems(tenant, record.id)).toEqual([]);
    });

    it("deletes every conversation of one tenant with their items, and no other tenant's", async () => {
      const tenant = `ten_${unique()}`;
      const other = `ten_${unique()}`;
      const gone = [await created(tenant, ['a', 'b']), await created(tenant, []), await created(tenant, ['c'])];
      const kept = await created(other, ['k']);
      expect(await conversations.deleteTenantConversations(tenant)).toBe(3);
      for (const record of gone) {
        expect(await conversations.getConversation(tenant, record.id)).toBeUndefined();
        expect(await conversations.allItems(tenant, record.id)).toBeUndefined();
      }
      expect(await conversations.deleteTenantConversations(tenant)).toBe(0);
      expect(await conversations.getConversation(other, kept.id)).toEqual(kept);
      expect(texts(await conversations.allItems(other, kept.id))).toEqual(['k']);
    });
  });
}
