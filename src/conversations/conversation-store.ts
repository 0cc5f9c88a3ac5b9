/**
 * The conversations port (OpenAI's Conversations API): a conversation is a tenant's ordered list of items — input
 * messages, output messages, function calls and their outputs — that Responses requests naming it (`conversation`)
 * read before their input and append their input and output to. Implemented once over Kysely for SQLite and
 * PostgreSQL (`KyselyConversationStore`) and checked by one conformance suite. Times are epoch milliseconds. Every
 * read and write names the tenant: another tenant's conversation is as absent as one never made.
 */
import type { ItemsPageQuery } from '../store/list-page.js';

/** A conversation, without its items. */
export interface ConversationRecord {
  /** `conv_…` */
  id: string;
  tenantId: string;
  /** Up to 16 string pairs (OpenAI's `metadata`). */
  metadata: Record<string, string>;
  createdAt: number;
}

/** Where conversations are kept. */
export interface ConversationStore {
  /** Stores a new conversation with its first `items` (each with an `id`), all or nothing. */
  createConversation(record: ConversationRecord, items: Record<string, unknown>[]): Promise<void>;
  /** The tenant's conversation, or undefined. */
  getConversation(tenantId: string, id: string): Promise<ConversationRecord | undefined>;
  /** Replaces the metadata of the tenant's conversation; the updated record, or undefined when it has none. */
  updateConversationMetadata(
    tenantId: string,
    id: string,
    metadata: Record<string, string>,
  ): Promise<ConversationRecord | undefined>;
  /** Deletes the tenant's conversation and its items; false when it had none. */
  deleteConversation(tenantId: string, id: string): Promise<boolean>;
  /**
   * Appends `items` (each with an `id`) after the conversation's last item, in order; false when the tenant has no
   * such conversation. Concurrent appends to one conversation never interleave their items nor lose any.
   */
  appendItems(tenantId: string, conversationId: string, items: Record<string, unknown>[]): Promise<boolean>;
  /** Every item of the tenant's conversation, oldest first; undefined when it has none. */
  allItems(tenantId: string, conversationId: string): Promise<Record<string, unknown>[] | undefined>;
  /**
   * A page of the conversation's items, and whether more follow; undefined when the tenant has no such conversation.
   * An `after` that names no item of it rejects with `UnknownItemError`.
   */
  listItems(
    tenantId: string,
    conversationId: string,
    query: ItemsPageQuery,
  ): Promise<{ items: Record<string, unknown>[]; hasMore: boolean } | undefined>;
  /** One item of the tenant's conversation by its id (the last one appended, if two share it), or undefined. */
  getItem(tenantId: string, conversationId: string, itemId: string): Promise<Record<string, unknown> | undefined>;
  /** Deletes one item (every item of that id) of the tenant's conversation; false when there was none. */
  deleteItem(tenantId: string, conversationId: string, itemId: string): Promise<boolean>;
  /** Deletes every conversation of the tenant with its items (an operator's purge); returns how many conversations. */
  deleteTenantConversations(tenantId: string): Promise<number>;
}

/** `listItems`' `after` names no item of the conversation. */
export class UnknownItemError extends Error {
  constructor(readonly itemId: string) {
    super(`No item with id '${itemId.slice(0, 80)}' in this conversation.`);
    this.name = 'UnknownItemError';
  }
}
