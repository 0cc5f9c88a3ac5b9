import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  Kysely,
  SqliteAdapter,
  type SqliteDialectConfig,
  SqliteDriver,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import type { ApiKeysTable, DatabaseSchema } from './database-schema.js';
import { apiKeyFromRow, KyselyStore } from './kysely-store.js';
import {
  BILLING_ROLLUP_KEY,
  BILLING_ROLLUP_SUMS,
  checkpointEventToJson,
  PRICED_REQUEST_LOG_COLUMNS,
  pricedRequestLogParameters,
  REQUEST_LOG_INSERT_COLUMNS,
  requestLogParameters,
  USAGE_ROLLUP_KEY,
  USAGE_ROLLUP_SUMS,
} from './ledger-rows.js';
import type {
  BillingMode,
  Nano,
  NewWalletTransaction,
  Settlement,
  StreamCheckpoint,
  WalletRecord,
  WalletTransactionRecord,
} from './ledger-store.js';
import { settlementEffects } from './settlement-effects.js';
import { retryWhileBusy, YieldingBusyConnection } from './sqlite-busy-wait.js';
import { SqliteSettleThread } from './sqlite-settle-thread.js';
import type { ApiKeyRecord, RequestLogRecord } from './store.js';

/** SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` (since 3.32), as compiled into better-sqlite3. */
const SQLITE_MAX_PARAMETERS = 32_766;

/** WAL pages between automatic checkpoints (10,000 × 4 KiB pages ≈ 40 MiB; SQLite's default is 1,000). */
const WAL_AUTOCHECKPOINT_PAGES = 10_000;

/** Options of `openSqliteStore`. */
export interface SqliteStoreOptions {
  /** How long a statement waits for another connection's write lock before failing, ms. Default 5000. */
  busyTimeoutMs?: number;
  /**
   * How it waits: `yield` (default) retries on timers so the event loop goes on meanwhile (`sqlite-busy-wait.ts`);
   * `block` waits inside the call, in SQLite's busy handler — for a thread that serves nothing else (the settle
   * thread), where it wakes sooner and costs no timers.
   */
  busyWait?: 'yield' | 'block';
}

/**
 * Opens (creating the file and its directory if needed) a SQLite store: WAL, `synchronous=NORMAL` (a commit survives
 * a process crash such as `kill -9`; only an OS crash or power loss may lose the last commits), a busy timeout so
 * several connections (threads, processes, stores) can share the file, foreign keys on, and a 64 MiB page cache.
 * `path` may be `:memory:`.
 */
export function openSqliteStore(path: string, options: SqliteStoreOptions = {}): SqliteStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const busyTimeoutMs = Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000));
  const yielding = (options.busyWait ?? 'yield') === 'yield';
  const database = new Database(path);
  try {
    // Opening waits inside the call whatever `busyWait` says: another process may be turning a new file to WAL, and
    // nothing is served yet.
    database.pragma(`busy_timeout = ${busyTimeoutMs}`);
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = NORMAL');
    database.pragma('foreign_keys = ON');
    // 64 MiB of page cache (default 2 MiB): the ledger's indexes take random inserts, and a miss is a page read.
    database.pragma('cache_size = -65536');
    // Checkpoint every ~40 MiB of WAL instead of ~4 MiB: the ledger's hot pages (index leaves, rollup rows) are
    // rewritten by nearly every commit, so rarer checkpoints copy each of them to the database file (and fsync)
    // less often. Durability is unchanged: a commit is durable once in the WAL, checkpointed or not.
    database.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    // Yielding: from here on SQLite does not wait itself; a statement that finds the lock taken fails at once, having
    // done nothing, and is run again on a timer.
    if (yielding) database.pragma('busy_timeout = 0');
  } catch (error: unknown) {
    database.close();
    throw error;
  }
  return new SqliteStore(database, yielding ? busyTimeoutMs : undefined);
}

