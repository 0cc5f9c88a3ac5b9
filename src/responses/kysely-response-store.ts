import { type Kysely, type Selectable, sql } from 'kysely';
import type { DatabaseSchema } from '../store/database-schema.js';
import {
  type ResponseStore,
  RUNNING_RESPONSE_STATUSES,
  type StoredResponse,
  type StoredResponseEvent,
} from './response-store.js';

/** The most ids `touchRunningResponses` names in one statement, well under every dialect's limit on parameters. */
const TOUCH_CHUNK = 500;

/** Event rows per INSERT: 3 parameters each, far below SQLite's and PostgreSQL's limits on parameters. */
const EVENTS_PER_INSERT = 500;

/** `responses` (migrations 0011 and 0013). */
export interface ResponsesTable {
  id: string;
  tenant_id: string;
  key_id: string;
  previous_response_id: string | null;
  /** JSON array. */
  input_items: string;
  /** JSON object. */
  response: string;
  created_at: number;
  expires_at: number;
  /** The Response object's `status` when stored or last replaced; NULL for rows stored before migration 0013. */
  status: string | null;
  /** Epoch ms of the last heartbeat of the process running it in the background; NULL when none runs it. */
  heartbeat_at: number | null;
}

/** `response_events` (migration 0014); its rows are deleted with their response (`ON DELETE CASCADE`). */
export interface ResponseEventsTable {
  response_id: string;
  sequence_number: number;
  /** The SSE frame as sent. */
  frame: string;
}

/** The tables of the response store, next to the gateway's own (a type alias: Kysely needs an index signature). */
export type ResponseTables = {
  responses: ResponsesTable;
  response_events: ResponseEventsTable;
};

/** `ResponseStore` over the gateway store's Kysely instance (SQLite or PostgreSQL). */
export class KyselyResponseStore implements ResponseStore {
  private readonly db: Kysely<DatabaseSchema & ResponseTables>;

  constructor(db: Kysely<DatabaseSchema>) {
    this.db = db.withTables<ResponseTables>();
  }

  async saveResponse(record: StoredResponse): Promise<void> {
    await this.db
      .insertInto('responses')
      .values({
        id: record.id,
        tenant_id: record.tenantId,
        key_id: record.keyId,
        previous_response_id: record.previousResponseId,
        input_items: JSON.stringify(record.inputItems),
        response: JSON.stringify(record.response),
        created_at: record.createdAt,
        expires_at: record.expiresAt,
        status: statusOf(record.response),
        heartbeat_at: record.heartbeatAt,
      })
      .execute();
  }

  async getResponse(tenantId: string, id: string, now: number): Promise<StoredResponse | undefined> {
    const row = await this.db
      .selectFrom('responses')
      .selectAll()
      .where('id', '=', id)
      .where('tenant_id', '=', tenantId)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return row === undefined ? undefined : responseFromRow(row);
  }

  async responseChain(tenantId: string, id: string, now: number, limit: number): Promise<StoredResponse[]> {
    // The first response is read whatever the limit: it alone would be one row too many.
    if (limit <= 0) return [];
    // The chain carries ids only, each step one primary-key lookup with getResponse's tenant and expiry test; the
    // rows are read once, at the end. The depth bound is what ends a chain that loops back on itself.
    const rows = await this.db
      .withRecursive('chain(id, previous_response_id, depth)', (db) =>
        db
          .selectFrom('responses')
          .select(['id', 'previous_response_id', sql<number>`1`.as('depth')])
          .where('id', '=', id)
          .where('tenant_id', '=', tenantId)
          .where('expires_at', '>', now)
          .unionAll((db) =>
            db
              .selectFrom('responses')
              .innerJoin('chain', 'chain.previous_response_id', 'responses.id')
              .select(['responses.id', 'responses.previous_response_id', sql<number>`chain.depth + 1`.as('depth')])
              .where('responses.tenant_id', '=', tenantId)
              .where('responses.expires_at', '>', now)
              .where('chain.depth', '<', limit),
          ),
      )
      .selectFrom('chain')
      .innerJoin('responses', 'responses.id', 'chain.id')
      .selectAll('responses')
      .orderBy('chain.depth')
      .execute();
    return rows.map(responseFromRow);
  }

