import { Kysely, PostgresDialect, type RawBuilder, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseSchema, RequestLogTable, UsageEventsTable } from './database-schema.js';
import { KyselyStore } from './kysely-store.js';

/** PostgreSQL's limit on bind parameters per statement (a 16-bit count). */
const POSTGRES_MAX_PARAMETERS = 65_535;
const INT8_OID = 20;
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Options of `openPostgresStore`. */
export interface PostgresStoreOptions {
  /** `postgres://user@host:port/database` (query parameters other than those of `pg` are not allowed). */
  connectionString: string;
  /**
   * Schema to work in (set as the connection's `search_path`, created if missing), so several gateways or test
   * runs can share one database. Lower-case letters, digits and `_`. Default: the server's default (`public`).
   */
  schema?: string;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  /** Where errors of idle pooled connections are logged (warn). Default: not logged. */
  logger?: Logger;
}

/**
 * Opens a PostgreSQL store over a `pg` pool. int8 columns (the epoch-ms times, token counts) are parsed to numbers
 * by this pool only (no global `pg.types` change) and refused beyond 2^53, where a number would lose precision.
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  const schema = options.schema;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Error(`Invalid PostgreSQL schema name "${schema}": use lower-case letters, digits and _.`);
  }
  if (schema !== undefined) await createSchemaIfMissing(options.connectionString, schema);

  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.poolSize ?? 10,
    // Sent in the startup packet: costs no extra round trip per connection.
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID && format !== 'binary' ? parseSafeInteger : pg.types.getTypeParser(oid, format)) as never,
    },
  });
  // An idle client that loses its connection emits 'error' on the pool; without a listener that crashes the process.
  // The next query gets a fresh connection and reports its own error.
  pool.on('error', (error: Error) => {
    options.logger?.warn({ err: error }, 'PostgreSQL idle connection failed');
  });
  let migrationTableSchema = schema;
  if (migrationTableSchema === undefined) {
    const result = await pool.query<{ schema: string }>('select current_schema() as schema');
    migrationTableSchema = result.rows[0]?.schema ?? 'public';
  }
  return new PostgresStore({
    kind: 'postgres',
    db: new Kysely<DatabaseSchema>({ dialect: new PostgresDialect({ pool }) }),
    maxParametersPerStatement: POSTGRES_MAX_PARAMETERS,
    // Kysely finds its migration table by name across all schemas unless told which one: name it explicitly so a
    // `kysely_migration` table in another schema is never mistaken for ours.
    migrationTableSchema,
  });
}

/**
 * The PostgreSQL store: the shared Kysely layer, with the settlement's two big inserts (request log, usage events)
 * sent as one `INSERT … SELECT FROM unnest(array, array, …)` each: one bind parameter per column instead of one
 * per value, so a 2,000-row batch costs 26 parameters to build and parse rather than 52,000, and one statement
 * never hits the 65,535-parameter limit. `RETURNING request_id` tells which rows were new.
 */
export class PostgresStore extends KyselyStore {
  protected override async insertLogsReturningIds(
    db: Kysely<DatabaseSchema>,
    rows: readonly RequestLogTable[],
  ): Promise<Set<string>> {
    return insertUnnest(db, 'request_log', REQUEST_LOG_TYPES, rows);
  }

  protected override async insertUsageEventsReturningIds(
    db: Kysely<DatabaseSchema>,
    rows: readonly UsageEventsTable[],
  ): Promise<Set<string>> {
    return insertUnnest(db, 'usage_events', USAGE_EVENT_TYPES, rows);
  }
}

/** Column → PostgreSQL array element type, in insert order. */
type ColumnTypes<Row> = readonly (readonly [keyof Row & string, string])[];

const REQUEST_LOG_TYPES: ColumnTypes<RequestLogTable> = [
  ['request_id', 'text'],
  ['tenant_id', 'text'],
  ['key_id', 'text'],
  ['endpoint', 'text'],
  ['model', 'text'],
  ['deployment', 'text'],
  ['status', 'int4'],
  ['error_code', 'text'],
  ['stream', 'int4'],
  ['prompt_tokens', 'int8'],
  ['cached_tokens', 'int8'],
  ['completion_tokens', 'int8'],
  ['reasoning_tokens', 'int8'],
  ['usage_estimated', 'int4'],
  ['latency_ms', 'float8'],
  ['ttft_ms', 'float8'],
  ['attempts', 'int4'],
  ['created_at', 'int8'],
];

const USAGE_EVENT_TYPES: ColumnTypes<UsageEventsTable> = [
  ['request_id', 'text'],
  ['tenant_id', 'text'],
  ['key_id', 'text'],
  ['model', 'text'],
  ['deployment', 'text'],
  ['batch', 'int4'],
  ['received_at', 'int8'],
  ['currency', 'text'],
  ['price_version', 'text'],
  ['tier', 'text'],
  ['output_condition', 'text'],
  ['input_tokens', 'int8'],
  ['cached_tokens', 'int8'],
  ['output_tokens', 'int8'],
  ['reasoning_tokens', 'int8'],
  ['estimated', 'int4'],
  ['input_list_amount', 'int8'],
  ['cached_list_amount', 'int8'],
  ['output_list_amount', 'int8'],
  ['batch_discount', 'int8'],
  ['off_peak_discount', 'int8'],
  ['contract_discount', 'int8'],
  ['volume_discount', 'int8'],
  ['amount', 'int8'],
  ['cost', 'int8'],
  ['detail', 'text'],
];

/** `insert into <table> select * from unnest(…) on conflict (request_id) do nothing returning request_id`. */
async function insertUnnest<Row extends { request_id: string }>(
  db: Kysely<DatabaseSchema>,
  table: 'request_log' | 'usage_events',
  types: ColumnTypes<Row>,
  rows: readonly Row[],
): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const arrays: RawBuilder<unknown>[] = types.map(([column, type]) => {
    const values = rows.map((row) => row[column]);
    return sql`${values}::${sql.raw(type)}[]`;
  });
  const columns = sql.join(types.map(([column]) => sql.ref(column)));
  const result = await sql<{ request_id: string }>`insert into ${sql.table(table)} (${columns})
    select * from unnest(${sql.join(arrays)})
    on conflict (request_id) do nothing returning request_id`.execute(db);
  return new Set(result.rows.map((row) => row.request_id));
}

async function createSchemaIfMissing(connectionString: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query(`create schema if not exists "${schema}"`);
  } catch (error: unknown) {
    // Two processes creating the same schema at once: `if not exists` can still fail with a unique violation.
    const exists = await client.query('select 1 from pg_namespace where nspname = $1', [schema]);
    if (exists.rowCount === 0) throw error;
  } finally {
    await client.end();
  }
}

function parseSafeInteger(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`int8 value ${text} exceeds the safe integer range`);
  return value;
}
