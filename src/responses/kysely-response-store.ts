import type { Kysely, Selectable } from 'kysely';
import type { DatabaseSchema } from '../store/database-schema.js';
import type { ResponseStore, StoredResponse } from './response-store.js';

/** `responses` (migration 0011). */
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
}

/** The tables of the response store, next to the gateway's own (a type alias: Kysely needs an index signature). */
export type ResponseTables = {
  responses: ResponsesTable;
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
  };
}
