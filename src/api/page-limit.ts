/**
 * Query parameters of the API's lists: `limit` of every paged list (files, batches, admin tenants, keys and batches,
 * stored responses' input items, conversation items), and a parameter that may be given only once.
 */
import { InvalidRequestError } from '../errors/gateway-error.js';
import type { ItemsPageQuery } from '../store/list-page.js';

/** Decimal digits only: `Number()` would also take `1e1`, `0x10`, `0b1`, `+5`, ` 5` and `5.0`, which OpenAI refuses. */
const DECIMAL_INTEGER = /^[0-9]+$/;

/** A `limit` query parameter: a decimal integer in [1, max], `fallback` when absent; anything else is a 400. */
export function pageLimit(raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  // Digits only, so `Number` reads it exactly; one too long to be safe is beyond `max` anyway.
  const value = DECIMAL_INTEGER.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= 1 && value <= max)) {
    throw new InvalidRequestError(`limit must be an integer between 1 and ${max}.`, {
      param: 'limit',
      code: 'invalid_value',
    });
  }
  return value;
}

/** A route's query parameters as Fastify parses them: a name given twice is an array. */
export type QueryParameters = Record<string, string | string[] | undefined>;

/** A query parameter given at most once; a repeated one is a 400 naming it. */
export function singleQueryValue(query: QueryParameters, name: string): string | undefined {
  const value = query[name];
  if (Array.isArray(value)) {
    throw new InvalidRequestError(`'${name}' may be given once.`, { param: name, code: 'invalid_value' });
  }
  return value;
}

/**
 * `?order=&limit=&after=` of an item list (a response's input items, a conversation's items): `order` `asc` or `desc`
 * (default `desc`), `limit` 1–100 (default 20). A bad value is a 400 naming it.
 */
export function itemsPageQuery(query: QueryParameters): ItemsPageQuery {
  const order = singleQueryValue(query, 'order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') {
    throw new InvalidRequestError("order must be 'asc' or 'desc'.", { param: 'order', code: 'invalid_value' });
  }
  const after = singleQueryValue(query, 'after');
  return {
    limit: pageLimit(singleQueryValue(query, 'limit'), 20, 100),
    order,
    ...(after === undefined ? {} : { after }),
  };
}
