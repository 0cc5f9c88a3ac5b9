import { type AliasedRawBuilder, type ExpressionBuilder, type Kysely, Migrator, type Selectable, sql } from 'kysely';
import type {
  ApiKeysTable,
  BillingRollupsTable,
  BudgetsTable,
  DatabaseSchema,
  RequestLogTable,
  StreamCheckpointsTable,
  TenantsTable,
  UsageEventsTable,
  UsageRollupsTable,
  WalletsTable,
  WalletTransactionsTable,
} from './database-schema.js';
import {
  BILLING_ROLLUP_KEY,
  BILLING_ROLLUP_SUMS,
  billingRollupFromRow,
  budgetFromRow,
  budgetToRow,
  checkpointEventToJson,
  checkpointFromRow,
  DAY_MS,
  MONEY_COLUMNS,
  type MoneyAsText,
  PRICED_REQUEST_LOG_COLUMNS,
  requestLogRow,
  USAGE_EVENT_COLUMNS,
  USAGE_ROLLUP_KEY,
  USAGE_ROLLUP_SUMS,
  usageEventFromRow,
  usageRollupFromRow,
  walletFromRow,
  walletTransactionFromRow,
} from './ledger-rows.js';
import {
  BalanceOutOfRangeError,
  type BillingMode,
  type BillingRollupRow,
  type BudgetRecord,
  type Nano,
  type NewWalletTransaction,
  type PriceVersionRecord,
  type Settlement,
  type StreamCheckpoint,
  type UsageEventRecord,
  type UsageRollupQuery,
  type UsageRollupRow,
  type WalletRecord,
  type WalletTransactionRecord,
  walletInRange,
} from './ledger-store.js';
import { migrationProvider } from './migrations/migration-provider.js';
import { randomId } from './random-id.js';
import { firstOfEachRequest, type SettlementEffects, settlementEffects } from './settlement-effects.js';
import type {
  ApiKeyRecord,
  CreationPageQuery,
  NewApiKey,
  RequestLogQuery,
  RequestLogRecord,
  Store,
  TenantRecord,
} from './store.js';

/** Default page size of `listRequestLogs`. */
const DEFAULT_LOG_LIMIT = 100;

/** Default page size of `listUsageEvents`, events. */
export const DEFAULT_USAGE_EVENT_LIMIT = 10_000;

/** Tables whose money columns reads cast to text. */
type MoneyTable = keyof typeof MONEY_COLUMNS;

const WALLET_COLUMNS = ['tenant_id', 'mode', 'currency', 'balance', 'credit_limit', 'reserved', 'updated_at'] as const;
const WALLET_TRANSACTION_COLUMNS = [
  'id',
  'tenant_id',
  'kind',
  'amount',
  'currency',
  'idempotency_key',
  'note',
  'created_at',
] as const;
const USAGE_ROLLUP_COLUMNS = [...USAGE_ROLLUP_KEY, ...USAGE_ROLLUP_SUMS] as const;
const BUDGET_COLUMNS = [
  'scope',
  'scope_id',
  'tenant_id',
  'monthly_limit',
  'enforcement',
  'thresholds',
  'webhook_url',
  'updated_at',
] as const satisfies readonly (keyof BudgetsTable)[];

/**
 * The select list of `columns` with the table's money columns cast to text: the only exact way to read a 64-bit
 * integer through both drivers (better-sqlite3 returns a lossy number past 2^53 by default; this PostgreSQL pool
 * parses int8 to numbers and refuses those past 2^53).
 */
function readColumns(table: MoneyTable, columns: readonly string[]): AliasedRawBuilder<unknown, string>[] {
  const money = new Set<string>(MONEY_COLUMNS[table]);
  return columns.map((column) =>
    money.has(column) ? sql`cast(${sql.ref(column)} as text)`.as(column) : sql`${sql.ref(column)}`.as(column),
  );
}