/**
 * The SQLite store: the shared Kysely layer plus prepared-statement fast lanes for the hot operations, because
 * Kysely compiles and re-prepares every query:
 * - `findKeyByHash` (every request): ~8 µs with a cached statement against ~38 µs through Kysely;
 * - `reserve` and `release` (every billed request): one cached conditional UPDATE;
 * - `settle` (every group commit): cached single-row statements with positional parameters built straight from the
 *   records, run per settlement inside one `BEGIN IMMEDIATE` transaction — each INSERT's `changes` says whether
 *   the request id was new, so only new events move balances and rollups — then one upsert per aggregated rollup
 *   group and wallet, and one DELETE per 256 checkpoint ids. Multi-row INSERTs with `RETURNING` were measured
 *   slower here (in-process SQLite has no round trips to save);
 * - `insertRequestLogs`: the same per-row statement.
 * These statements run under Kysely's connection lock, so none of them lands inside a Kysely transaction that is
 * open on the shared connection (better-sqlite3 would nest it, and a rollback there would undo it).
 *
 * Embedded mode (one gateway process owns the file) can hold wallet reservations in this process's memory instead of
 * the wallet row (`useProcessReservations`): `reserve` checks the funds and takes the reservation in one synchronous
 * step — atomic, since JavaScript runs one step at a time — with no write per request; `settle` releases a
 * settlement's reservation right after its transaction commits, so a balance is never counted without the charge that
 * reduced it. Reservations die with the process, so there is nothing to recover after a crash. The funds checked are
 * the ones this process knows (`knownFunds`), kept at or below the stored ones: charges lower them before they are
 * committed, this connection's wallet writes drop them, and other processes can only add money (`credits add`), which
 * a refusal sees because it reads the row before refusing. So the row is read once per tenant and on refusals, not per
 * request: with the settle thread committing on another connection, every read here would follow a page-cache reset.
 */
export class SqliteStore extends KyselyStore {
  private findKeyByHashStatement: Database.Statement<[string], ApiKeysTable> | undefined;
  private insertRequestLogsTransaction: ((rows: readonly RequestLogRecord[]) => void) | undefined;
  private settleTransaction: ((batch: readonly Settlement[]) => void) | undefined;
  private saveCheckpointsTransaction: ((checkpoints: readonly StreamCheckpoint[]) => void) | undefined;
  private reserveStatement: Database.Statement<[ReserveParameters], void> | undefined;
  private releaseStatement: Database.Statement<[ReserveParameters], void> | undefined;
  /** `reserve` and `release` with an owner: the wallet row and the owner's hold in one transaction. */
  private heldReservationStatements:
    | { reserve: (parameters: HeldParameters) => boolean; release: (parameters: HeldParameters) => void }
    | undefined;
  private fundsStatement: Database.Statement<[string], { balance: bigint; credit_limit: bigint }> | undefined;
  /** Reservations by tenant, when held in memory (see the class comment). */
  private processReservations: Map<string, Nano> | undefined;
  /**
   * Wallet funds by tenant as this process last knew them, never above the stored ones (process reservations only;
   * see `reserve`).
   */
  private readonly knownFunds = new Map<string, { balance: Nano; creditLimit: Nano }>();
  /**
   * Charges of settlements handed to `settle` and not yet answered, by tenant: a wallet row read meanwhile may not
   * hold them yet, so funds read from the row are taken net of them (see `reserve`).
   */
  private readonly pendingCharges = new Map<string, Nano>();
  private readonly database: Database.Database;
  /** Where settlement transactions run when not on this thread (see `settleOnThread`). */
  private settleThread: SqliteSettleThread | undefined;
  /**
   * With a yielding busy wait (`SqliteStoreOptions.busyWait`), how long a write retries a taken lock, ms; undefined
   * when the connection's own busy handler waits.
   */
  private readonly yieldingBusyTimeoutMs: number | undefined;

  /**
   * `yieldingBusyTimeoutMs`: set when the connection has no busy timeout of its own and its writes are to retry a
   * taken lock on timers, for that long (see `openSqliteStore`).
   */
  constructor(database: Database.Database, yieldingBusyTimeoutMs?: number) {
    super({
      kind: 'sqlite',
      db: new Kysely<DatabaseSchema>({ dialect: createSqliteDialect(database, yieldingBusyTimeoutMs) }),
      maxParametersPerStatement: SQLITE_MAX_PARAMETERS,
    });
    this.database = database;
    this.yieldingBusyTimeoutMs = yieldingBusyTimeoutMs;
  }

  /**
   * Runs one synchronous write (a statement or transaction) on this connection, waiting for the lock as configured;
   * its errors reject the promise.
   */
  private async write<T>(statement: () => T): Promise<T> {
    const timeoutMs = this.yieldingBusyTimeoutMs;
    return timeoutMs === undefined ? statement() : retryWhileBusy(statement, timeoutMs);
  }

