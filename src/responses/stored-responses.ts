/**
 * Stored responses: what the Responses API keeps of a response so that its client can read it again, list its input
 * items, delete it and go on from it (`previous_response_id`), as on OpenAI.
 *
 * - A response is stored unless the request says `store: false` or the operator turned storing off
 *   (`responses.store`); it is kept `responses.retention_days` (30 by default, as OpenAI keeps them), then swept.
 * - It is stored before its last event or its body leaves, so a client that goes on at once finds it.
 * - Going on from a response reads its chain back to the first one: the conversation is every response's input items
 *   followed by its output items, oldest first. One response gone from the chain (deleted, expired) ends it: the
 *   request is refused rather than answered without part of its conversation.
 * - Only the tenant that made a response can see it; any other gets the same 404 as for one never made.
 * - What is stored is prompts and answers: an operator who must not keep them sets `responses.store: false`.
 */
import { InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import type { Logger } from '../observability/logger.js';
import { type ItemList, type ItemsPageQuery, itemList } from '../store/list-page.js';
import type { Principal } from '../tenancy/key-service.js';
import { type ResponseStore, RUNNING_RESPONSE_STATUSES, type StoredResponse } from './response-store.js';

/** Longest chain of responses a request may go on from; a longer conversation is refused. */
export const MAX_CONVERSATION_RESPONSES = 1_000;

/** How often expired responses are swept, ms, and how many are deleted per statement. */
const SWEEP_INTERVAL_MS = 60_000;
const SWEEP_BATCH = 500;

/** Options of `StoredResponses`. */
export interface StoredResponsesOptions {
  /** Whether responses may be stored at all (`responses.store`). */
  enabled: boolean;
  /** How long a response is kept, ms. */
  retentionMs: number;
  logger: Logger;
  /** Called for each response that could not be stored (a metric). */
  onSaveFailure?: () => void;
  /** Epoch ms; `Date.now` by default. */
  now?: () => number;
}

/** One page of a response's input items (`GET /v1/responses/{id}/input_items`). */
export type InputItemsPage = ItemList;

/** Stores, reads and sweeps the tenants' responses. */
export class StoredResponses {
  private readonly now: () => number;
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly store: ResponseStore,
    private readonly options: StoredResponsesOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** Whether a response to `request` is stored: unless it says `store: false`, or storing is off. */
  stores(request: { store?: boolean | null }): boolean {
    return this.options.enabled && request.store !== false;
  }

  /**
   * The conversation `previousResponseId` ends, oldest item first: each response's input items, then its output
   * items. A 400 `previous_response_not_found` when it is not the tenant's (or is gone), or when one response of its
   * chain is gone.
   */
  async historyOf(tenantId: string, previousResponseId: string): Promise<Record<string, unknown>[]> {
    if (!this.options.enabled) {
      throw new InvalidRequestError(
        'This gateway does not store responses (responses.store is off), so previous_response_id cannot be used. Send the conversation as input.',
        { param: 'previous_response_id', code: 'unsupported_parameter' },
      );
    }
    const chain = await this.store.responseChain(tenantId, previousResponseId, this.now(), MAX_CONVERSATION_RESPONSES);
    for (const response of chain) {
      if ((RUNNING_RESPONSE_STATUSES as readonly unknown[]).includes(response.response.status)) {
        throw new InvalidRequestError(
          `Previous response with id '${response.id.slice(0, 80)}' is still running in the background (status ${String(response.response.status)}); go on from it once it is done.`,
          { param: 'previous_response_id', code: 'previous_response_not_done' },
        );
      }
    }
    const last = chain.at(-1);
    // The response the chain goes on to after the last one read; null when that was the first of the conversation.
    const unread = last === undefined ? previousResponseId : last.previousResponseId;
    // A chain as long as allowed that goes on is too long, whether or not the response it goes on to is still there.
    if (unread !== null && chain.length === MAX_CONVERSATION_RESPONSES) {
      throw new InvalidRequestError(
        `The conversation of previous_response_id is longer than ${MAX_CONVERSATION_RESPONSES} responses. Start a new one with the items you need as input.`,
        { param: 'previous_response_id', code: 'invalid_value' },
      );
    }
    if (unread !== null) throw previousNotFound(previousResponseId, unread);
    chain.reverse();
    return chain.flatMap((response) => [...response.inputItems, ...outputItemsOf(response.response)]);
  }

  /**
   * Stores `response` (the Response object answered) with the request's own `inputItems`. A failure is logged, not
   * thrown: the answer was made and billed, and reaches its client; only reading it again will fail.
   */
  async save(
    principal: Pick<Principal, 'tenantId' | 'keyId'>,
    inputItems: Record<string, unknown>[],
    response: Record<string, unknown>,
  ): Promise<void> {
    const now = this.now();
    try {
      await this.store.saveResponse({
        id: String(response.id),
        tenantId: principal.tenantId,
        keyId: principal.keyId,
        previousResponseId: typeof response.previous_response_id === 'string' ? response.previous_response_id : null,
        inputItems,
        response,
        createdAt: now,
        expiresAt: now + this.options.retentionMs,
        heartbeatAt: null,
      });
    } catch (error: unknown) {
      this.options.onSaveFailure?.();
      this.options.logger.error({ err: error, responseId: response.id }, 'response not stored');
    }
  }

  /** The tenant's stored response (the Response object); a 404 `response_not_found` otherwise. */
  async get(tenantId: string, id: string): Promise<Record<string, unknown>> {
    return (await this.stored(tenantId, id)).response;
  }

  /** Deletes the tenant's stored response; a 404 when it has none by that id. */
  async delete(tenantId: string, id: string): Promise<{ id: string; object: 'response'; deleted: true }> {
    if (!(await this.store.deleteResponse(tenantId, id, this.now()))) throw responseNotFound(id);
    return { id, object: 'response', deleted: true };
  }

  /**
   * `POST /v1/responses/{id}/cancel`: only a background response can be cancelled, and this gateway runs none, so a
   * stored response of the tenant is a 400 and any other id a 404.
   */
  async cancel(tenantId: string, id: string): Promise<never> {
    await this.stored(tenantId, id);
    throw new InvalidRequestError(
      'Only a response created with background: true can be cancelled, and this one was not.',
      { code: 'invalid_request' },
    );
  }

  /** A page of the input items of the tenant's stored response. */
  async inputItems(tenantId: string, id: string, query: ItemsPageQuery): Promise<InputItemsPage> {
    const items = (await this.stored(tenantId, id)).inputItems;
    const ordered = query.order === 'asc' ? items : [...items].reverse();
    let start = 0;
    if (query.after !== undefined) {
      const index = ordered.findIndex((item) => item.id === query.after);
      if (index < 0) {
        throw new InvalidRequestError(`No input item with id '${query.after.slice(0, 80)}' in response '${id}'.`, {
          param: 'after',
          code: 'invalid_value',
        });
      }
      start = index + 1;
    }
    return itemList(ordered.slice(start, start + query.limit), start + query.limit < ordered.length);
  }

  /** Deletes responses past their retention: now, then every minute until `stop`. */
  start(): void {
    void this.sweep();
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS).unref();
  }

  /** Stops sweeping; resolves once a sweep under way has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    await this.sweeping;
  }

  /** Deletes every response expired now, `SWEEP_BATCH` at a time; never rejects (a failure is logged). */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      let deleted = 0;
      try {
        for (;;) {
          const count = await this.store.deleteExpiredResponses(this.now(), SWEEP_BATCH);
          deleted += count;
          if (count < SWEEP_BATCH || this.stopped) break;
        }
      } catch (error: unknown) {
        this.options.logger.error({ err: error }, 'could not delete expired responses; trying again in a minute');
      } finally {
        if (deleted > 0) this.options.logger.info({ responses: deleted }, 'expired responses deleted');
        this.sweeping = undefined;
      }
    })();
    return this.sweeping;
  }

  private async stored(tenantId: string, id: string): Promise<StoredResponse> {
    const response = await this.store.getResponse(tenantId, id, this.now());
    if (response === undefined) throw responseNotFound(id);
    return response;
  }
}

/** The output items of a Response object. */
export function outputItemsOf(response: Record<string, unknown>): Record<string, unknown>[] {
  return Array.isArray(response.output) ? (response.output as Record<string, unknown>[]) : [];
}

/** The 404 for a response the tenant has not (never made, another tenant's, deleted, expired). */
export function responseNotFound(id: string): NotFoundError {
  return new NotFoundError(`Response with id '${id.slice(0, 80)}' not found.`, 'response_not_found');
}

function previousNotFound(previousResponseId: string, missing: string): InvalidRequestError {
  const message =
    missing === previousResponseId
      ? `Previous response with id '${previousResponseId.slice(0, 80)}' not found.`
      : `Previous response with id '${previousResponseId.slice(0, 80)}' goes on from response '${missing.slice(0, 80)}', which was deleted or has expired.`;
  return new InvalidRequestError(message, { param: 'previous_response_id', code: 'previous_response_not_found' });
}