/** `readColumns` for the sums of `columns` over a group: money sums cast to text, so they read back exactly. */
function sumColumns(table: MoneyTable, columns: readonly string[]): AliasedRawBuilder<unknown, string>[] {
  const money = new Set<string>(MONEY_COLUMNS[table]);
  return columns.map((column) =>
    money.has(column) ? sql`cast(sum(${sql.ref(column)}) as text)`.as(column) : sql`sum(${sql.ref(column)})`.as(column),
  );
}

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
  /** Bind parameters one statement may carry. */
  protected readonly maxParameters: number;
  private readonly migrationTableSchema: string | undefined;
  private readonly onClose: (() => Promise<void>) | undefined;
  private closed = false;

  constructor(options: KyselyStoreOptions) {
    this.kind = options.kind;
    this.db = options.db;
    // Columns written per request-log row, with the dialect's parameter limit, size each INSERT chunk.
    this.rowsPerInsert = Math.floor(options.maxParametersPerStatement / PRICED_REQUEST_LOG_COLUMNS.length);
    this.maxParameters = options.maxParametersPerStatement;
    this.migrationTableSchema = options.migrationTableSchema;
    this.onClose = options.onClose;
  }

  /** The query layer, for stores of other modules that share this database (e.g. the batch store). */
  get kysely(): Kysely<DatabaseSchema> {
    return this.db;
  }

  /** The query layer the migrator runs on: the store's own, unless a dialect needs another (PostgreSQL). */
  protected migrationDb(): Kysely<DatabaseSchema> {
    return this.db;
  }

  /**
   * Migrates to the latest schema, or up or down to the named migration (`target`: tests of a migration and
   * operators rolling back).
   */
  async migrate(target?: string): Promise<void> {
    const migrator = new Migrator({
      db: this.migrationDb(),
      provider: migrationProvider,
      ...(this.migrationTableSchema === undefined ? {} : { migrationTableSchema: this.migrationTableSchema }),
    });
    const { error, results } = await (target === undefined ? migrator.migrateToLatest() : migrator.migrateTo(target));
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

  async listTenants(page: CreationPageQuery = {}): Promise<TenantRecord[]> {
    const { after, limit } = page;
    let select = this.db.selectFrom('tenants').selectAll();
    if (after !== undefined) {
      select = select.where((eb) => eb(eb.refTuple('created_at', 'id'), '>', eb.tuple(after.createdAt, after.id)));
    }
    if (limit !== undefined) select = select.limit(limit);
    const rows = await select.orderBy('created_at').orderBy('id').execute();
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

  async listKeys(tenantId: string, page: CreationPageQuery = {}): Promise<ApiKeyRecord[]> {
    const { after, limit } = page;
    let select = this.db.selectFrom('api_keys').selectAll().where('tenant_id', '=', tenantId);
    if (after !== undefined) {
      select = select.where((eb) => eb(eb.refTuple('created_at', 'id'), '>', eb.tuple(after.createdAt, after.id)));
    }
    if (limit !== undefined) select = select.limit(limit);
    const rows = await select.orderBy('created_at').orderBy('id').execute();
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
    const rows = records.map((record) => requestLogRow(record));
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

  async putSetting(key: string, value: string): Promise<void> {
    await this.db
      .insertInto('settings')
      .values({ key, value })
      .onConflict((conflict) => conflict.column('key').doUpdateSet({ value }))
      .execute();
  }

  async getWallet(tenantId: string): Promise<WalletRecord | undefined> {
    return walletOf(this.db, tenantId);
  }

  async configureWallet(
    tenantId: string,
    settings: { mode: BillingMode; currency: string; creditLimit: Nano },
  ): Promise<WalletRecord> {
    return this.db.transaction().execute(async (db) => {
      await db
        .insertInto('wallets')
        .values({
          tenant_id: tenantId,
          mode: settings.mode,
          currency: settings.currency,
          balance: 0n,
          credit_limit: settings.creditLimit,
          reserved: 0n,
          updated_at: Date.now(),
        })
        .onConflict((conflict) =>
          conflict.column('tenant_id').doUpdateSet((eb) => ({
            mode: eb.ref('excluded.mode'),
            currency: eb.ref('excluded.currency'),
            credit_limit: eb.ref('excluded.credit_limit'),
            updated_at: eb.ref('excluded.updated_at'),
          })),
        )
        .execute();
      // The upsert holds the row (PostgreSQL's row lock, SQLite's write lock) until commit: the balance read here is
      // the one kept, and no wallet transaction can move it before the new limit is in.
      const wallet = await walletOf(db, tenantId);
      if (wallet === undefined) throw new Error(`Wallet of tenant ${tenantId} vanished after its upsert`);
      if (!walletInRange(wallet.balance, wallet.creditLimit)) {
        throw new BalanceOutOfRangeError(tenantId, wallet.balance, wallet.creditLimit);
      }
      return wallet;
    });
  }

  async addWalletTransaction(
    transaction: NewWalletTransaction,
  ): Promise<{ record: WalletTransactionRecord; created: boolean }> {
    const record: WalletTransactionRecord = {
      id: randomId('wtx_'),
      tenantId: transaction.tenantId,
      kind: transaction.kind,
      amount: transaction.amount,
      currency: transaction.currency,
      idempotencyKey: transaction.idempotencyKey,
      note: transaction.note,
      createdAt: transaction.createdAt ?? Date.now(),
    };
    return this.db.transaction().execute(async (db) => {
      // Two concurrent calls with one key: on PostgreSQL the second INSERT waits on the unique index until the
      // first commits, then does nothing; on SQLite the write lock serialises them. Either way one row, one credit.
      const inserted = await db
        .insertInto('wallet_transactions')
        .values({
          id: record.id,
          tenant_id: record.tenantId,
          kind: record.kind,
          amount: record.amount,
          currency: record.currency,
          idempotency_key: record.idempotencyKey,
          note: record.note,
          created_at: record.createdAt,
        })
        .onConflict((conflict) => conflict.columns(['tenant_id', 'idempotency_key']).doNothing())
        .returning('id')
        .executeTakeFirst();
      if (inserted === undefined) {
        const existing = await db
          .selectFrom('wallet_transactions')
          .select(readColumns('wallet_transactions', WALLET_TRANSACTION_COLUMNS))
          .where('tenant_id', '=', record.tenantId)
          .where('idempotency_key', '=', record.idempotencyKey)
          .executeTakeFirstOrThrow();
        return {
          record: walletTransactionFromRow(existing as MoneyAsText<WalletTransactionsTable>),
          created: false,
        };
      }
      // A tenant without a wallet gets an empty prepaid one first, so that there is always a row to lock.
      await db
        .insertInto('wallets')
        .values({
          tenant_id: record.tenantId,
          mode: 'prepaid',
          currency: record.currency,
          balance: 0n,
          credit_limit: 0n,
          reserved: 0n,
          updated_at: record.createdAt,
        })
        .onConflict((conflict) => conflict.column('tenant_id').doNothing())
        .execute();
      // Locked until commit (PostgreSQL's row lock; SQLite's write lock is held already), so the balance checked is
      // the one replaced: concurrent transactions near the limit cannot pass the check together.
      const wallet = await walletOf(db, record.tenantId, { forUpdate: this.kind === 'postgres' });
      if (wallet === undefined) throw new Error(`Wallet of tenant ${record.tenantId} vanished after its insert`);
      if (wallet.currency !== record.currency) {
        throw new Error(`The wallet of tenant ${record.tenantId} is in ${wallet.currency}, not ${record.currency}`);
      }
      // Added here in bigint, not in SQL: past 64 bits SQLite would turn the sum into an inexact REAL.
      const balance = wallet.balance + record.amount;
      if (!walletInRange(balance, wallet.creditLimit)) {
        throw new BalanceOutOfRangeError(record.tenantId, balance, wallet.creditLimit);
      }
      await db
        .updateTable('wallets')
        .set({ balance, updated_at: record.createdAt })
        .where('tenant_id', '=', record.tenantId)
        .execute();
      return { record, created: true };
    });
  }

  async listWalletTransactions(
    tenantId: string,
    range: { start?: number; end?: number } = {},
  ): Promise<WalletTransactionRecord[]> {
    let select = this.db
      .selectFrom('wallet_transactions')
      .select(readColumns('wallet_transactions', WALLET_TRANSACTION_COLUMNS))
      .where('tenant_id', '=', tenantId);
    if (range.start !== undefined) select = select.where('created_at', '>=', range.start);
    if (range.end !== undefined) select = select.where('created_at', '<', range.end);
    const rows = await select.orderBy('created_at').orderBy('id').execute();
    return rows.map((row) => walletTransactionFromRow(row as MoneyAsText<WalletTransactionsTable>));
  }

  async reserve(tenantId: string, amount: Nano, owner?: string): Promise<boolean> {
    if (amount < 0n) throw new RangeError(`Cannot reserve a negative amount (${amount})`);
    const now = Date.now();
    if (owner !== undefined) {
      if (this.kind === 'postgres') {
        // One statement: the wallet row's update and the hold's upsert commit together, in one round trip.
        const result = await sql<{ reserved: number }>`
          with reserved as (
            update wallets set reserved = reserved + ${amount}, updated_at = ${now}
            where tenant_id = ${tenantId} and balance + credit_limit - reserved >= ${amount}
            returning tenant_id)
          insert into reservation_holds (owner_id, tenant_id, amount)
          select ${owner}, tenant_id, ${amount} from reserved
          on conflict (owner_id, tenant_id) do update set amount = reservation_holds.amount + excluded.amount
          returning 1 as reserved`.execute(this.db);
        return result.rows.length > 0;
      }
      return this.db.transaction().execute(async (db) => {
        if (!(await reserveOnWallet(db, tenantId, amount, now))) return false;
        await db
          .insertInto('reservation_holds')
          .values({ owner_id: owner, tenant_id: tenantId, amount })
          .onConflict((conflict) =>
            conflict
              .columns(['owner_id', 'tenant_id'])
              .doUpdateSet((eb) => ({ amount: eb('reservation_holds.amount', '+', eb.ref('excluded.amount')) })),
          )
          .execute();
        return true;
      });
    }
    return reserveOnWallet(this.db, tenantId, amount, now);
  }

  async release(tenantId: string, amount: Nano, owner?: string): Promise<void> {
    if (amount <= 0n) return;
    const now = Date.now();
    if (owner === undefined) {
      await releaseOnWallet(this.db, tenantId, amount, now);
      return;
    }
    await this.db
      .transaction()
      .execute((db) => releaseHeld(db, { tenantId, owner, amount }, now, this.kind === 'postgres'));
  }

  async heartbeatReservationOwner(owner: string, now: number): Promise<void> {
    await this.db
      .insertInto('reservation_owners')
      .values({ owner_id: owner, heartbeat_at: now })
      .onConflict((conflict) =>
        conflict.column('owner_id').doUpdateSet((eb) => ({ heartbeat_at: eb.ref('excluded.heartbeat_at') })),
      )
      .execute();
  }

  async renewReservationOwner(owner: string, now: number): Promise<boolean> {
    const result = await this.db
      .updateTable('reservation_owners')
      .set({ heartbeat_at: now })
      .where('owner_id', '=', owner)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  }

  async listReservationOwners(heartbeatSince?: number): Promise<string[]> {
    let select = this.db.selectFrom('reservation_owners').select('owner_id').orderBy('owner_id');
    if (heartbeatSince !== undefined) select = select.where('heartbeat_at', '>=', heartbeatSince);
    const rows = await select.execute();
    return rows.map((row) => row.owner_id);
  }

  async sweepReservationOwners(
    staleBefore: number,
    exited: readonly string[] = [],
  ): Promise<{ owners: number; released: Nano }> {
    return this.db.transaction().execute(async (db) => {
      // The dead owners' rows first. A renewal of one of them (`renewReservationOwner`) that comes after waits for this
      // transaction and then finds no row, so its process takes a new owner; one that came first made it alive, and
      // this statement, rechecking the row it waited for, leaves it: a renewed owner never loses its holds.
      const stale = (eb: ExpressionBuilder<DatabaseSchema, 'reservation_owners'>) =>
        exited.length === 0
          ? eb('heartbeat_at', '<', staleBefore)
          : eb.or([eb('heartbeat_at', '<', staleBefore), eb('owner_id', 'in', exited)]);
      if (this.kind === 'postgres') {
        // Locked in one order, so two sweeps deleting the same owners cannot each hold a row the other waits for.
        await db
          .selectFrom('reservation_owners')
          .select('owner_id')
          .where(stale)
          .orderBy('owner_id')
          .forUpdate()
          .execute();
      }
      const gone = await db.deleteFrom('reservation_owners').where(stale).returning('owner_id').execute();
      // Holds whose owner has no row: the owners just deleted, and any swept before while it still reserved (or never
      // registered).
      const dead = (eb: ExpressionBuilder<DatabaseSchema, 'reservation_holds'>) =>
        eb('owner_id', 'not in', eb.selectFrom('reservation_owners').select('owner_id'));
      let locked: string[] | undefined;
      if (this.kind === 'postgres') {
        // Their wallet rows first, in the order a reservation takes rows (wallet, then hold): an owner swept while
        // still alive may be reserving on them.
        const rows = await db
          .selectFrom('wallets')
          .select('tenant_id')
          .where('tenant_id', 'in', db.selectFrom('reservation_holds').select('tenant_id').where(dead))
          .orderBy('tenant_id')
          .forUpdate()
          .execute();
        locked = rows.map((row) => row.tenant_id);
      }
      // On PostgreSQL only the holds on the wallets locked above: a hold on another wallet, reserved since, would be
      // locked here before its wallet, the reverse of a release's order (deadlock); the next sweep takes it.
      const taken =
        locked?.length === 0
          ? []
          : await db
              .deleteFrom('reservation_holds')
              .where(dead)
              .$if(locked !== undefined, (query) => query.where('tenant_id', 'in', locked!))
              .returning(['owner_id', 'tenant_id', sql<string>`cast(${sql.ref('amount')} as text)`.as('amount')])
              .execute();
      const byTenant = new Map<string, Nano>();
      const owners = new Set<string>();
      let released = 0n;
      for (const row of taken) {
        const amount = BigInt(row.amount);
        owners.add(row.owner_id);
        released += amount;
        byTenant.set(row.tenant_id, (byTenant.get(row.tenant_id) ?? 0n) + amount);
      }
      const now = Date.now();
      // Sorted, so concurrent sweeps and settlements lock wallet rows in one order.
      for (const [tenantId, amount] of [...byTenant].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        if (amount > 0n) await releaseOnWallet(db, tenantId, amount, now);
      }
      for (const row of gone) owners.add(row.owner_id);
      return { owners: owners.size, released };
    });
  }

  async settle(batch: readonly Settlement[]): Promise<void> {
    if (batch.length === 0) return;
    const now = Date.now();
    await this.db.transaction().execute(async (db) => {
      // One row per request id, its rating in it.
      const rows = [...firstOfEachRequest(batch).values()].map((each) => requestLogRow(each.log, each.rating));
      const inserted = await this.insertLogsReturningIds(db, rows);
      await this.applySettlementEffects(db, settlementEffects(batch, inserted), now);
    });
  }

  async saveCheckpoints(checkpoints: readonly StreamCheckpoint[]): Promise<void> {
    if (checkpoints.length === 0) return;
    const rows: StreamCheckpointsTable[] = checkpoints.map((checkpoint) => ({
      request_id: checkpoint.requestId,
      event: checkpointEventToJson(checkpoint.event),
      reservation: checkpoint.reservation,
      updated_at: checkpoint.updatedAt,
      reservation_owner: checkpoint.reservationOwner ?? null,
    }));
    await this.db.transaction().execute(async (db) => {
      for (const chunk of chunks(rows, Math.floor(this.maxParameters / 5))) {
        await db
          .insertInto('stream_checkpoints')
          .values(chunk)
          .onConflict((conflict) =>
            conflict.column('request_id').doUpdateSet((eb) => ({
              event: eb.ref('excluded.event'),
              reservation: eb.ref('excluded.reservation'),
              updated_at: eb.ref('excluded.updated_at'),
              reservation_owner: eb.ref('excluded.reservation_owner'),
            })),
          )
          .execute();
      }
    });
  }

  async listCheckpoints(): Promise<StreamCheckpoint[]> {
    const rows = await this.db
      .selectFrom('stream_checkpoints')
      .select([
        'request_id',
        'event',
        'updated_at',
        'reservation_owner',
        sql<string>`cast(${sql.ref('reservation')} as text)`.as('reservation'),
      ])
      .orderBy('updated_at')
      .orderBy('request_id')
      .execute();
    return rows.map(checkpointFromRow);
  }

  async resetReservations(): Promise<void> {
    await this.db.transaction().execute(async (db) => {
      await db.updateTable('wallets').set({ reserved: 0n }).where('reserved', '<>', 0n).execute();
      await db.deleteFrom('reservation_holds').execute();
      await db.deleteFrom('reservation_owners').execute();
    });
  }

  async listUsageEvents(query: {
    tenantId?: string;
    start: number;
    end: number;
    limit?: number;
  }): Promise<UsageEventRecord[]> {
    let select = this.db
      .selectFrom('usage_events')
      .select(readColumns('usage_events', USAGE_EVENT_COLUMNS))
      .where('received_at', '>=', query.start)
      .where('received_at', '<', query.end);
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    const rows = await select
      .orderBy('received_at')
      .orderBy('request_id')
      .limit(query.limit ?? DEFAULT_USAGE_EVENT_LIMIT)
      .execute();
    return rows.map((row) => usageEventFromRow(row as MoneyAsText<UsageEventsTable>));
  }

  async sumUsageEvents(query: {
    tenantId?: string;
    start: number;
    end: number;
  }): Promise<{ amount: Nano; count: number }> {
    // PostgreSQL sums int8 into numeric (exact); SQLite raises "integer overflow" rather than rounding, and
    // `SqliteStore` sums in JavaScript instead.
    let select = this.db
      .selectFrom('usage_events')
      .select([
        sql<string>`cast(count(*) as text)`.as('count'),
        sql<string>`cast(coalesce(sum(${sql.ref('amount')}), 0) as text)`.as('amount'),
      ])
      .where('received_at', '>=', query.start)
      .where('received_at', '<', query.end);
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    const row = await select.executeTakeFirstOrThrow();
    return { amount: BigInt(row.amount), count: Number(row.count) };
  }

  async queryUsageRollups(query: UsageRollupQuery): Promise<UsageRollupRow[]> {
    if (query.bucket === '1d') return this.dailyUsageRollups(query);
    let select = this.db
      .selectFrom('usage_rollups')
      .select(readColumns('usage_rollups', USAGE_ROLLUP_COLUMNS))
      .where('bucket', '=', query.bucket)
      .where('bucket_start', '>=', query.start)
      .where('bucket_start', '<', query.end);
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    const rows = await select.orderBy('bucket_start').orderBy('tenant_id').orderBy('key_id').orderBy('model').execute();
    return rows.map((row) => usageRollupFromRow(row as MoneyAsText<UsageRollupsTable>));
  }

  /**
   * Day rows, read as the sum of each UTC day's hour rows (days are not stored: migration 0007). A day is in
   * `[start, end)` when its hours are in `[start, end)` rounded up to whole days.
   */
  private async dailyUsageRollups(query: UsageRollupQuery): Promise<UsageRollupRow[]> {
    const day = sql<number>`${sql.ref('bucket_start')} - ${sql.ref('bucket_start')} % ${sql.lit(DAY_MS)}`;
    let select = this.db
      .selectFrom('usage_rollups')
      .select([
        'tenant_id',
        sql<string>`'1d'`.as('bucket'),
        day.as('bucket_start'),
        'key_id',
        'model',
        ...sumColumns('usage_rollups', USAGE_ROLLUP_SUMS),
      ])
      .where('bucket', '=', '1h')
      .where('bucket_start', '>=', Math.ceil(query.start / DAY_MS) * DAY_MS)
      .where('bucket_start', '<', Math.ceil(query.end / DAY_MS) * DAY_MS);
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    const rows = await select
      .groupBy(['tenant_id', day, 'key_id', 'model'])
      .orderBy('bucket_start')
      .orderBy('tenant_id')
      .orderBy('key_id')
      .orderBy('model')
      .execute();
    return rows.map((row) => usageRollupFromRow(row as MoneyAsText<UsageRollupsTable>));
  }

  /** Rows of the UTC days that overlap `[start, end)`. */
  async queryBillingRollups(query: { tenantId?: string; start: number; end: number }): Promise<BillingRollupRow[]> {
    let select = this.db
      .selectFrom('billing_rollups')
      .select(readColumns('billing_rollups', [...BILLING_ROLLUP_KEY, ...BILLING_ROLLUP_SUMS]))
      .where('day', '>', query.start - DAY_MS)
      .where('day', '<', query.end);
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    let ordered = select;
    for (const column of ['day', ...BILLING_ROLLUP_KEY.filter((key) => key !== 'day')] as const) {
      ordered = ordered.orderBy(column);
    }
    const rows = await ordered.execute();
    return rows.map((row) => billingRollupFromRow(row as MoneyAsText<BillingRollupsTable>));
  }

  async insertPriceVersion(version: Omit<PriceVersionRecord, 'createdAt'>): Promise<PriceVersionRecord> {
    const record: PriceVersionRecord = { ...version, createdAt: Date.now() };
    await this.db
      .insertInto('price_versions')
      .values({
        id: record.id,
        effective_from: record.effectiveFrom,
        document: record.document,
        created_at: record.createdAt,
      })
      .execute();
    return record;
  }

  async listPriceVersions(): Promise<PriceVersionRecord[]> {
    const rows = await this.db
      .selectFrom('price_versions')
      .selectAll()
      .orderBy('effective_from')
      .orderBy('id')
      .execute();
    return rows.map((row) => ({
      id: row.id,
      effectiveFrom: row.effective_from,
      document: row.document,
      createdAt: row.created_at,
    }));
  }

  async putBudget(budget: BudgetRecord): Promise<void> {
    await this.db
      .insertInto('budgets')
      .values(budgetToRow(budget))
      .onConflict((conflict) =>
        conflict.columns(['scope', 'scope_id']).doUpdateSet((eb) => ({
          tenant_id: eb.ref('excluded.tenant_id'),
          monthly_limit: eb.ref('excluded.monthly_limit'),
          enforcement: eb.ref('excluded.enforcement'),
          thresholds: eb.ref('excluded.thresholds'),
          webhook_url: eb.ref('excluded.webhook_url'),
          updated_at: eb.ref('excluded.updated_at'),
        })),
      )
      .execute();
  }

  async deleteBudget(scope: BudgetRecord['scope'], scopeId: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('budgets')
      .where('scope', '=', scope)
      .where('scope_id', '=', scopeId)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async listBudgets(tenantId?: string): Promise<BudgetRecord[]> {
    let select = this.db.selectFrom('budgets').select(readColumns('budgets', BUDGET_COLUMNS));
    if (tenantId !== undefined) select = select.where('tenant_id', '=', tenantId);
    const rows = await select.orderBy('scope').orderBy('scope_id').execute();
    return rows.map((row) => budgetFromRow(row as MoneyAsText<BudgetsTable>));
  }

  async claimAlert(alert: {
    scope: 'tenant' | 'key';
    scopeId: string;
    period: string;
    threshold: number;
  }): Promise<boolean> {
    const result = await this.db
      .insertInto('alert_claims')
      .values({ scope: alert.scope, scope_id: alert.scopeId, period: alert.period, threshold: alert.threshold })
      .onConflict((conflict) => conflict.doNothing())
      .executeTakeFirst();
    return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
  }

  /** Inserts request-log rows, ignoring existing request ids; returns the ids this call inserted. */
  protected async insertLogsReturningIds(
    db: Kysely<DatabaseSchema>,
    rows: readonly RequestLogTable[],
  ): Promise<Set<string>> {
    const inserted = new Set<string>();
    for (const chunk of chunks(rows, this.rowsPerInsert)) {
      const returned = await db
        .insertInto('request_log')
        .values(chunk)
        .onConflict((conflict) => conflict.column('request_id').doNothing())
        .returning('request_id')
        .execute();
      for (const row of returned) inserted.add(row.request_id);
    }
    return inserted;
  }

  /** Applies a batch's aggregated effects inside its transaction. */
  protected async applySettlementEffects(
    db: Kysely<DatabaseSchema>,
    effects: SettlementEffects,
    now: number,
  ): Promise<void> {
    const charges = effects.charges.filter((charge) => charge.amount !== 0n);
    for (const chunk of chunks(charges, Math.floor(this.maxParameters / WALLET_COLUMNS.length))) {
      // A tenant charged without a wallet gets one (prepaid, below zero), so balance = Σ ledger always holds.
      await db
        .insertInto('wallets')
        .values(
          chunk.map((charge) => ({
            tenant_id: charge.tenantId,
            mode: 'prepaid',
            currency: charge.currency,
            balance: -charge.amount,
            credit_limit: 0n,
            reserved: 0n,
            updated_at: now,
          })),
        )
        .onConflict((conflict) =>
          conflict.column('tenant_id').doUpdateSet((eb) => ({
            balance: eb('wallets.balance', '+', eb.ref('excluded.balance')),
            updated_at: eb.ref('excluded.updated_at'),
          })),
        )
        .execute();
    }
    for (const chunk of chunks(effects.releases, Math.floor(this.maxParameters / 6))) {
      const released = sql<bigint>`case ${sql.ref('tenant_id')} ${sql.join(
        chunk.map((release) => sql`when ${release.tenantId} then cast(${release.amount} as bigint)`),
        sql` `,
      )} end`;
      await db
        .updateTable('wallets')
        .set({ reserved: releasedReservation(released), updated_at: now })
        .where(
          'tenant_id',
          'in',
          chunk.map((release) => release.tenantId),
        )
        .execute();
    }
    for (const held of effects.heldReleases) await releaseHeld(db, held, now, this.kind === 'postgres');
    for (const chunk of chunks(effects.usageRollups, Math.floor(this.maxParameters / USAGE_ROLLUP_COLUMNS.length))) {
      await db
        .insertInto('usage_rollups')
        .values(chunk)
        .onConflict((conflict) =>
          conflict.columns(['tenant_id', 'bucket', 'bucket_start', 'key_id', 'model']).doUpdateSet((eb) => {
            const set: Record<string, unknown> = {};
            for (const column of USAGE_ROLLUP_SUMS) {
              set[column] = eb(eb.ref(`usage_rollups.${column}`), '+', eb.ref(`excluded.${column}`));
            }
            return set as never;
          }),
        )
        .execute();
    }
    const billingWidth = BILLING_ROLLUP_KEY.length + BILLING_ROLLUP_SUMS.length;
    for (const chunk of chunks(effects.billingRollups, Math.floor(this.maxParameters / billingWidth))) {
      await db
        .insertInto('billing_rollups')
        .values(chunk)
        .onConflict((conflict) =>
          conflict.columns(BILLING_ROLLUP_KEY).doUpdateSet((eb) => {
            const set: Record<string, unknown> = {};
            for (const column of BILLING_ROLLUP_SUMS) {
              set[column] = eb(eb.ref(`billing_rollups.${column}`), '+', eb.ref(`excluded.${column}`));
            }
            return set as never;
          }),
        )
        .execute();
    }
    for (const chunk of chunks(effects.checkpointIds, this.maxParameters)) {
      await db.deleteFrom('stream_checkpoints').where('request_id', 'in', chunk).execute();
    }
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

/** The wallet of `tenantId`; with `forUpdate` (PostgreSQL only), its row stays locked until the transaction ends. */
async function walletOf(
  db: Kysely<DatabaseSchema>,
  tenantId: string,
  options: { forUpdate?: boolean } = {},
): Promise<WalletRecord | undefined> {
  const row = await db
    .selectFrom('wallets')
    .select(readColumns('wallets', WALLET_COLUMNS))
    .where('tenant_id', '=', tenantId)
    .$if(options.forUpdate === true, (select) => select.forUpdate())
    .executeTakeFirst();
  return row === undefined ? undefined : walletFromRow(row as MoneyAsText<WalletsTable>);
}

/** The conditional wallet update of `reserve`: the check and the increment in one atomic step on both databases. */
async function reserveOnWallet(db: Kysely<DatabaseSchema>, tenantId: string, amount: Nano, now: number) {
  // PostgreSQL re-evaluates the WHERE on the row's latest version after waiting for a concurrent update's lock.
  const result = await db
    .updateTable('wallets')
    .set((eb) => ({ reserved: eb('reserved', '+', amount), updated_at: now }))
    .where('tenant_id', '=', tenantId)
    .where((eb) => eb(eb(eb('balance', '+', eb.ref('credit_limit')), '-', eb.ref('reserved')), '>=', amount))
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

async function releaseOnWallet(db: Kysely<DatabaseSchema>, tenantId: string, amount: Nano, now: number) {
  await db
    .updateTable('wallets')
    .set({ reserved: releasedReservation(amount), updated_at: now })
    .where('tenant_id', '=', tenantId)
    .execute();
}

/**
 * Takes `amount` from `owner`'s hold and then from `reserved`, inside the caller's transaction; changes nothing
 * when the hold does not have it (the owner was swept, which released its holds already). `lockWallet` (PostgreSQL):
 * the wallet row is locked first, in the order a reservation takes the rows (wallet, then hold), so that the two
 * cannot deadlock.
 */
async function releaseHeld(
  db: Kysely<DatabaseSchema>,
  held: { tenantId: string; owner: string; amount: Nano },
  now: number,
  lockWallet: boolean,
): Promise<void> {
  if (lockWallet) {
    await db.selectFrom('wallets').select('tenant_id').where('tenant_id', '=', held.tenantId).forUpdate().execute();
  }
  const taken = await db
    .updateTable('reservation_holds')
    .set((eb) => ({ amount: eb('amount', '-', held.amount) }))
    .where('owner_id', '=', held.owner)
    .where('tenant_id', '=', held.tenantId)
    .where('amount', '>=', held.amount)
    .executeTakeFirst();
  if (taken.numUpdatedRows > 0n) await releaseOnWallet(db, held.tenantId, held.amount, now);
}

/** `reserved` minus `amount`, never below zero (a release after `resetReservations` must not go negative). */
function releasedReservation(amount: Nano | ReturnType<typeof sql<bigint>>) {
  const reserved = sql.ref('reserved');
  return sql<bigint>`case when ${reserved} > ${amount} then ${reserved} - ${amount} else 0 end`;
}

/** `items` in slices of at most `size` (at least 1). */
function chunks<T>(items: readonly T[], size: number): T[][] {
  const step = Math.max(1, size);
  const result: T[][] = [];
  for (let start = 0; start < items.length; start += step) result.push(items.slice(start, start + step));
  return result;
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
    // Absent rather than null when none is stored, so records written without one read back equal.
    ...(row.attempt_log === null ? {} : { attemptLog: row.attempt_log }),
  };
}
