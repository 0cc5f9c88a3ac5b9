import type { Kysely, Migration } from 'kysely';

/**
 * Files and batches (issue 5): uploaded files (their bytes live on disk under `<data_dir>/files/`), batches, and one
 * row per input line with its execution state, so a batch survives `kill -9` line by line. Times are epoch ms
 * (`bigint`), JSON documents are `text`. No foreign keys, like the request log: lines are written in bulk on the
 * hot path of validation and a batch row is never deleted.
 */
export const batchesSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('files')
      .addColumn('id', 'varchar(64)', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('purpose', 'varchar(32)', (column) => column.notNull())
      .addColumn('filename', 'text', (column) => column.notNull())
      .addColumn('bytes', 'bigint', (column) => column.notNull())
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .addColumn('expires_at', 'bigint')
      .execute();
    await db.schema.createIndex('files_tenant_created_idx').on('files').columns(['tenant_id', 'created_at']).execute();

    await db.schema
      .createTable('batches')
      .addColumn('id', 'varchar(64)', (column) => column.primaryKey())
      .addColumn('tenant_id', 'text', (column) => column.notNull())
      .addColumn('key_id', 'text', (column) => column.notNull())
      .addColumn('endpoint', 'text', (column) => column.notNull())
      .addColumn('model', 'text')
      .addColumn('input_file_id', 'text', (column) => column.notNull())
      .addColumn('completion_window', 'varchar(16)', (column) => column.notNull())
      .addColumn('status', 'varchar(16)', (column) => column.notNull())
      .addColumn('output_file_id', 'text')
      .addColumn('error_file_id', 'text')
      .addColumn('errors', 'text')
      .addColumn('metadata', 'text')
      .addColumn('created_at', 'bigint', (column) => column.notNull())
      .addColumn('expires_at', 'bigint', (column) => column.notNull())
      .addColumn('in_progress_at', 'bigint')
      .addColumn('finalizing_at', 'bigint')
      .addColumn('completed_at', 'bigint')
      .addColumn('failed_at', 'bigint')
      .addColumn('expired_at', 'bigint')
      .addColumn('cancelling_at', 'bigint')
      .addColumn('cancelled_at', 'bigint')
      .execute();
    await db.schema
      .createIndex('batches_tenant_created_idx')
      .on('batches')
      .columns(['tenant_id', 'created_at'])
      .execute();
    await db.schema.createIndex('batches_status_idx').on('batches').columns(['status']).execute();

    await db.schema
      .createTable('batch_lines')
      .addColumn('batch_id', 'varchar(64)', (column) => column.notNull())
      .addColumn('line_index', 'integer', (column) => column.notNull())
      .addColumn('custom_id', 'text')
      .addColumn('url', 'text')
      .addColumn('body', 'text')
      .addColumn('estimated_tokens', 'bigint', (column) => column.notNull())
      .addColumn('state', 'varchar(16)', (column) => column.notNull())
      .addColumn('attempts', 'integer', (column) => column.notNull())
      .addColumn('request_id', 'text', (column) => column.notNull())
      .addColumn('status_code', 'integer')
      .addColumn('response', 'text')
      .addColumn('error', 'text')
      .addColumn('input_tokens', 'bigint', (column) => column.notNull())
      .addColumn('cached_tokens', 'bigint', (column) => column.notNull())
      .addColumn('output_tokens', 'bigint', (column) => column.notNull())
      .addColumn('reasoning_tokens', 'bigint', (column) => column.notNull())
      .addColumn('started_at', 'bigint')
      .addColumn('finished_at', 'bigint')
      .addPrimaryKeyConstraint('batch_lines_pk', ['batch_id', 'line_index'])
      .execute();
    await db.schema
      .createIndex('batch_lines_state_idx')
      .on('batch_lines')
      .columns(['batch_id', 'state', 'line_index'])
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropTable('batch_lines').execute();
    await db.schema.dropTable('batches').execute();
    await db.schema.dropTable('files').execute();
  },
};
