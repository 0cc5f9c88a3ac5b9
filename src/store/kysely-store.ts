import { type Kysely, Migrator, type Selectable } from 'kysely';
import type { ApiKeysTable, DatabaseSchema, RequestLogTable, TenantsTable } from './database-schema.js';
import { migrationProvider } from './migrations/migration-provider.js';
import { randomId } from './random-id.js';
import type { ApiKeyRecord, NewApiKey, RequestLogQuery, RequestLogRecord, Store, TenantRecord } from './store.js';

/** Columns written per request-log row; with the dialect's parameter limit this sizes each INSERT chunk. */
const REQUEST_LOG_COLUMNS = 18;

/** Default page size of `listRequestLogs`. */
const DEFAULT_LOG_LIMIT = 100;

/** How `KyselyStore` is bound to one database. */
export interface KyselyStoreOptions {
  kind: Store['kind'];
  db: Kysely<DatabaseSchema>;
  /** Most bind parameters one statement may carry (SQLite 32766, PostgreSQL 65535). */
  maxParametersPerStatement: number;
  /** Schema holding Kysely's migration tables (PostgreSQL); undefined uses the connection's default. */
  migrationTableSchema?: string;
  /** Called after the Kysely instance is destroyed (e.g. to close a pool the store owns). */
  onClose?: () => Promise<void>;
}

/**
 * The `Store` port over one Kysely query layer. Dialect differences stay in the factories (`openSqliteStore`,
 * `openPostgresStore`): connection set-up, transaction mode, and the SQLite hot-path fast lane in `SqliteStore`.
 */
export class KyselyStore implements Store {
  readonly kind: Store['kind'];
  protected readonly db: Kysely<DatabaseSchema>;
  private readonly rowsPerInsert: number;
  private readonly migrationTableSchema: string | undefined;
  private readonly onClose: (() => Promise<void>) | undefined;
  private closed = false;

  constructor(options: KyselyStoreOptions) {
    this.kind = options.kind;
    this.db = options.db;
    this.rowsPerInsert = Math.floor(options.maxParametersPerStatement / REQUEST_LOG_COLUMNS);
    this.migrationTableSchema = options.migrationTableSchema;
    this.onClose = options.onClose;
  }

  async migrate(): Promise<void> {
    const migrator = new Migrator({
      db: this.db,
      provider: migrationProvider,
      ...(this.migrationTableSchema === undefined ? {} : { migrationTableSchema: this.migrationTableSchema }),
    });
    const { error, results } = await migrator.migrateToLatest();
    if (error !== undefined) {
      const failed = results?.find((result) => result.status === 'Error')?.migrationName;
      const what = failed === undefined ? 'Store migration' : `Store migration ${failed}`;
      throw new Error(`${what} failed on ${this.kind}`, { cause: error });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.destroy();
    await this.onClose?.();
  }

  async createTenant(name: string): Promise<TenantRecord> {
    const record: TenantRecord = { id: randomId('ten_'), name, createdAt: Date.now() };
    await this.db.insertInto('tenants').values({ id: record.id, name, created_at: record.createdAt }).execute();
    return record;
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const row = await this.db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : tenantFromRow(row);
  }

  async listTenants(): Promise<TenantRecord[]> {
    const rows = await this.db.selectFrom('tenants').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(tenantFromRow);
  }

  async createKey(key: NewApiKey): Promise<ApiKeyRecord> {
    const record: ApiKeyRecord = {
      id: randomId('key_'),
      tenantId: key.tenantId,
      name: key.name,
      prefix: key.prefix,
      hash: key.hash,
      models: key.models === null ? null : [...key.models],
      expiresAt: key.expiresAt,
      revokedAt: null,
      createdAt: Date.now(),
    };
    await this.db
      .insertInto('api_keys')
      .values({
        id: record.id,
        tenant_id: record.tenantId,
        name: record.name,
        prefix: record.prefix,
        hash: record.hash,
        models: record.models === null ? null : JSON.stringify(record.models),
        expires_at: record.expiresAt,
        revoked_at: null,
        created_at: record.createdAt,
      })
      .execute();
    return record;
  }

  async getKey(id: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : apiKeyFromRow(row);
  }

  async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    const row = await this.db.selectFrom('api_keys').selectAll().where('hash', '=', hash).executeTakeFirst();
    return row === undefined ? undefined : apiKeyFromRow(row);
  }

