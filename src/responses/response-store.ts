/**
 * The stored-responses port: the Responses API keeps a response (`store`, true unless the client or the operator
 * says otherwise) so that a client can read it again (`GET /v1/responses/{id}`), list what it was asked
 * (`GET /v1/responses/{id}/input_items`), delete it, and go on from it (`previous_response_id`). Implemented once
 * over Kysely for SQLite and PostgreSQL (`KyselyResponseStore`) and checked by one conformance suite. Times are epoch
 * milliseconds. A response belongs to its tenant: every read and delete names the tenant, and another tenant's
 * response is as absent as one never made.
 *
 * A response run in the background (`background: true`) is stored while it runs (status `queued` or `in_progress`)
 * and replaced when it ends. The store keeps the Response object's `status` beside it, so that the end of a run and a
 * cancel are each one compare-and-set on a running response and cannot both win; and a heartbeat, so that the runs of
 * a process that died can be found and failed. Those two reads (`touchRunningResponses`,
 * `staleRunningResponses`) are the gateway's own, across tenants.
 *
 * A background response may also be streamed (`background: true, stream: true`). Its stream events are stored as
 * they are made, beside it, so that any gateway process can send the stream and a client can resume it after a dropped
 * connection (`starting_after`). They go with the response: every delete of it deletes them too.
 */

/** The statuses of a response still running in the background; every other status is final. */
export const RUNNING_RESPONSE_STATUSES = ['queued', 'in_progress'] as const;

/** One stored response. */
export interface StoredResponse {
  /** `resp_…` */
  id: string;
  tenantId: string;
  /** The key that made it. */
  keyId: string;
  /** The response it went on from, or null. */
  previousResponseId: string | null;
  /** This request's own input items (not its predecessors'), each with an `id`, in order. */
  inputItems: Record<string, unknown>[];
  /**
   * The Response object as answered (`object: "response"`), output items included. Its `status` (a string; none
   * when absent or not a string) is also kept apart, and decides whether the response is still running.
   */
  response: Record<string, unknown>;
  createdAt: number;
  /** When it is deleted; reads treat it as gone from this time on. */
  expiresAt: number;
  /** When the process running it in the background last said it still runs; null for one not run in the background. */
  heartbeatAt: number | null;
}

/** One event of a streamed background response, as it was sent: an SSE frame (`event: …\ndata: {…}\n\n`). */
export interface StoredResponseEvent {
  /** The event's `sequence_number`, counted from 0; unique within its response. */
  sequenceNumber: number;
  /** The SSE text as sent. Its data line is JSON, which escapes control characters: it holds no U+0000. */
  frame: string;
}

/** Where stored responses are kept. */
export interface ResponseStore {
  /** Stores `record`; an id already stored is a programming error and rejects. */
  saveResponse(record: StoredResponse): Promise<void>;
  /** The tenant's response `id`, unless it expired at `now` or was deleted. */
  getResponse(tenantId: string, id: string, now: number): Promise<StoredResponse | undefined>;
  /**
   * The tenant's response `id` and the responses it went on from (`previousResponseId`), newest first, read as
   * `getResponse` reads each: in one round trip. It stops before the first response missing (never made, another
   * tenant's, expired at `now`, deleted) and after `limit` responses (limit <= 0 → []), so a chain that loops back
   * on itself ends too. The last response read tells why it stopped: its `previousResponseId` is null when the chain
   * is whole; else, with fewer than `limit` read, that id is the response missing ([] when `id` itself is); else the
   * chain is longer than `limit`.
   */
  responseChain(tenantId: string, id: string, now: number, limit: number): Promise<StoredResponse[]>;
  /** Deletes the tenant's response `id`; false when it had none (never made, another tenant's, expired at `now`). */
  deleteResponse(tenantId: string, id: string, now: number): Promise<boolean>;
  /** Deletes every response of the tenant, expired or not; returns how many. */
  deleteTenantResponses(tenantId: string): Promise<number>;
  /** Deletes at most `limit` responses expired at `now`, oldest expiry first; returns how many. */
  deleteExpiredResponses(now: number, limit: number): Promise<number>;
  /**
   * Replaces the tenant's response `id` with `response` (its status from `response.status`) and sets its heartbeat
   * to `heartbeatAt`, only if it is still running (`queued` or `in_progress`) and not expired at `now`; true when it
   * did. One compare-and-set, so of the end of a run and a cancel racing on the same response exactly one wins.
   */
  replaceRunningResponse(
    tenantId: string,
    id: string,
    response: Record<string, unknown>,
    now: number,
    heartbeatAt: number | null,
  ): Promise<boolean>;
  /**
   * Sets the heartbeat of those of `ids` still running and not expired at `now` (any tenant) to `now`, and returns
   * their ids, in no order. The process running them aborts the run of every id missing from the answer: it was
   * cancelled, deleted or expired.
   */
  touchRunningResponses(ids: readonly string[], now: number): Promise<string[]>;
  /**
   * At most `limit` responses still running and not expired at `now` whose heartbeat is before `heartbeatBefore`,
   * any tenant, oldest heartbeat first: the runs of a process that died, for the sweep to fail.
   */
  staleRunningResponses(heartbeatBefore: number, now: number, limit: number): Promise<StoredResponse[]>;
  /**
   * Appends events of the response `responseId` (stored already; one not stored rejects); a sequence number stored
   * already, or given twice, rejects, and then none of `events` is stored. One statement (a multi-row INSERT) per
   * 500 events, in one transaction when there are more. [] does nothing.
   */
  appendResponseEvents(responseId: string, events: readonly StoredResponseEvent[]): Promise<void>;
  /**
   * The tenant's response's events with a sequence number above `after` (-1 for all), in order, at most `limit`
   * (limit <= 0 → []); [] when the response is not the tenant's, expired at `now`, or deleted.
   */
  responseEvents(
    tenantId: string,
    responseId: string,
    after: number,
    limit: number,
    now: number,
  ): Promise<StoredResponseEvent[]>;
}