  override async findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined> {
    // Prepared lazily: the table exists only after `migrate()`.
    const statement = this.findKeyByHashStatement ?? this.prepareFindKeyByHash();
    const row = statement.get(hash);
    return row === undefined ? undefined : apiKeyFromRow(row);
  }

  override async insertRequestLogs(records: readonly RequestLogRecord[]): Promise<void> {
    if (records.length === 0) return;
    const insert = this.insertRequestLogsTransaction ?? this.prepareInsertRequestLogs();
    // Taking Kysely's connection lock first guarantees no Kysely transaction (a migration) is open on the shared
    // connection; otherwise better-sqlite3 would nest ours into it as a savepoint.
    await this.db.connection().execute(() => this.write(() => insert(records)));
  }

  /**
   * Holds wallet reservations in this process's memory from now on. Only for a process that is the sole user of the
   * file (embedded mode with one worker): reservations of other processes would not be seen.
   */
  useProcessReservations(): void {
    this.processReservations ??= new Map();
  }

  override async reserve(tenantId: string, amount: Nano, owner?: string): Promise<boolean> {
    if (amount < 0n) throw new RangeError(`Cannot reserve a negative amount (${amount})`);
    const held = this.processReservations;
    if (held !== undefined) {
      this.fundsStatement ??= this.database
        .prepare<[string], { balance: bigint; credit_limit: bigint }>(
          'select balance, credit_limit from wallets where tenant_id = ?',
        )
        .safeIntegers(true);
      const reserved = held.get(tenantId) ?? 0n;
      // The known funds are a lower bound of the stored ones (see `knownFunds`): enough there is enough. Only a
      // refusal reads the row, to see top-ups written by other processes before refusing.
      let funds = this.knownFunds.get(tenantId);
      if (funds === undefined || funds.balance + funds.creditLimit - reserved < amount) {
        const row = this.fundsStatement.get(tenantId);
        if (row === undefined) return false;
        // Charges in flight may or may not be in the row yet: counting them as not yet in keeps a lower bound (a
        // charge that did land is counted twice until the next read, which only refuses early).
        funds = { balance: row.balance - (this.pendingCharges.get(tenantId) ?? 0n), creditLimit: row.credit_limit };
        this.knownFunds.set(tenantId, funds);
        if (funds.balance + funds.creditLimit - reserved < amount) return false;
      }
      held.set(tenantId, reserved + amount);
      return true;
    }
    if (owner !== undefined) {
      const held = this.heldReservationStatements ?? this.prepareHeldReservations();
      const parameters = { tenant_id: tenantId, owner_id: owner, amount, now: Date.now() };
      return this.db.connection().execute(() => this.write(() => held.reserve(parameters)));
    }
    this.reserveStatement ??= this.database.prepare<[ReserveParameters], void>(RESERVE_SQL);
    const statement = this.reserveStatement;
    const parameters = { tenant_id: tenantId, amount, now: Date.now() };
    return this.db.connection().execute(() => this.write(() => statement.run(parameters).changes > 0));
  }

  override async release(tenantId: string, amount: Nano, owner?: string): Promise<void> {
    if (amount <= 0n) return;
    if (this.processReservations !== undefined) {
      this.releaseHeld(tenantId, amount);
      return;
    }
    if (owner !== undefined) {
      const held = this.heldReservationStatements ?? this.prepareHeldReservations();
      const parameters = { tenant_id: tenantId, owner_id: owner, amount, now: Date.now() };
      await this.db.connection().execute(() => this.write(() => held.release(parameters)));
      return;
    }
    this.releaseStatement ??= this.database.prepare<[ReserveParameters], void>(RELEASE_SQL);
    const statement = this.releaseStatement;
    const parameters = { tenant_id: tenantId, amount, now: Date.now() };
    await this.db.connection().execute(() => this.write(() => statement.run(parameters)));
  }

