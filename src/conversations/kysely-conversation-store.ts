import type { Kysely, Selectable, Transaction } from 'kysely';
import type { DatabaseSchema } from '../store/database-schema.js';
import type { ItemsPageQuery } from '../store/list-page.js';
import { type ConversationRecord, type ConversationStore, UnknownItemError } from './conversation-store.js';

/** `conversations` (migration 0012). */
export interface ConversationsTable {
  id: string;
  tenant_id: string;
  /** JSON object of strings. */
  metadata: string;
  created_at: number;
  /** The position the next appended item takes. Default 0. */
  next_position: number;
}

/** `conversation_items` (migration 0012): one row per item, keyed by conversation and position. */
export interface ConversationItemsTable {
  conversation_id: string;
  /** 0, 1, … in the order the items were added; gaps are harmless. */
  position: number;
  /** The item's `id`; not unique. */
  item_id: string;
  /** JSON object. */
  item: string;
}

/** The tables of the conversation store, next to the gateway's own (a type alias: Kysely needs an index signature). */
export type ConversationTables = {
  conversations: ConversationsTable;
  conversation_items: ConversationItemsTable;
};

type ConversationDatabase = DatabaseSchema & ConversationTables;

/** Item rows per INSERT: 4 parameters each, far below SQLite's and PostgreSQL's limits on parameters. */
const ITEMS_PER_INSERT = 250;

/** Conversation ids per DELETE of a purge's items. */
const IDS_PER_DELETE = 500;

/**
 * `ConversationStore` over the gateway store's Kysely instance (SQLite or PostgreSQL). Item reads and writes reach
 * a conversation's items only through a check, in the same statement or just before, that the tenant owns it.
 */
export class KyselyConversationStore implements ConversationStore {
  private readonly db: Kysely<ConversationDatabase>;

  constructor(db: Kysely<DatabaseSchema>) {
    this.db = db.withTables<ConversationTables>();
  }

  async createConversation(record: ConversationRecord, items: Record<string, unknown>[]): Promise<void> {
    await this.db.transaction().execute(async (transaction) => {
      await transaction
        .insertInto('conversations')
        .values({
          id: record.id,
          tenant_id: record.tenantId,
          metadata: JSON.stringify(record.metadata),
          created_at: record.createdAt,
          next_position: items.length,
        })
        .execute();
      await insertItems(transaction, record.id, 0, items);
    });
  }

  async getConversation(tenantId: string, id: string): Promise<ConversationRecord | undefined> {
    const row = await this.db
      .selectFrom('conversations')
      .selectAll()
      .where('id', '=', id)
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    return row === undefined ? undefined : conversationFromRow(row);
  }

  async updateConversationMetadata(
    tenantId: string,
    id: string,
    metadata: Record<string, string>,
  ): Promise<ConversationRecord | undefined> {
    const row = await this.db
      .updateTable('conversations')
      .set({ metadata: JSON.stringify(metadata) })
      .where('id', '=', id)
      .where('tenant_id', '=', tenantId)
      .returningAll()
      .executeTakeFirst();
    return row === undefined ? undefined : conversationFromRow(row);
  }

  async deleteConversation(tenantId: string, id: string): Promise<boolean> {
    return this.db.transaction().execute(async (transaction) => {
      // The conversation row first: on PostgreSQL this waits for an append holding its row lock, so the items
      // deleted next include that append's.
      const deleted = await transaction
        .deleteFrom('conversations')
        .where('id', '=', id)
        .where('tenant_id', '=', tenantId)
        .executeTakeFirst();
      if (Number(deleted.numDeletedRows) === 0) return false;
      await transaction.deleteFrom('conversation_items').where('conversation_id', '=', id).execute();
      return true;
    });
  }

  async appendItems(tenantId: string, conversationId: string, items: Record<string, unknown>[]): Promise<boolean> {
    if (items.length === 0) return (await this.getConversation(tenantId, conversationId)) !== undefined;
    // One transaction, so a failed insert gives its positions back. The reservation alone already keeps concurrent
    // appends apart: each gets its own block of positions from one atomic UPDATE.
    return this.db.transaction().execute(async (transaction) => {
      const reserved = await transaction
        .updateTable('conversations')
        .set((eb) => ({ next_position: eb('next_position', '+', items.length) }))
        .where('id', '=', conversationId)
        .where('tenant_id', '=', tenantId)
        .returning('next_position')
        .executeTakeFirst();
      if (reserved === undefined) return false;
      await insertItems(transaction, conversationId, Number(reserved.next_position) - items.length, items);
      return true;
    });
  }