  async deleteResponse(tenantId: string, id: string, now: number): Promise<boolean> {
    const result = await this.db
      .deleteFrom('responses')
      .where('id', '=', id)
      .where('tenant_id', '=', tenantId)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async deleteTenantResponses(tenantId: string): Promise<number> {
    const result = await this.db.deleteFrom('responses').where('tenant_id', '=', tenantId).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async deleteExpiredResponses(now: number, limit: number): Promise<number> {
    // SQLite reads a negative LIMIT as none at all.
    if (limit <= 0) return 0;
    const oldest = this.db
      .selectFrom('responses')
      .select('id')
      .where('expires_at', '<=', now)
      .orderBy('expires_at')
      .orderBy('id')
      .limit(limit);
    const result = await this.db.deleteFrom('responses').where('id', 'in', oldest).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  async replaceRunningResponse(
    tenantId: string,
    id: string,
    response: Record<string, unknown>,
    now: number,
    heartbeatAt: number | null,
  ): Promise<boolean> {
    // The status test sits in the UPDATE itself: a read first and a write after would let a cancel and the end of
    // the run both see the response running, and both win.
    const result = await this.db
      .updateTable('responses')
      .set({ response: JSON.stringify(response), status: statusOf(response), heartbeat_at: heartbeatAt })
      .where('id', '=', id)
      .where('tenant_id', '=', tenantId)
      .where('expires_at', '>', now)
      .where('status', 'in', RUNNING_RESPONSE_STATUSES)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async touchRunningResponses(ids: readonly string[], now: number): Promise<string[]> {
    const running: string[] = [];
    for (let start = 0; start < ids.length; start += TOUCH_CHUNK) {
      const rows = await this.db
        .updateTable('responses')
        .set({ heartbeat_at: now })
        .where('id', 'in', ids.slice(start, start + TOUCH_CHUNK))
        .where('expires_at', '>', now)
        .where('status', 'in', RUNNING_RESPONSE_STATUSES)
        .returning('id')
        .execute();
      for (const row of rows) running.push(row.id);
    }
    return running;
  }

  async staleRunningResponses(heartbeatBefore: number, now: number, limit: number): Promise<StoredResponse[]> {
    // SQLite reads a negative LIMIT as none at all.
    if (limit <= 0) return [];
    const rows = await this.db
      .selectFrom('responses')
      .selectAll()
      .where('heartbeat_at', '<', heartbeatBefore)
      .where('status', 'in', RUNNING_RESPONSE_STATUSES)
      .where('expires_at', '>', now)
      .orderBy('heartbeat_at')
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map(responseFromRow);
  }

  async appendResponseEvents(responseId: string, events: readonly StoredResponseEvent[]): Promise<void> {
    if (events.length === 0) return;
    const insert = (db: Kysely<DatabaseSchema & ResponseTables>, chunk: readonly StoredResponseEvent[]) =>
      db
        .insertInto('response_events')
        .values(
          chunk.map((event) => ({
            response_id: responseId,
            sequence_number: event.sequenceNumber,
            frame: event.frame,
          })),
        )
        .execute();
    if (events.length <= EVENTS_PER_INSERT) {
      await insert(this.db, events);
      return;
    }
    // Several statements: one transaction, so a duplicate in a later chunk takes the earlier chunks back with it.
    await this.db.transaction().execute(async (transaction) => {
      for (let start = 0; start < events.length; start += EVENTS_PER_INSERT) {
        await insert(transaction, events.slice(start, start + EVENTS_PER_INSERT));
      }
    });
  }

  async responseEvents(
    tenantId: string,
    responseId: string,
    after: number,
    limit: number,
    now: number,
  ): Promise<StoredResponseEvent[]> {
    // SQLite reads a negative LIMIT as none at all.
    if (limit <= 0) return [];
    // The join keeps the tenant and expiry test in the read itself: an expired response's events stay until the
    // sweep deletes it, and must not be read in the meantime.
    const rows = await this.db
      .selectFrom('response_events')
      .innerJoin('responses', 'responses.id', 'response_events.response_id')
      .select(['response_events.sequence_number', 'response_events.frame'])
      .where('response_events.response_id', '=', responseId)
      .where('responses.tenant_id', '=', tenantId)
      .where('responses.expires_at', '>', now)
      .where('response_events.sequence_number', '>', after)
      .orderBy('response_events.sequence_number')
      .limit(limit)
      .execute();
    return rows.map((row) => ({ sequenceNumber: row.sequence_number, frame: row.frame }));
  }
}

/** The status column of `response`: its `status` when that is a string, else null (never running). */
function statusOf(response: Record<string, unknown>): string | null {
  return typeof response.status === 'string' ? response.status : null;
}

function responseFromRow(row: Selectable<ResponsesTable>): StoredResponse {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    keyId: row.key_id,
    previousResponseId: row.previous_response_id,
    inputItems: JSON.parse(row.input_items) as Record<string, unknown>[],
    response: JSON.parse(row.response) as Record<string, unknown>,
    // The gateway's PostgreSQL pool reads int8 as numbers; a pool with pg's default parsers would give strings.
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    heartbeatAt: row.heartbeat_at === null ? null : Number(row.heartbeat_at),
  };
}