  /**
   * Runs settlement transactions on a worker thread with its own connection from now on (`SqliteSettleThread`),
   * so the request-serving thread does not spend its time in SQLite. Returns false (and changes nothing) for an
   * in-memory database, which a second connection cannot share, or when the worker script is not built.
   */
  settleOnThread(): boolean {
    if (this.settleThread !== undefined) return true;
    if (this.database.memory) return false;
    this.settleThread = SqliteSettleThread.start(this.database.name);
    if (this.settleThread === undefined) return false;
    // Checkpoints belong to the checkpoint thread (see `SqliteSettleThread`): one run by this thread would stall the
    // event loop while it copies the WAL into the database file.
    this.database.pragma('wal_autocheckpoint = 0');
    return true;
  }

  override async settle(batch: readonly Settlement[], encoded?: readonly string[]): Promise<void> {
    if (batch.length === 0) return;
    // Charges lower the known funds before they are committed, so the known funds never exceed the stored ones: a
    // duplicate event (not charged again) or a failed commit only leaves them lower until the next refusal re-reads.
    for (const settlement of batch) {
      if (settlement.rating === undefined) continue;
      const { tenantId } = settlement.log;
      const { amount } = settlement.rating;
      const known = this.knownFunds.get(tenantId);
      if (known !== undefined) known.balance -= amount;
      this.pendingCharges.set(tenantId, (this.pendingCharges.get(tenantId) ?? 0n) + amount);
    }
    try {
      if (this.settleThread?.alive === true) await this.settleThread.settle(batch, encoded);
      else {
        if (this.settleThread !== undefined) {
          // The thread died: this connection settles (and checkpoints) again.
          this.settleThread = undefined;
          this.database.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
        }
        await this.db.connection().execute(() => this.write(() => this.settleNow(batch)));
      }
    } finally {
      // Committed (now in the row) or failed (never will be): no longer in flight either way.
      for (const settlement of batch) {
        if (settlement.rating === undefined) continue;
        const { tenantId } = settlement.log;
        const left = (this.pendingCharges.get(tenantId) ?? 0n) - settlement.rating.amount;
        if (left === 0n) this.pendingCharges.delete(tenantId);
        else this.pendingCharges.set(tenantId, left);
      }
    }
    if (this.processReservations !== undefined) {
      for (const settlement of batch) {
        if (settlement.reservation !== undefined) {
          this.releaseHeld(settlement.reservation.tenantId, settlement.reservation.amount);
        }
      }
    }
  }

  /** Copies committed WAL frames into the database file without blocking writers (`wal_checkpoint(PASSIVE)`). */
  checkpoint(): void {
    this.database.pragma('wal_checkpoint(PASSIVE)');
  }

  /** Commits `batch` on this thread's connection, synchronously (the settle thread's entry point). */
  settleNow(batch: readonly Settlement[]): void {
    if (batch.length === 0) return;
    (this.settleTransaction ?? this.prepareSettle())(batch);
  }

  /**
   * With a settle thread, checkpoints are saved there, after the settlements sent before them. On this thread a
   * save would wait for the settle thread's transaction to end, retrying on timers, several times a second per
   * stream.
   */
  override async saveCheckpoints(checkpoints: readonly StreamCheckpoint[]): Promise<void> {
    if (checkpoints.length === 0) return;
    if (this.settleThread?.alive === true) await this.settleThread.saveCheckpoints(checkpoints);
    else await this.db.connection().execute(() => this.write(() => this.saveCheckpointsNow(checkpoints)));
  }

  /**
   * Saves checkpoints on this thread's connection, synchronously (the settle thread's entry point, and this
   * connection's when there is no settle thread).
   */
  saveCheckpointsNow(checkpoints: readonly StreamCheckpoint[]): void {
    if (checkpoints.length === 0) return;
    if (this.saveCheckpointsTransaction === undefined) {
      const statement = this.database.prepare<[string, string, bigint, number, string | null], void>(
        'insert into stream_checkpoints (request_id, event, reservation, updated_at, reservation_owner)' +
          ' values (?, ?, ?, ?, ?) on conflict (request_id) do update set event = excluded.event,' +
          ' reservation = excluded.reservation, updated_at = excluded.updated_at,' +
          ' reservation_owner = excluded.reservation_owner',
      );
      const transaction = this.database.transaction((rows: readonly StreamCheckpoint[]) => {
        for (const row of rows) {
          statement.run(
            row.requestId,
            checkpointEventToJson(row.event),
            row.reservation,
            row.updatedAt,
            row.reservationOwner ?? null,
          );
        }
      });
      this.saveCheckpointsTransaction = (rows) => transaction.immediate(rows);
    }
    this.saveCheckpointsTransaction(checkpoints);
  }

