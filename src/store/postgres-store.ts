import {
  type DatabaseIntrospector,
  type DatabaseMetadata,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  PostgresDriver,
  PostgresQueryCompiler,
  type SchemaMetadata,
  sql,
  type TableMetadata,
} from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseSchema } from './database-schema.js';
import { KyselyStore, type KyselyStoreOptions } from './kysely-store.js';
import type { Settlement } from './ledger-store.js';
import { SETTLE_TIMEOUT_MS, settleOnPostgres } from './postgres-settle.js';

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
    // A server that stops answering must fail a connection attempt rather than hang it (see SETTLE_TIMEOUT_MS), and
    // idle connections to it should be found dead: TCP keepalive probes after 10 s idle (the system's default wait is
    // two hours; the probes' interval and count stay the system's).
    connectionTimeoutMillis: SETTLE_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
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
  // A client checked out of the pool has no pool listener: when its connection resets (a server restart, a failover)
  // it emits 'error', which would crash the process. Its queries fail with that error anyway, and the pool discards
  // it when it is released with the failure, so the event itself needs no handling.
  pool.on('connect', (client) => {
    client.on('error', ignoreCheckedOutError);
  });
  let migrationTableSchema = schema;
  if (migrationTableSchema === undefined) {
    const result = await pool.query<{ schema: string }>('select current_schema() as schema');
    migrationTableSchema = result.rows[0]?.schema ?? 'public';
  }
  return new PostgresStore({
    kind: 'postgres',
    pool,
    connectionString: options.connectionString,
    schema: migrationTableSchema,
    db: new Kysely<DatabaseSchema>({ dialect: new PostgresDialect({ pool }) }),
    maxParametersPerStatement: POSTGRES_MAX_PARAMETERS,
    // Kysely finds its migration table by name across all schemas unless told which one: name it explicitly so a
    // `kysely_migration` table in another schema is never mistaken for ours.
    migrationTableSchema,
  });
}

/**
 * The PostgreSQL store: the shared Kysely layer, with the settlement hot path (`settle`) on the pool directly,
 * because it streams rows with `COPY` (see `settleOnPostgres`).
 */
export class PostgresStore extends KyselyStore {
  private readonly pool: pg.Pool;
  /** Where the store connects (without Tollgate's `schema`/`pool_size` parameters): for a `LISTEN` connection. */
  readonly connectionString: string;
  /** The schema the store works in. */
  readonly schema: string;
  private ownSchemaDb: Kysely<DatabaseSchema> | undefined;

  constructor(options: KyselyStoreOptions & { pool: pg.Pool; connectionString: string; schema: string }) {
    super(options);
    this.pool = options.pool;
    this.connectionString = options.connectionString;
    this.schema = options.schema;
  }

  override async settle(batch: readonly Settlement[]): Promise<void> {
    await settleOnPostgres(this.pool, batch);
  }

  /**
   * The same pool, seen by Kysely's migrator through an introspector of this store's schema alone. Kysely's own
   * reads the columns of every schema's tables through catalog functions (`pg_get_serial_sequence`,
   * `has_schema_privilege`), which fail when another schema, or a table or column of another schema, is dropped
   * during the read (3F000, 42P01, 42703): a migration here would fail because of another database user's. Never
   * destroyed: its driver would end the store's pool.
   */
  protected override migrationDb(): Kysely<DatabaseSchema> {
    const { pool, schema } = this;
    this.ownSchemaDb ??= new Kysely<DatabaseSchema>({
      dialect: {
        createAdapter: () => new PostgresAdapter(),
        createDriver: () => new PostgresDriver({ pool }),
        createQueryCompiler: () => new PostgresQueryCompiler(),
        createIntrospector: (db) => new OwnSchemaIntrospector(db, schema),
      },
    });
    return this.ownSchemaDb;
  }
}

/**
 * What Kysely's migrator asks of an introspector (does the migration schema exist, does its table), answered from
 * `pg_namespace` and `pg_tables` for one schema: catalog views read in one snapshot, with no function of another
 * schema's objects that could fail when they are dropped meanwhile. Tables come without columns: the migrator
 * needs only their names.
 */
class OwnSchemaIntrospector implements DatabaseIntrospector {
  constructor(
    private readonly db: Kysely<unknown>,
    private readonly schema: string,
  ) {}

  async getSchemas(): Promise<SchemaMetadata[]> {
    const rows = await sql<{
      name: string;
    }>`select nspname as name from pg_namespace where nspname = ${this.schema}`.execute(this.db);
    return rows.rows.map((row) => ({ name: row.name }));
  }

  async getTables(): Promise<TableMetadata[]> {
    const rows = await sql<{
      name: string;
    }>`select tablename as name from pg_tables where schemaname = ${this.schema}`.execute(this.db);
    return rows.rows.map((row) => ({ name: row.name, schema: this.schema, isView: false, columns: [] }));
  }

  async getMetadata(): Promise<DatabaseMetadata> {
    return { tables: await this.getTables() };
  }
}

async function createSchemaIfMissing(connectionString: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  client.on('error', ignoreCheckedOutError);
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

/** See the pool's 'connect' listener in `openPostgresStore`: the failed query reports the error. */
function ignoreCheckedOutError(): void {}

function parseSafeInteger(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`int8 value ${text} exceeds the safe integer range`);
  return value;
}
