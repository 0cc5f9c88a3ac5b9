import type { Kysely, Migration } from 'kysely';

/**
 * Tenants, API keys, the request log and settings. Written with Kysely's schema builder only, so the same
 * migration runs on SQLite and PostgreSQL. `bigint` is INTEGER affinity on SQLite and int8 on PostgreSQL.
 */
export const initialSchema: Migration = {
  // The migrator passes `Kysely<any>`: a migration must not depend on the current schema types.
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('tenants')
      .addColumn('id', 'varchar(64)', (column) => column.primaryKey())
      .addColumn('name', 'text', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .execute();

    await db.schema
      .createTable('api_keys')
      .addColumn('id', 'varchar(64)', (column) => column.primaryKey())
      .addColumn('tenant_id', 'varchar(64)', (column) => column.notNull().references('tenants.id'))
      .addColumn('name', 'text')
      .addColumn('prefix', 'varchar(32)', (column) => column.notNull())
      .addColumn('hash', 'varchar(64)', (column) => column.notNull())
      .addColumn('models', 'text')
      .addColumn('expires_at', 'bigint')
      .addColumn('revoked_at', 'bigint')
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .execute();
    await db.schema.createIndex('api_keys_hash_unique').on('api_keys').column('hash').unique().execute();
    await db.schema.createIndex('api_keys_tenant_idx').on('api_keys').columns(['tenant_id', 'created_at']).execute();

    // No foreign keys and no length limits here on purpose: the log must accept every record (even of a tenant or
    // key deleted later, or with a long client-supplied request id), and an FK check per row would slow the commit.
    await db.schema
      .createTable('request_log')
      .addColumn('request_id', 'text', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text')
      .addColumn('key_id', 'text')
      .addColumn('endpoint', 'text', (column) => column.notNull())
      .addColumn('model', 'text')
      .addColumn('deployment', 'text')
      .addColumn('status', 'integer', (column) => column.notNull())
      .addColumn('error_code', 'text')
      .addColumn('stream', 'integer', (column) => column.notNull())
      .addColumn('prompt_tokens', 'bigint', (column) => column.notNull())
      .addColumn('cached_tokens', 'bigint', (column) => column.notNull())
      .addColumn('completion_tokens', 'bigint', (column) => column.notNull())
      .addColumn('reasoning_tokens', 'bigint', (column) => column.notNull())
      .addColumn('usage_estimated', 'integer', (column) => column.notNull())
      // Durations are fractional milliseconds (the recorder keeps microseconds).
      .addColumn('latency_ms', 'double precision', (column) => column.notNull())
      .addColumn('ttft_ms', 'double precision')
      .addColumn('attempts', 'integer', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .execute();
    await db.schema
      .createIndex('request_log_tenant_created_idx')
      .on('request_log')
      .columns(['tenant_id', 'created_at'])
      .execute();
    await db.schema.createIndex('request_log_created_idx').on('request_log').column('created_at').execute();

    await db.schema
      .createTable('settings')
      .addColumn('key', 'varchar(255)', (column) => column.primaryKey())
      .addColumn('value', 'text', (column) => column.notNull())
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropTable('settings').execute();
    await db.schema.dropTable('request_log').execute();
    await db.schema.dropTable('api_keys').execute();
    await db.schema.dropTable('tenants').execute();
  },
};