  override async close(): Promise<void> {
    await this.settleThread?.close();
    await super.close();
  }

  override async configureWallet(
    tenantId: string,
    settings: { mode: BillingMode; currency: string; creditLimit: Nano },
  ): Promise<WalletRecord> {
    try {
      return await super.configureWallet(tenantId, settings);
    } finally {
      this.knownFunds.delete(tenantId);
    }
  }

  override async addWalletTransaction(
    transaction: NewWalletTransaction,
  ): Promise<{ record: WalletTransactionRecord; created: boolean }> {
    try {
      return await super.addWalletTransaction(transaction);
    } finally {
      this.knownFunds.delete(transaction.tenantId);
    }
  }

  override async getWallet(tenantId: string): Promise<WalletRecord | undefined> {
    const wallet = await super.getWallet(tenantId);
    if (wallet === undefined || this.processReservations === undefined) return wallet;
    return { ...wallet, reserved: this.processReservations.get(tenantId) ?? 0n };
  }

  override async resetReservations(): Promise<void> {
    this.processReservations?.clear();
    await super.resetReservations();
  }

  private releaseHeld(tenantId: string, amount: Nano): void {
    const held = this.processReservations!;
    const left = (held.get(tenantId) ?? 0n) - amount;
    if (left > 0n) held.set(tenantId, left);
    else held.delete(tenantId);
  }

  override async sumUsageEvents(query: {
    tenantId?: string;
    start: number;
    end: number;
  }): Promise<{ amount: Nano; count: number }> {
    // SQLite's SUM raises on 64-bit overflow: add exact bigints here instead (safeIntegers reads them losslessly).
    const statement = this.database
      .prepare<unknown[], bigint>(
        'select amount from usage_events where received_at >= ? and received_at < ?' +
          (query.tenantId === undefined ? '' : ' and tenant_id = ?'),
      )
      .pluck()
      .safeIntegers(true);
    const parameters: unknown[] = [query.start, query.end];
    if (query.tenantId !== undefined) parameters.push(query.tenantId);
    return this.db.connection().execute(async () => {
      let amount = 0n;
      let count = 0;
      for (const value of statement.iterate(...parameters)) {
        amount += value;
        count++;
      }
      return { amount, count };
    });
  }

  private prepareHeldReservations(): NonNullable<SqliteStore['heldReservationStatements']> {
    const reserve = this.database.prepare<[ReserveParameters], void>(RESERVE_SQL);
    const hold = this.database.prepare<[HeldParameters], void>(HOLD_SQL);
    const releaseHeld = heldReleaseOf(this.database);
    const reserveHeld = this.database.transaction((parameters: HeldParameters) => {
      if (reserve.run(parameters).changes === 0) return false;
      hold.run(parameters);
      return true;
    });
    const releaseTransaction = this.database.transaction(releaseHeld);
    this.heldReservationStatements = {
      reserve: (parameters) => reserveHeld.immediate(parameters),
      release: (parameters) => releaseTransaction.immediate(parameters),
    };
    return this.heldReservationStatements;
  }

