/**
 * OpenAI's Conversations API over a `ConversationStore`: a tenant's conversations (`conv_…`) and their items, and
 * what the Responses API does with one (`conversation` on `POST /v1/responses`): the conversation's items go to the
 * upstream before the request's input, and once the response is done its input items and output items are appended.
 *
 * Items a client adds (at creation, or `POST /v1/conversations/{id}/items`) are checked as Responses input is
 * (`chatRequestOf`): what a chat upstream could not read later is refused now, naming the item.
 */
import { inputItemsOf, newItemId } from '../api/responses/responses-object.js';
import { type ChatRequestOptions, chatRequestOf, type ResponsesRequest } from '../api/responses/responses-request.js';
import { GatewayError, InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import type { CompactionSeal } from '../responses/compaction.js';
import { outputItemsOf } from '../responses/stored-responses.js';
import { type ItemList, type ItemsPageQuery, itemList } from '../store/list-page.js';
import { type ConversationRecord, type ConversationStore, UnknownItemError } from './conversation-store.js';

/** A conversation as the API shows it (`ConversationResource`). */
export interface ConversationView {
  id: string;
  object: 'conversation';
  created_at: number;
  metadata: Record<string, string>;
}

/** A page of items (`ConversationItemList`). */
export type ConversationItemList = ItemList;

/** The tenants' conversations. */
export class Conversations {
  private readonly now: () => number;
  private readonly compaction: CompactionSeal | undefined;

  /** Without `compaction`, a compaction item (`/v1/responses/compact`) cannot be added. */
  constructor(
    private readonly store: ConversationStore,
    options: { now?: () => number; compaction?: CompactionSeal } = {},
  ) {
    this.now = options.now ?? Date.now;
    this.compaction = options.compaction;
  }

  /** What opens the tenant's compaction items, to check them as they are added. */
  private openerFor(tenantId: string): ChatRequestOptions['openCompaction'] {
    return this.compaction?.openerFor(tenantId);
  }

  /** `POST /v1/conversations`: a new conversation holding `items` (checked, given ids). */
  async create(
    tenantId: string,
    body: { items?: Record<string, unknown>[] | null; metadata?: Record<string, string> | null },
  ): Promise<ConversationView> {
    const items = checkedItems(body.items ?? [], 'items', this.openerFor(tenantId));
    const record: ConversationRecord = {
      id: newItemId('conv'),
      tenantId,
      metadata: body.metadata ?? {},
      createdAt: this.now(),
    };
    await this.store.createConversation(record, items);
    return viewOf(record);
  }

  /** `GET /v1/conversations/{id}`. */
  async get(tenantId: string, id: string): Promise<ConversationView> {
    const record = await this.store.getConversation(tenantId, id);
    if (record === undefined) throw conversationNotFound(id);
    return viewOf(record);
  }

  /** `POST /v1/conversations/{id}`: replaces its metadata. */
  async update(tenantId: string, id: string, metadata: Record<string, string>): Promise<ConversationView> {
    const record = await this.store.updateConversationMetadata(tenantId, id, metadata);
    if (record === undefined) throw conversationNotFound(id);
    return viewOf(record);
  }

  /** `DELETE /v1/conversations/{id}`: the conversation and its items. */
  async delete(tenantId: string, id: string): Promise<{ id: string; object: 'conversation.deleted'; deleted: true }> {
    if (!(await this.store.deleteConversation(tenantId, id))) throw conversationNotFound(id);
    return { id, object: 'conversation.deleted', deleted: true };
  }

  /** `POST /v1/conversations/{id}/items`: appends `items` (checked, given ids); lists what was added. */
  async addItems(tenantId: string, id: string, items: Record<string, unknown>[]): Promise<ConversationItemList> {
    const added = checkedItems(items, 'items', this.openerFor(tenantId));
    if (!(await this.store.appendItems(tenantId, id, added))) throw conversationNotFound(id);
    return itemList(added, false);
  }

  /** `GET /v1/conversations/{id}/items`. */
  async listItems(tenantId: string, id: string, query: ItemsPageQuery): Promise<ConversationItemList> {
    try {
      const page = await this.store.listItems(tenantId, id, query);
      if (page === undefined) throw conversationNotFound(id);
      return itemList(page.items, page.hasMore);
    } catch (error: unknown) {
      if (!(error instanceof UnknownItemError)) throw error;
      throw new InvalidRequestError(error.message, { param: 'after', code: 'invalid_value' });
    }
  }

  /** `GET /v1/conversations/{id}/items/{item_id}`. */
  async getItem(tenantId: string, id: string, itemId: string): Promise<Record<string, unknown>> {
    const item = await this.store.getItem(tenantId, id, itemId);
    if (item !== undefined) return item;
    await this.get(tenantId, id);
    throw itemNotFound(itemId);
  }

  /** `DELETE /v1/conversations/{id}/items/{item_id}`: answers the conversation, as OpenAI does. */
  async deleteItem(tenantId: string, id: string, itemId: string): Promise<ConversationView> {
    const conversation = await this.get(tenantId, id);
    if (!(await this.store.deleteItem(tenantId, id, itemId))) throw itemNotFound(itemId);
    return conversation;
  }

  /**
   * The items a Responses request naming conversation `id` reads before its input, oldest first. A 404
   * `conversation_not_found` (param `conversation`) when the tenant has none by that id.
   */
  async historyOf(tenantId: string, id: string): Promise<Record<string, unknown>[]> {
    const items = await this.store.allItems(tenantId, id);
    if (items === undefined) throw conversationNotFound(id, 'conversation');
    return items;
  }

  /**
   * After a response in conversation `id`: appends its input items, then its output items. Throws when the
   * conversation was deleted meanwhile (the caller logs it: the answer itself was made and billed).
   */
  async appendResponse(
    tenantId: string,
    id: string,
    inputItems: Record<string, unknown>[],
    response: Record<string, unknown>,
  ): Promise<void> {
    const items = [...inputItems, ...outputItemsOf(response)];
    if (!(await this.store.appendItems(tenantId, id, items))) throw conversationNotFound(id);
  }
}

/**
 * Items as stored: each checked as a Responses input item (a 400 naming `param[i]`; a compaction item is opened with
 * `openCompaction`), then given an id and status as `inputItemsOf` gives them.
 */
function checkedItems(
  items: Record<string, unknown>[],
  param: string,
  openCompaction: ChatRequestOptions['openCompaction'],
): Record<string, unknown>[] {
  if (items.length === 0) return [];
  try {
    chatRequestOf({ model: 'conversation', input: items } as ResponsesRequest, undefined, {
      ...(openCompaction === undefined ? {} : { openCompaction }),
    });
  } catch (error: unknown) {
    if (!(error instanceof GatewayError) || error.param === null || !error.param.startsWith('input')) throw error;
    throw new GatewayError(
      error.status,
      error.type,
      error.code,
      error.message.replaceAll("'input", `'${param}`),
      error.retryable,
      { param: param + error.param.slice('input'.length), cause: error },
    );
  }
  return inputItemsOf({ input: items });
}

function viewOf(record: ConversationRecord): ConversationView {
  return {
    id: record.id,
    object: 'conversation',
    created_at: Math.floor(record.createdAt / 1000),
    metadata: record.metadata,
  };
}

function conversationNotFound(id: string, param?: string): NotFoundError {
  return new NotFoundError(`Conversation with id '${id.slice(0, 80)}' not found.`, 'conversation_not_found', {
    ...(param === undefined ? {} : { param }),
  });
}

function itemNotFound(itemId: string): NotFoundError {
  return new NotFoundError(`Item with id '${itemId.slice(0, 80)}' not found.`, 'item_not_found');
}
