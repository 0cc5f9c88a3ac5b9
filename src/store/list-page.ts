/**
 * Pages of lists read in order: a page is read one row over its limit to tell whether more follow, and shown as
 * OpenAI's list object. Batches, files, tenants and keys page this way.
 */

/** One page of rows. */
export interface ListPage<T> {
  rows: T[];
  /** True when rows follow the last of `rows`. */
  hasMore: boolean;
}

/** OpenAI's list object: one page, and where the next starts (`after` = `last_id`). */
export interface OpenAIListPage<V> {
  object: 'list';
  data: V[];
  /** Id of the first record of `data`; absent when `data` is empty. */
  first_id?: string;
  /** Id of the last record of `data`; absent when `data` is empty. */
  last_id?: string;
  has_more: boolean;
}

/** The first `limit` of `rows`, read `limit + 1` at most. */
export function pageOf<T>(rows: T[], limit: number): ListPage<T> {
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}

/** The list object of `page`, each row shown by `view`. */
export function openAIListPage<T, V extends { id: string }>(page: ListPage<T>, view: (row: T) => V): OpenAIListPage<V> {
  return openAIList(
    page.rows.map((row) => view(row)),
    page.hasMore,
  );
}

/** The list object of a page's rows already shown (`data`, for views built asynchronously). */
export function openAIList<V extends { id: string }>(data: V[], hasMore: boolean): OpenAIListPage<V> {
  return {
    object: 'list',
    data,
    ...(data.length === 0 ? {} : { first_id: data[0]!.id, last_id: data.at(-1)!.id }),
    has_more: hasMore,
  };
}

/**
 * A page of items as the Responses and Conversations APIs list them (`ResponseItemList`, `ConversationItemList`):
 * unlike the other lists, `first_id` and `last_id` are null on an empty page.
 */
export interface ItemList {
  object: 'list';
  data: Record<string, unknown>[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
}

/**
 * The query of a page of items (a response's input items, a conversation's items), as OpenAI pages them: `limit` 1 to
 * 100, `order` `asc` (oldest first) or `desc` (newest first), and `after`, an item id the page starts after (in
 * `order`).
 */
export interface ItemsPageQuery {
  limit: number;
  order: 'asc' | 'desc';
  after?: string;
}

/** The item list of one page of `items` (each with an `id`). */
export function itemList(items: Record<string, unknown>[], hasMore: boolean): ItemList {
  return {
    object: 'list',
    data: items,
    first_id: (items[0]?.id as string | undefined) ?? null,
    last_id: (items.at(-1)?.id as string | undefined) ?? null,
    has_more: hasMore,
  };
}