  private prepareSettle(): (batch: readonly Settlement[]) => void {
    const database = this.database;
    // Positional parameters built straight from the records: binding by name costs a property lookup per column,
    // and an intermediate row object plus `Object.values` per settlement cost as much again.
    const insertLog = database.prepare<unknown[], void>(
      `insert into request_log (${REQUEST_LOG_INSERT_COLUMNS.join(', ')})` +
        ` values (${placeholders(REQUEST_LOG_INSERT_COLUMNS.length)}) on conflict (request_id) do nothing`,
    );
    // A priced request's row also holds its usage event. Its own statement: binding the 15 rating columns as nulls
    // for every unpriced row cost ~1.5 µs each.
    const insertPriced = database.prepare<unknown[], void>(
      `insert into request_log (${PRICED_REQUEST_LOG_COLUMNS.join(', ')})` +
        ` values (${placeholders(PRICED_REQUEST_LOG_COLUMNS.length)}) on conflict (request_id) do nothing`,
    );
    const charge = database.prepare<unknown[], void>(
      'insert into wallets (tenant_id, mode, currency, balance, credit_limit, reserved, updated_at)' +
        " values (?, 'prepaid', ?, ?, 0, 0, ?)" +
        ' on conflict (tenant_id) do update set balance = balance + excluded.balance, updated_at = excluded.updated_at',
    );
    const release = database.prepare(RELEASE_SQL);
    const releaseHeld = heldReleaseOf(database);
    const usageRollup = database.prepare<unknown[], void>(
      upsertSumsSql('usage_rollups', USAGE_ROLLUP_KEY, USAGE_ROLLUP_SUMS),
    );
    const billingRollup = database.prepare<unknown[], void>(
      upsertSumsSql('billing_rollups', BILLING_ROLLUP_KEY, BILLING_ROLLUP_SUMS),
    );
    // One statement per CHECKPOINT_DELETE_CHUNK ids: a per-id DELETE costs a statement run per settlement even
    // when, as usual, the stream had no checkpoint.
    const deleteCheckpoints = database.prepare<unknown[], void>(
      `delete from stream_checkpoints where request_id in (${placeholders(CHECKPOINT_DELETE_CHUNK)})`,
    );

    const transaction = database.transaction((batch: readonly Settlement[]) => {
      const now = Date.now();
      const inserted = new Set<string>();
      for (const settlement of batch) {
        // One row per request id, its rating in it: the first settlement of an id is the one stored.
        const row =
          settlement.rating === undefined
            ? insertLog.run(requestLogParameters(settlement.log))
            : insertPriced.run(pricedRequestLogParameters(settlement.log, settlement.rating));
        if (row.changes > 0) inserted.add(settlement.log.requestId);
      }
      const effects = settlementEffects(batch, inserted);
      for (const { tenantId, currency, amount } of effects.charges) {
        if (amount !== 0n) charge.run(tenantId, currency, -amount, now);
      }
      for (const { tenantId, amount } of effects.releases) release.run({ tenant_id: tenantId, amount, now });
      for (const { tenantId, owner, amount } of effects.heldReleases) {
        releaseHeld({ tenant_id: tenantId, owner_id: owner, amount, now });
      }
      for (const row of effects.usageRollups) {
        usageRollup.run(
          row.tenant_id,
          row.bucket,
          row.bucket_start,
          row.key_id,
          row.model,
          row.requests,
          row.input_tokens,
          row.cached_tokens,
          row.output_tokens,
          row.amount,
          row.cost,
        );
      }
      for (const row of effects.billingRollups) {
        billingRollup.run(
          row.tenant_id,
          row.day,
          row.model,
          row.currency,
          row.price_version,
          row.tier,
          row.output_condition,
          row.batch,
          row.requests,
          row.input_tokens,
          row.cached_tokens,
          row.output_tokens,
          row.input_list_amount,
          row.cached_list_amount,
          row.output_list_amount,
          row.batch_discount,
          row.off_peak_discount,
          row.contract_discount,
          row.volume_discount,
          row.amount,
          row.cost,
        );
      }
      const ids = effects.checkpointIds;
      for (let start = 0; start < ids.length; start += CHECKPOINT_DELETE_CHUNK) {
        const chunk = ids.slice(start, start + CHECKPOINT_DELETE_CHUNK);
        // Pad with a repeated id: `in (a, b, b)` deletes the same rows as `in (a, b)`.
        while (chunk.length < CHECKPOINT_DELETE_CHUNK) chunk.push(chunk[0]!);
        deleteCheckpoints.run(chunk);
      }
    });
    this.settleTransaction = (batch) => transaction.immediate(batch);
    return this.settleTransaction;
  }

  private prepareInsertRequestLogs(): (rows: readonly RequestLogRecord[]) => void {
    const statement = this.database.prepare<unknown[], void>(
      `insert into request_log (${REQUEST_LOG_INSERT_COLUMNS.join(', ')})` +
        ` values (${placeholders(REQUEST_LOG_INSERT_COLUMNS.length)}) on conflict (request_id) do nothing`,
    );
    const transaction = this.database.transaction((records: readonly RequestLogRecord[]) => {
      for (const record of records) statement.run(requestLogParameters(record));
    });
    this.insertRequestLogsTransaction = (records) => transaction.immediate(records);
    return this.insertRequestLogsTransaction;
  }

  private prepareFindKeyByHash(): Database.Statement<[string], ApiKeysTable> {
    const statement = this.database.prepare<[string], ApiKeysTable>('select * from api_keys where hash = ?');
    this.findKeyByHashStatement = statement;
    return statement;
  }
}

