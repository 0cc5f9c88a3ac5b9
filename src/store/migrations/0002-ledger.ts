import type { Kysely, Migration } from 'kysely';

/**
 * The ledger (issue 3): wallets, wallet transactions, usage events, usage and billing rollups, stream checkpoints,
 * price versions, budgets and alert claims. Money columns are `bigint` nano-units (1e-9 of the currency unit):
 * INTEGER (64-bit) on SQLite, int8 on PostgreSQL. Booleans are 0/1 integers as in `0001`. Nullable labels that are
 * part of a primary key (`key_id`, `output_condition`) are stored as `''` for null, because a primary key column
 * cannot be null on PostgreSQL and `ON CONFLICT` never matches nulls.
 */
export const ledgerSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('wallets')
      .addColumn('tenant_id', 'text', (column) => column.primaryKey())
      .addColumn('mode', 'varchar(16)', (column) => column.notNull())
      .addColumn('currency', 'varchar(8)', (column) => column.notNull())
      .addColumn('balance', 'bigint', (column) => column.notNull())
      .addColumn('credit_limit', 'bigint', (column) => column.notNull())
      .addColumn('reserved', 'bigint', (column) => column.notNull())
      .addColumn('updated_at', 'bigint', (column) => column.notNull())
      .execute();

    await db.schema
      .createTable('wallet_transactions')
      .addColumn('id', 'varchar(64)', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('kind', 'varchar(16)', (column) => column.notNull())
      .addColumn('amount', 'bigint', (column) => column.notNull())
      .addColumn('currency', 'varchar(8)', (column) => column.notNull())
      .addColumn('idempotency_key', 'text')
      .addColumn('note', 'text')
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      // Several null keys are allowed on both databases (nulls are distinct in a unique constraint).
      .addUniqueConstraint('wallet_transactions_idempotency_unique', ['tenant_id', 'idempotency_key'])
      .execute();
    await db.schema
      .createIndex('wallet_transactions_tenant_created_idx')
      .on('wallet_transactions')
      .columns(['tenant_id', 'created_at'])
      .execute();

    // Like the request log: no foreign keys, so an event is never refused and the hot path checks nothing per row.
    await db.schema
      .createTable('usage_events')
      .addColumn('request_id', 'text', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('key_id', 'text')
      .addColumn('model', 'text', (column) => column.notNull())
      .addColumn('deployment', 'text')
      .addColumn('batch', 'integer', (column) => column.notNull())
      .addColumn('received_at', 'bigint', (column) => column.notNull())
      .addColumn('currency', 'varchar(8)', (column) => column.notNull())
      .addColumn('price_version', 'text', (column) => column.notNull())
      .addColumn('tier', 'text', (column) => column.notNull())
      .addColumn('output_condition', 'text')
      .addColumn('input_tokens', 'bigint', (column) => column.notNull())
      .addColumn('cached_tokens', 'bigint', (column) => column.notNull())
      .addColumn('output_tokens', 'bigint', (column) => column.notNull())
      .addColumn('reasoning_tokens', 'bigint', (column) => column.notNull())
      .addColumn('estimated', 'integer', (column) => column.notNull())
      .addColumn('input_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('cached_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('output_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('batch_discount', 'bigint', (column) => column.notNull())
      .addColumn('off_peak_discount', 'bigint', (column) => column.notNull())
      .addColumn('contract_discount', 'bigint', (column) => column.notNull())
      .addColumn('volume_discount', 'bigint', (column) => column.notNull())
      .addColumn('amount', 'bigint', (column) => column.notNull())
      .addColumn('cost', 'bigint')
      .addColumn('detail', 'text', (column) => column.notNull())
      .execute();
    await db.schema
      .createIndex('usage_events_tenant_received_idx')
      .on('usage_events')
      .columns(['tenant_id', 'received_at'])
      .execute();

    // Tenant first: the usage API reads one tenant's range of one bucket size.
    await db.schema
      .createTable('usage_rollups')
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('bucket', 'varchar(4)', (column) => column.notNull())
      .addColumn('bucket_start', 'bigint', (column) => column.notNull())
      .addColumn('key_id', 'text', (column) => column.notNull())
      .addColumn('model', 'text', (column) => column.notNull())
      .addColumn('requests', 'bigint', (column) => column.notNull())
      .addColumn('input_tokens', 'bigint', (column) => column.notNull())
      .addColumn('cached_tokens', 'bigint', (column) => column.notNull())
      .addColumn('output_tokens', 'bigint', (column) => column.notNull())
      .addColumn('amount', 'bigint', (column) => column.notNull())
      .addColumn('cost', 'bigint', (column) => column.notNull())
      .addPrimaryKeyConstraint('usage_rollups_pk', ['tenant_id', 'bucket', 'bucket_start', 'key_id', 'model'])
      .execute();
    await db.schema
      .createIndex('usage_rollups_bucket_start_idx')
      .on('usage_rollups')
      .columns(['bucket', 'bucket_start'])
      .execute();

    await db.schema
      .createTable('billing_rollups')
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('day', 'bigint', (column) => column.notNull())
      .addColumn('model', 'text', (column) => column.notNull())
      .addColumn('currency', 'varchar(8)', (column) => column.notNull())
      .addColumn('price_version', 'text', (column) => column.notNull())
      .addColumn('tier', 'text', (column) => column.notNull())
      .addColumn('output_condition', 'text', (column) => column.notNull())
      .addColumn('batch', 'integer', (column) => column.notNull())
      .addColumn('requests', 'bigint', (column) => column.notNull())
      .addColumn('input_tokens', 'bigint', (column) => column.notNull())
      .addColumn('cached_tokens', 'bigint', (column) => column.notNull())
      .addColumn('output_tokens', 'bigint', (column) => column.notNull())
      .addColumn('input_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('cached_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('output_list_amount', 'bigint', (column) => column.notNull())
      .addColumn('batch_discount', 'bigint', (column) => column.notNull())
      .addColumn('off_peak_discount', 'bigint', (column) => column.notNull())
      .addColumn('contract_discount', 'bigint', (column) => column.notNull())
      .addColumn('volume_discount', 'bigint', (column) => column.notNull())
      .addColumn('amount', 'bigint', (column) => column.notNull())
      .addColumn('cost', 'bigint', (column) => column.notNull())
      .addPrimaryKeyConstraint('billing_rollups_pk', [
        'tenant_id',
        'day',
        'model',
        'currency',
        'price_version',
        'tier',
        'output_condition',
        'batch',
      ])
      .execute();
    await db.schema.createIndex('billing_rollups_day_idx').on('billing_rollups').column('day').execute();

    await db.schema
      .createTable('stream_checkpoints')
      .addColumn('request_id', 'text', (column) => column.primaryKey())
      .addColumn('event', 'text', (column) => column.notNull())
      .addColumn('reservation', 'bigint', (column) => column.notNull())
      .addColumn('updated_at', 'bigint', (column) => column.notNull())
      .execute();

    await db.schema
      .createTable('price_versions')
      .addColumn('id', 'varchar(255)', (column) => column.primaryKey())
      .addColumn('effective_from', 'bigint', (column) => column.notNull())
      .addColumn('document', 'text', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .execute();

    await db.schema
      .createTable('budgets')
      .addColumn('scope', 'varchar(16)', (column) => column.notNull())
      .addColumn('scope_id', 'text', (column) => column.notNull())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('monthly_limit', 'bigint', (column) => column.notNull())
      .addColumn('enforcement', 'varchar(16)', (column) => column.notNull())
      .addColumn('thresholds', 'text', (column) => column.notNull())
      .addColumn('webhook_url', 'text')
      .addColumn('updated_at', 'bigint', (column) => column.notNull())
      .addPrimaryKeyConstraint('budgets_pk', ['scope', 'scope_id'])
      .execute();
    await db.schema.createIndex('budgets_tenant_idx').on('budgets').column('tenant_id').execute();

    await db.schema
      .createTable('alert_claims')
      .addColumn('scope', 'varchar(16)', (column) => column.notNull())
      .addColumn('scope_id', 'text', (column) => column.notNull())
      .addColumn('period', 'varchar(32)', (column) => column.notNull())
      .addColumn('threshold', 'double precision', (column) => column.notNull())
      .addPrimaryKeyConstraint('alert_claims_pk', ['scope', 'scope_id', 'period', 'threshold'])
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    for (const table of [
      'alert_claims',
      'budgets',
      'price_versions',
      'stream_checkpoints',
      'billing_rollups',
      'usage_rollups',
      'usage_events',
      'wallet_transactions',
      'wallets',
    ]) {
      await db.schema.dropTable(table).execute();
    }
  },
};
