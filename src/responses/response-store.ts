/**
 * The stored-responses port: the Responses API keeps a response (`store`, true unless the client or the operator
 * says otherwise) so that a client can read it again (`GET /v1/responses/{id}`), list what it was asked
 * (`GET /v1/responses/{id}/input_items`), delete it, and go on from it (`previous_response_id`). Implemented once
 * over Kysely for SQLite and PostgreSQL (`KyselyResponseStore`) and checked by one conformance suite. Times are epoch
 * milliseconds. A response belongs to its tenant: every read and delete names the tenant, and another tenant's
 * response is as absent as one never made.
 */

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
  /** The Response object as answered (`object: "response"`), output items included. */
  response: Record<string, unknown>;
  createdAt: number;
  /** When it is deleted; reads treat it as gone from this time on. */
  expiresAt: number;
}

/** Where stored responses are kept. */
export interface ResponseStore {
  /** Stores `record`; an id already stored is a programming error and rejects. */
  saveResponse(record: StoredResponse): Promise<void>;
  /** The tenant's response `id`, unless it expired at `now` or was deleted. */
  getResponse(tenantId: string, id: string, now: number): Promise<StoredResponse | undefined>;
  /** Deletes the tenant's response `id`; false when it had none (never made, another tenant's, expired at `now`). */
  deleteResponse(tenantId: string, id: string, now: number): Promise<boolean>;
  /** Deletes every response of the tenant, expired or not; returns how many. */
  deleteTenantResponses(tenantId: string): Promise<number>;
  /** Deletes at most `limit` responses expired at `now`, oldest expiry first; returns how many. */
  deleteExpiredResponses(now: number, limit: number): Promise<number>;
}