/** Parameters of the reserve and release statements. */
interface ReserveParameters {
  tenant_id: string;
  amount: Nano;
  now: number;
}

/** Parameters of the reserve and release statements with an owner. */
interface HeldParameters extends ReserveParameters {
  owner_id: string;
}

/** The conditional reservation: the check and the increment in one statement. */
const RESERVE_SQL =
  'update wallets set reserved = reserved + @amount, updated_at = @now' +
  ' where tenant_id = @tenant_id and balance + credit_limit - reserved >= @amount';

/** Adds a reservation to its owner's hold (after `RESERVE_SQL` took it, in the same transaction). */
const HOLD_SQL =
  'insert into reservation_holds (owner_id, tenant_id, amount) values (@owner_id, @tenant_id, @amount)' +
  ' on conflict (owner_id, tenant_id) do update set amount = amount + excluded.amount';

/**
 * A release from an owner's hold, to run inside a transaction: takes `amount` from the hold, then from `reserved`;
 * changes nothing when the hold does not have it (the owner was swept, which released its holds already).
 */
function heldReleaseOf(database: Database.Database): (parameters: HeldParameters) => void {
  const take = database.prepare<[HeldParameters], void>(
    'update reservation_holds set amount = amount - @amount' +
      ' where owner_id = @owner_id and tenant_id = @tenant_id and amount >= @amount',
  );
  const release = database.prepare<[ReserveParameters], void>(RELEASE_SQL);
  return (parameters) => {
    if (take.run(parameters).changes > 0) {
      release.run({ tenant_id: parameters.tenant_id, amount: parameters.amount, now: parameters.now });
    }
  };
}

/** `reserved − amount`, never below zero (a release after `resetReservations` must not go negative). */
const RELEASE_SQL =
  'update wallets set reserved = case when reserved > @amount then reserved - @amount else 0 end,' +
  ' updated_at = @now where tenant_id = @tenant_id';

/** Ids per checkpoint DELETE (the last chunk is padded by repeating an id). */
const CHECKPOINT_DELETE_CHUNK = 256;

/** `insert … values (?, …) on conflict (key) do update set sum = sum + excluded.sum, …`, key columns first. */
function upsertSumsSql(table: string, key: readonly string[], sums: readonly string[]): string {
  return (
    `insert into ${table} (${[...key, ...sums].join(', ')}) values (${placeholders(key.length + sums.length)})` +
    ` on conflict (${key.join(', ')}) do update set ` +
    sums.map((column) => `${column} = ${column} + excluded.${column}`).join(', ')
  );
}

function placeholders(count: number): string {
  return Array.from({ length: count }, () => '?').join(', ');
}

/**
 * Kysely's SQLite dialect with two changes:
 * - transactions start with `BEGIN IMMEDIATE`, so a writer takes the write lock up front and waits (busy timeout)
 *   instead of failing with `SQLITE_BUSY_SNAPSHOT` when a deferred read transaction tries to upgrade;
 * - the adapter declares transactional DDL (SQLite has it), so the migrator runs every pending migration inside
 *   one such immediate transaction: two processes migrating at once serialise on the write lock, and the second
 *   sees the first's result.
 */
function createSqliteDialect(database: Database.Database, yieldingBusyTimeoutMs: number | undefined): Dialect {
  return {
    createAdapter: () => new TransactionalSqliteAdapter(),
    createDriver: () => new ImmediateTransactionSqliteDriver({ database }, yieldingBusyTimeoutMs),
    createIntrospector: (db) => new SqliteIntrospector(db),
    createQueryCompiler: () => new SqliteQueryCompiler(),
  };
}

class TransactionalSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class ImmediateTransactionSqliteDriver extends SqliteDriver {
  private yielding: YieldingBusyConnection | undefined;

  constructor(
    config: SqliteDialectConfig,
    private readonly yieldingBusyTimeoutMs: number | undefined,
  ) {
    super(config);
  }

  /** The one connection; with a yielding busy wait, its statements retry a taken lock on timers. */
  override async acquireConnection(): Promise<DatabaseConnection> {
    const connection = await super.acquireConnection();
    if (this.yieldingBusyTimeoutMs === undefined) return connection;
    this.yielding ??= new YieldingBusyConnection(connection, this.yieldingBusyTimeoutMs);
    return this.yielding;
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}
