import { type Kysely, type Migration, sql } from 'kysely';

/**
 * One row per request: a priced request's usage event is now the rating columns of its `request_log` row, and
 * `usage_events` is a view of the rows that have them (`amount is not null`), with the columns it always had.
 *
 * Before, every metered request was written twice — a request-log row and a usage-event row with the same id,
 * tenant, key, model, deployment, time and tokens — each with a primary-key index on the request id and an index on
 * (tenant, time). Settling one took two row inserts and four index inserts; now it takes one and two. Reads of the
 * ledger did not change: they name `usage_events`, and the view's columns map onto the row's (`input_tokens` is the
 * prompt less its cached part, `received_at` the log's `created_at`).
 *
 * Existing events move into their log rows. Where an event and its log row disagreed on a shared field (they never
 * should: both were written from one trace), the event's value is kept, because the rollups and balances were built
 * from it. An event without a log row gets one with `endpoint` 'unknown'.
 */
export const ledgerInRequestLogSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    for (const [column, type] of RATING_COLUMNS) {
      await db.schema.alterTable('request_log').addColumn(column, type).execute();
    }
    const ratings = RATING_COLUMNS.map(([column]) => column);
    await sql`update request_log set ${sql.join(
      [...SHARED_FROM_EVENT, ...ratings.map((column) => [column, `e.${column}`] as const)].map(
        ([column, value]) => sql`${sql.ref(column)} = ${sql.raw(value)}`,
      ),
    )} from usage_events as e where e.request_id = request_log.request_id`.execute(db);
    const logOnly: readonly (readonly [string, string])[] = [
      ['endpoint', "'unknown'"],
      ['status', '200'],
      ['stream', '0'],
      ['latency_ms', '0'],
      ['attempts', '0'],
    ];
    const inserted = [['request_id', 'e.request_id'] as const, ...SHARED_FROM_EVENT, ...logOnly];
    await sql`insert into request_log (${sql.join(
      [...inserted.map(([column]) => column), ...ratings].map((column) => sql.ref(column)),
    )}) select ${sql.raw([...inserted.map(([, value]) => value), ...ratings.map((column) => `e.${column}`)].join(', '))}
      from usage_events as e
      where not exists (select 1 from request_log as l where l.request_id = e.request_id)`.execute(db);
    await db.schema.dropTable('usage_events').execute();
    await db.schema
      .createView('usage_events')
      .as(sql`select ${sql.raw(VIEW_COLUMNS)} from request_log
      where amount is not null`)
      .execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.dropView('usage_events').execute();
    await sql`create table usage_events as select ${sql.raw(VIEW_COLUMNS)} from request_log
      where amount is not null`.execute(db);
    // `create table … as` keeps the columns, not their constraints: restore the key and the index of 0002.
    await sql`create unique index usage_events_request_id_key on usage_events (request_id)`.execute(db);
    await db.schema
      .createIndex('usage_events_tenant_received_idx')
      .on('usage_events')
      .columns(['tenant_id', 'received_at'])
      .execute();
    for (const [column] of RATING_COLUMNS) await db.schema.alterTable('request_log').dropColumn(column).execute();
  },
};

/**
 * The rating columns added to `request_log`: null on rows without a usage event. The column lists of this file are
 * spelled out rather than imported from `ledger-rows.ts`: a shipped migration must not change when the code's lists do.
 */
const RATING_COLUMNS = [
  ['batch', 'integer'],
  ['currency', 'varchar(8)'],
  ['price_version', 'text'],
  ['tier', 'text'],
  ['output_condition', 'text'],
  ['input_list_amount', 'bigint'],
  ['cached_list_amount', 'bigint'],
  ['output_list_amount', 'bigint'],
  ['batch_discount', 'bigint'],
  ['off_peak_discount', 'bigint'],
  ['contract_discount', 'bigint'],
  ['volume_discount', 'bigint'],
  ['amount', 'bigint'],
  ['cost', 'bigint'],
  ['detail', 'text'],
] as const;

/** Log columns an event also had, and their value from the event (`e`). */
const SHARED_FROM_EVENT = [
  ['tenant_id', 'e.tenant_id'],
  ['key_id', 'e.key_id'],
  ['model', 'e.model'],
  ['deployment', 'e.deployment'],
  ['created_at', 'e.received_at'],
  ['prompt_tokens', 'e.input_tokens + e.cached_tokens'],
  ['cached_tokens', 'e.cached_tokens'],
  ['completion_tokens', 'e.output_tokens'],
  ['reasoning_tokens', 'e.reasoning_tokens'],
  ['usage_estimated', 'e.estimated'],
] as const;

/** The view's select list: `usage_events`' columns, in 0002's order, from a `request_log` row. */
const VIEW_COLUMNS = [
  'request_id',
  'tenant_id',
  'key_id',
  'model',
  'deployment',
  'batch',
  'created_at as received_at',
  'currency',
  'price_version',
  'tier',
  'output_condition',
  'prompt_tokens - cached_tokens as input_tokens',
  'cached_tokens',
  'completion_tokens as output_tokens',
  'reasoning_tokens',
  'usage_estimated as estimated',
  'input_list_amount',
  'cached_list_amount',
  'output_list_amount',
  'batch_discount',
  'off_peak_discount',
  'contract_discount',
  'volume_discount',
  'amount',
  'cost',
  'detail',
].join(', ');