  async allItems(tenantId: string, conversationId: string): Promise<Record<string, unknown>[] | undefined> {
    if ((await this.getConversation(tenantId, conversationId)) === undefined) return undefined;
    const rows = await this.db
      .selectFrom('conversation_items')
      .select('item')
      .where('conversation_id', '=', conversationId)
      .orderBy('position', 'asc')
      .execute();
    return rows.map((row) => parseItem(row.item));
  }

  async listItems(
    tenantId: string,
    conversationId: string,
    query: ItemsPageQuery,
  ): Promise<{ items: Record<string, unknown>[]; hasMore: boolean } | undefined> {
    if ((await this.getConversation(tenantId, conversationId)) === undefined) return undefined;
    let select = this.db
      .selectFrom('conversation_items')
      .select('item')
      .where('conversation_id', '=', conversationId)
      .orderBy('position', query.order)
      .limit(query.limit + 1);
    if (query.after !== undefined) {
      const anchor = await this.db
        .selectFrom('conversation_items')
        .select((eb) => eb.fn.max('position').as('position'))
        .where('conversation_id', '=', conversationId)
        .where('item_id', '=', query.after)
        .executeTakeFirst();
      if (anchor?.position === undefined || anchor.position === null) throw new UnknownItemError(query.after);
      select = select.where('position', query.order === 'asc' ? '>' : '<', Number(anchor.position));
    }
    const rows = await select.execute();
    return {
      items: rows.slice(0, query.limit).map((row) => parseItem(row.item)),
      hasMore: rows.length > query.limit,
    };
  }

  async getItem(
    tenantId: string,
    conversationId: string,
    itemId: string,
  ): Promise<Record<string, unknown> | undefined> {
    const row = await this.db
      .selectFrom('conversation_items')
      .select('item')
      .where('conversation_id', 'in', this.ownedConversation(tenantId, conversationId))
      .where('item_id', '=', itemId)
      .orderBy('position', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row === undefined ? undefined : parseItem(row.item);
  }

  async deleteItem(tenantId: string, conversationId: string, itemId: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('conversation_items')
      .where('conversation_id', 'in', this.ownedConversation(tenantId, conversationId))
      .where('item_id', '=', itemId)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async deleteTenantConversations(tenantId: string): Promise<number> {
    return this.db.transaction().execute(async (transaction) => {
      // Conversations first, as in `deleteConversation`, then the items of exactly those.
      const deleted = await transaction
        .deleteFrom('conversations')
        .where('tenant_id', '=', tenantId)
        .returning('id')
        .execute();
      const ids = deleted.map((row) => row.id);
      for (let start = 0; start < ids.length; start += IDS_PER_DELETE) {
        await transaction
          .deleteFrom('conversation_items')
          .where('conversation_id', 'in', ids.slice(start, start + IDS_PER_DELETE))
          .execute();
      }
      return ids.length;
    });
  }

  /** The id of the conversation if the tenant owns it: a subquery that yields no row otherwise. */
  private ownedConversation(tenantId: string, conversationId: string) {
    return this.db
      .selectFrom('conversations')
      .select('id')
      .where('id', '=', conversationId)
      .where('tenant_id', '=', tenantId);
  }
}

/** Inserts `items` at positions `first`, `first + 1`, … in statements of at most `ITEMS_PER_INSERT` rows. */
async function insertItems(
  transaction: Transaction<ConversationDatabase>,
  conversationId: string,
  first: number,
  items: Record<string, unknown>[],
): Promise<void> {
  const rows = items.map((item, index) => ({
    conversation_id: conversationId,
    position: first + index,
    item_id: String(item.id),
    item: JSON.stringify(item),
  }));
  for (let start = 0; start < rows.length; start += ITEMS_PER_INSERT) {
    await transaction
      .insertInto('conversation_items')
      .values(rows.slice(start, start + ITEMS_PER_INSERT))
      .execute();
  }
}

function parseItem(text: string): Record<string, unknown> {
  return JSON.parse(text) as Record<string, unknown>;
}

function conversationFromRow(row: Selectable<ConversationsTable>): ConversationRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    metadata: JSON.parse(row.metadata) as Record<string, string>,
    // The gateway's PostgreSQL pool reads int8 as numbers; a pool with pg's default parsers would give strings.
    createdAt: Number(row.created_at),
  };
}