  async listKeys(tenantId: string): Promise<ApiKeyRecord[]> {
    const rows = await this.db
      .selectFrom('api_keys')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    return rows.map(apiKeyFromRow);
  }

  async revokeKey(id: string, at: number): Promise<ApiKeyRecord | undefined> {
    // `revoked_at is null` keeps the first revocation time when two admins (or two processes) revoke at once.
    await this.db
      .updateTable('api_keys')
      .set({ revoked_at: at })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .execute();
    return this.getKey(id);
  }

  async insertRequestLogs(records: readonly RequestLogRecord[]): Promise<void> {
    if (records.length === 0) return;
    const rows = records.map(requestLogToRow);
    if (rows.length <= this.rowsPerInsert) {
      // One statement is atomic on its own: no BEGIN/COMMIT round trips.
      await this.insertRequestLogRows(this.db, rows);
      return;
    }
    await this.db.transaction().execute(async (transaction) => {
      for (let start = 0; start < rows.length; start += this.rowsPerInsert) {
        await this.insertRequestLogRows(transaction, rows.slice(start, start + this.rowsPerInsert));
      }
    });
  }

  async listRequestLogs(query: RequestLogQuery): Promise<RequestLogRecord[]> {
    let select = this.db.selectFrom('request_log').selectAll();
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    if (query.since !== undefined) select = select.where('created_at', '>=', query.since);
    if (query.until !== undefined) select = select.where('created_at', '<', query.until);
    const rows = await select
      .orderBy('created_at', 'desc')
      .orderBy('request_id', 'desc')
      .limit(query.limit ?? DEFAULT_LOG_LIMIT)
      .execute();
    return rows.map(requestLogFromRow);
  }

  async getSetting(key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return row?.value;
  }

  async putSettingIfAbsent(key: string, value: string): Promise<boolean> {
    const result = await this.db
      .insertInto('settings')
      .values({ key, value })
      .onConflict((conflict) => conflict.column('key').doNothing())
      .executeTakeFirst();
    return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
  }

  /** Inserts one chunk that fits the parameter limit; existing request ids are ignored. */
  protected async insertRequestLogRows(db: Kysely<DatabaseSchema>, rows: RequestLogTable[]): Promise<void> {
    await db
      .insertInto('request_log')
      .values(rows)
      .onConflict((conflict) => conflict.column('request_id').doNothing())
      .execute();
  }
}

/** Maps a `tenants` row to the port's record. */
export function tenantFromRow(row: Selectable<TenantsTable>): TenantRecord {
  return { id: row.id, name: row.name, createdAt: row.created_at };
}

/** Maps an `api_keys` row to the port's record. */
export function apiKeyFromRow(row: Selectable<ApiKeysTable>): ApiKeyRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    prefix: row.prefix,
    hash: row.hash,
    models: row.models === null ? null : (JSON.parse(row.models) as string[]),
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
  };
}

/** Maps a request-log record to its row (booleans as 0/1). */
export function requestLogToRow(record: RequestLogRecord): RequestLogTable {
  return {
    request_id: record.requestId,
    tenant_id: record.tenantId,
    key_id: record.keyId,
    endpoint: record.endpoint,
    model: record.model,
    deployment: record.deployment,
    status: record.status,
    error_code: record.errorCode,
    stream: record.stream ? 1 : 0,
    prompt_tokens: record.promptTokens,
    cached_tokens: record.cachedTokens,
    completion_tokens: record.completionTokens,
    reasoning_tokens: record.reasoningTokens,
    usage_estimated: record.usageEstimated ? 1 : 0,
    latency_ms: record.latencyMs,
    ttft_ms: record.ttftMs,
    attempts: record.attempts,
    created_at: record.createdAt,
  };
}

/** Maps a `request_log` row back to the port's record. */
export function requestLogFromRow(row: Selectable<RequestLogTable>): RequestLogRecord {
  return {
    requestId: row.request_id,
    tenantId: row.tenant_id,
    keyId: row.key_id,
    endpoint: row.endpoint,
    model: row.model,
    deployment: row.deployment,
    status: row.status,
    errorCode: row.error_code,
    stream: row.stream === 1,
    promptTokens: row.prompt_tokens,
    cachedTokens: row.cached_tokens,
    completionTokens: row.completion_tokens,
    reasoningTokens: row.reasoning_tokens,
    usageEstimated: row.usage_estimated === 1,
    latencyMs: row.latency_ms,
    ttftMs: row.ttft_ms,
    attempts: row.attempts,
    createdAt: row.created_at,
  };
}
