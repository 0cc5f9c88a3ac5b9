/**
 * PostgreSQL's settlement path (`PostgresStore.settle`): one pooled connection, one transaction, two round trips.
 *
 * 1. `begin`, the connection's staging table (temporary, `on commit delete rows`, created if missing), and the
 *    batch's `request_log` rows — each with its usage event in its rating columns — streamed into it with
 *    `COPY … FROM STDIN`. One row per request id (the first of duplicates inside the batch). COPY is the cheapest way
 *    into the server: its text rows parse faster than typed arrays (`unnest`) or JSON, and a temporary table writes
 *    no WAL;
 * 2. one simple-protocol query holding the rest: the insert into `request_log` from the staging table, the batch's
 *    effects (`settlementEffects`: wallet charges, reservation releases, usage and billing rollups, checkpoint
 *    deletions, their rows inlined as array literals), and `commit`.
 *
 * Each round trip costs a wake-up of both processes, which on a loaded machine is a millisecond or more, so the
 * batch travels in two; and this process builds the effects while the server takes the rows.
 *
 * That path assumes every request id is new, which is what nearly every batch is: its insert is plain (no
 * `on conflict`: cheaper for the server) and its effects count every id. A request id that exists already (a
 * retried batch, a recovered checkpoint, a concurrent writer of the same id) fails it with a unique violation, which
 * aborts the whole transaction, nothing counted. The batch is then staged again and inserted with
 * `on conflict (request_id) do nothing returning request_id`, and its effects are those of the ids really inserted.
 * Either way rows are append-only, each id counts once, and rollups and balances move in the rows' transaction.
 */
import { finished } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { BillingRollupsTable, UsageRollupsTable } from './database-schema.js';
import {
  BILLING_ROLLUP_KEY,
  PRICED_REQUEST_LOG_COLUMNS,
  pricedRequestLogParameters,
  USAGE_ROLLUP_KEY,
} from './ledger-rows.js';
import type { Settlement } from './ledger-store.js';
import { firstOfEachRequest, type SettlementEffects, settlementEffects } from './settlement-effects.js';

const STAGE = 'tollgate_settle_request_log';
const COLUMNS = PRICED_REQUEST_LOG_COLUMNS.join(', ');

/**
 * Opens the transaction, makes sure this connection has its staging table and starts the COPY. `if not exists`
 * keeps this right whatever the connection did before (a fresh one, one whose creating transaction rolled back); the
 * notice it raises when it exists is silenced for this transaction only. Inlined literals below rely on
 * standard-conforming strings (a backslash is an ordinary character), set here too.
 */
const BEGIN_AND_COPY_SQL = [
  'begin',
  'set local client_min_messages = warning',
  'set local standard_conforming_strings = on',
  `create temporary table if not exists ${STAGE} (like request_log) on commit delete rows`,
  `copy ${STAGE} (${COLUMNS}) from stdin`,
].join(';\n');

const INSERT_SQL = `insert into request_log (${COLUMNS}) select ${COLUMNS} from ${STAGE}`;
const SKIP_EXISTING = ' on conflict (request_id) do nothing returning request_id';

/** SQLSTATE of a unique violation. */
const UNIQUE_VIOLATION = '23505';

/** The batch, its request ids, and the rows of their first settlements encoded. */
interface StagedBatch {
  batch: readonly Settlement[];
  ids: ReadonlySet<string>;
  rows: string;
  now: number;
}

/**
 * Longest a settlement's transaction may run, ms. Past it the call fails and its connection is discarded: a server
 * that stopped answering (a network partition) would otherwise hold the settlement writer until TCP gives up, which
 * takes minutes to hours. Failing is safe: the writer spools or retries the batch, and settling is idempotent by
 * request id, so a transaction that commits after all is not counted twice.
 */
export const SETTLE_TIMEOUT_MS = 30_000;

/** Commits `batch` (see the module comment). The connection is discarded, not reused, after any failure. */
export async function settleOnPostgres(
  pool: pg.Pool,
  batch: readonly Settlement[],
  timeoutMs: number = SETTLE_TIMEOUT_MS,
): Promise<void> {
  if (batch.length === 0) return;
  const first = firstOfEachRequest(batch);
  const staged: StagedBatch = {
    batch,
    ids: new Set(first.keys()),
    rows: copyText(first.values(), (settlement) => pricedRequestLogParameters(settlement.log, settlement.rating)),
    now: Date.now(),
  };
  const client = await pool.connect();
  let failure: Error | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const settled = (async () => {
      if (!(await settleAssumingNewIds(client, staged))) await settleSkippingExistingIds(client, staged);
    })();
    const timedOut = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`PostgreSQL did not settle a batch of ${batch.length} in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    // After a timeout the abandoned transaction fails when its connection is discarded below: nothing to report.
    settled.catch(() => undefined);
    await Promise.race([settled, timedOut]);
  } catch (error: unknown) {
    failure = error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    clearTimeout(timer);
    // A failed COPY or statement leaves the connection mid-transaction: destroy it rather than reuse it (the
    // server rolls the transaction back when the connection closes).
    client.release(failure);
  }
}

/**
 * The usual case, in two round trips: the effects are built while the server takes the rows. False (rolled back,
 * nothing changed) when a request id already exists.
 */
async function settleAssumingNewIds(client: pg.PoolClient, staged: StagedBatch): Promise<boolean> {
  try {
    const staging = copyIn(client, BEGIN_AND_COPY_SQL, staged.rows);
    const statements = [INSERT_SQL];
    try {
      const effects = settlementEffects(staged.batch, new Set(staged.ids));
      statements.push(...effectStatements(effects, staged.now));
      statements.push('commit');
    } finally {
      await staging;
    }
    await client.query(statements.join(';\n'));
    return true;
  } catch (error: unknown) {
    if (!isUniqueViolation(error)) throw error;
    await client.query('rollback');
    return false;
  }
}

/** Inserts only the request ids not stored yet, and applies the effects of those alone. */
async function settleSkippingExistingIds(client: pg.PoolClient, staged: StagedBatch): Promise<void> {
  await copyIn(client, BEGIN_AND_COPY_SQL, staged.rows);
  const inserted = await client.query<{ request_id: string }>(INSERT_SQL + SKIP_EXISTING);
  const effects = settlementEffects(staged.batch, idSet(inserted.rows));
  await client.query([...effectStatements(effects, staged.now), 'commit'].join(';\n'));
}

function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === UNIQUE_VIOLATION;
}

function idSet(rows: readonly { request_id: string }[]): Set<string> {
  const ids = new Set<string>();
  for (const row of rows) ids.add(row.request_id);
  return ids;
}

/** Runs `statement` (ending in `copy … from stdin`) and streams `rows` (COPY text format) into it. */
async function copyIn(client: pg.PoolClient, statement: string, rows: string): Promise<void> {
  const stream = client.query(copyFrom(statement));
  stream.end(rows);
  await finished(stream);
}

/**
 * Records as COPY text rows: fields separated by tabs, `\N` for null, and backslash, tab, newline and carriage
 * return escaped inside text. Numbers and bigints are written as their decimal digits (exact for int8; a float8
 * column reads JavaScript's shortest round-trip form back to the same double).
 *
 * Each row is joined from its fields and the text from its rows, so the result is flat strings. Appending every field
 * to one string (`text +=`) builds a rope of two nodes per field (about 70 per row), all alive until the text is
 * sent, so they outlive the young generation; collecting them took ~40% of the writer's CPU at batches of 10,000.
 */
export function copyText<T>(records: Iterable<T>, fields: (record: T) => readonly unknown[]): string {
  const rows: string[] = [];
  for (const record of records) {
    const values = fields(record);
    const encoded: string[] = new Array(values.length);
    for (let index = 0; index < values.length; index++) encoded[index] = copyField(values[index]);
    rows.push(encoded.join('\t'));
  }
  rows.push('');
  return rows.join('\n');
}

function copyField(value: unknown): string {
  if (value === null || value === undefined) return '\\N';
  if (typeof value === 'string')
    return COPY_SPECIALS.test(value) ? value.replace(COPY_SPECIALS_ALL, escapeCopy) : value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new TypeError(`Cannot write a ${typeof value} in a COPY row`);
}

const COPY_SPECIALS = /[\\\t\n\r]/;
const COPY_SPECIALS_ALL = /[\\\t\n\r]/g;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

function escapeCopy(character: string): string {
  return COPY_ESCAPES[character] ?? character;
}

/**
 * The statements applying `effects`, with their rows inlined: one array literal per column
 * (`unnest('{…}'::text[], …)`), quoted as SQL string literals. The lists are sorted by primary key
 * (`settlementEffects`), so concurrent settlements lock wallet and rollup rows in one order.
 */
function effectStatements(effects: SettlementEffects, now: number): string[] {
  const statements: string[] = [];
  const updatedAt = `${Math.trunc(now)}::int8`;
  const charges: { tenant_id: string; currency: string; amount: bigint }[] = [];
  for (const charge of effects.charges) {
    if (charge.amount !== 0n)
      charges.push({ tenant_id: charge.tenantId, currency: charge.currency, amount: charge.amount });
  }
  if (charges.length > 0) {
    // A tenant charged without a wallet gets one (prepaid, below zero), so balance = Σ ledger always holds.
    statements.push(
      'insert into wallets (tenant_id, mode, currency, balance, credit_limit, reserved, updated_at)' +
        ` select x.tenant_id, 'prepaid', x.currency, -x.amount, 0, 0, ${updatedAt} from ${unnestFrom(charges, CHARGE_COLUMNS)}` +
        ' on conflict (tenant_id) do update' +
        ' set balance = wallets.balance + excluded.balance, updated_at = excluded.updated_at',
    );
  }
  if (effects.releases.length > 0) {
    const releases = effects.releases.map((release) => ({ tenant_id: release.tenantId, amount: release.amount }));
    statements.push(
      'update wallets as w' +
        ' set reserved = case when w.reserved > x.amount then w.reserved - x.amount else 0 end,' +
        ` updated_at = ${updatedAt} from ${unnestFrom(releases, RELEASE_COLUMNS)} where w.tenant_id = x.tenant_id`,
    );
  }
  if (effects.heldReleases.length > 0) {
    const held = effects.heldReleases.map((release) => ({
      tenant_id: release.tenantId,
      owner_id: release.owner,
      amount: release.amount,
    }));
    // The wallet rows first, as a reservation takes them (wallet, then hold): a hold first here could deadlock with
    // a reservation of the same owner and tenant.
    const tenants = stringLiteral(arrayLiteral([...new Set(held.map((release) => release.tenant_id))], (id) => id));
    statements.push(`select 1 from wallets where tenant_id = any(${tenants}::text[]) order by tenant_id for update`);
    // From each owner's hold, then from `reserved` only what a hold still had (a swept owner's was released).
    statements.push(
      `with taken as (update reservation_holds as h set amount = h.amount - x.amount from ${unnestFrom(held, HELD_RELEASE_COLUMNS)}` +
        ' where h.owner_id = x.owner_id and h.tenant_id = x.tenant_id and h.amount >= x.amount' +
        ' returning h.tenant_id, x.amount)' +
        ' update wallets as w set reserved = case when w.reserved > t.amount then w.reserved - t.amount else 0 end,' +
        ` updated_at = ${updatedAt} from (select tenant_id, sum(amount) as amount from taken group by tenant_id) as t` +
        ' where w.tenant_id = t.tenant_id',
    );
  }
  if (effects.usageRollups.length > 0) {
    statements.push(upsertSums('usage_rollups', USAGE_ROLLUP_COLUMNS, USAGE_ROLLUP_KEY.length, effects.usageRollups));
  }
  if (effects.billingRollups.length > 0) {
    statements.push(
      upsertSums('billing_rollups', BILLING_ROLLUP_COLUMNS, BILLING_ROLLUP_KEY.length, effects.billingRollups),
    );
  }
  if (effects.checkpointIds.length > 0) {
    const ids = stringLiteral(arrayLiteral(effects.checkpointIds, (id) => id));
    statements.push(`delete from stream_checkpoints where request_id = any(${ids}::text[])`);
  }
  return statements;
}

/** Column → PostgreSQL type, in insert order. */
type ColumnTypes<Row> = readonly (readonly [keyof Row & string, string])[];

const CHARGE_COLUMNS: ColumnTypes<{ tenant_id: string; currency: string; amount: bigint }> = [
  ['tenant_id', 'text'],
  ['currency', 'text'],
  ['amount', 'int8'],
];
const RELEASE_COLUMNS: ColumnTypes<{ tenant_id: string; amount: bigint }> = [
  ['tenant_id', 'text'],
  ['amount', 'int8'],
];
const HELD_RELEASE_COLUMNS: ColumnTypes<{ tenant_id: string; owner_id: string; amount: bigint }> = [
  ['tenant_id', 'text'],
  ['owner_id', 'text'],
  ['amount', 'int8'],
];

/** Primary-key columns first, then the sums. */
const USAGE_ROLLUP_COLUMNS: ColumnTypes<UsageRollupsTable> = [
  ['tenant_id', 'text'],
  ['bucket', 'text'],
  ['bucket_start', 'int8'],
  ['key_id', 'text'],
  ['model', 'text'],
  ['requests', 'int8'],
  ['input_tokens', 'int8'],
  ['cached_tokens', 'int8'],
  ['output_tokens', 'int8'],
  ['amount', 'int8'],
  ['cost', 'int8'],
];

/** Primary-key columns first, then the sums. */
const BILLING_ROLLUP_COLUMNS: ColumnTypes<BillingRollupsTable> = [
  ['tenant_id', 'text'],
  ['day', 'int8'],
  ['model', 'text'],
  ['currency', 'text'],
  ['price_version', 'text'],
  ['tier', 'text'],
  ['output_condition', 'text'],
  ['batch', 'int4'],
  ['requests', 'int8'],
  ['input_tokens', 'int8'],
  ['cached_tokens', 'int8'],
  ['output_tokens', 'int8'],
  ['input_list_amount', 'int8'],
  ['cached_list_amount', 'int8'],
  ['output_list_amount', 'int8'],
  ['batch_discount', 'int8'],
  ['off_peak_discount', 'int8'],
  ['contract_discount', 'int8'],
  ['volume_discount', 'int8'],
  ['amount', 'int8'],
  ['cost', 'int8'],
];

/**
 * Upserts rollup increments: the first `keyLength` columns are the primary key, the others are added.
 * `on conflict do update` finds each row through the primary key, whatever the table's size, and is safe against a
 * concurrent transaction inserting the same new key. (`merge` did ~8% less work per row here, but with ~1,800
 * source rows the planner hashes the whole rollup table — a scan that grows with it — and forcing nested loops
 * made the benchmark's ingest three times slower.)
 */
function upsertSums<Row>(
  table: 'usage_rollups' | 'billing_rollups',
  columns: ColumnTypes<Row>,
  keyLength: number,
  rows: readonly Row[],
): string {
  const names = columns.map(([column]) => column);
  const sums = names
    .slice(keyLength)
    .map((column) => `${column} = ${table}.${column} + excluded.${column}`)
    .join(', ');
  return (
    `insert into ${table} (${names.join(', ')}) select ${names.join(', ')} from ${unnestFrom(rows, columns)}` +
    ` on conflict (${names.slice(0, keyLength).join(', ')}) do update set ${sums}`
  );
}

/**
 * `unnest('{…}'::type[], …) as x(column, …)` over `rows`: one array literal per column. `bigint` values are written
 * as decimal digits and read by the int8 input function: exact.
 */
function unnestFrom<Row>(rows: readonly Row[], columns: ColumnTypes<Row>): string {
  const arrays = columns.map(
    ([column, type]) => `${stringLiteral(arrayLiteral(rows, (row) => row[column]))}::${type}[]`,
  );
  return `unnest(${arrays.join(', ')}) as x(${columns.map(([column]) => column).join(', ')})`;
}

/** `text` as an SQL string literal (standard-conforming strings: only the quote is doubled). */
function stringLiteral(text: string): string {
  if (text.includes('\0')) throw new RangeError('A NUL character cannot be stored in PostgreSQL text');
  return `'${text.replaceAll("'", "''")}'`;
}

/** `value` of every row as an array literal: `{"text",12,NULL}`. */
function arrayLiteral<Row>(rows: readonly Row[], value: (row: Row) => unknown): string {
  let literal = '{';
  for (let index = 0; index < rows.length; index++) {
    if (index > 0) literal += ',';
    const element = value(rows[index]!);
    if (element === null || element === undefined) literal += 'NULL';
    else if (typeof element === 'string') {
      // Most labels need no escape: test before paying for a replace.
      literal += `"${ARRAY_ELEMENT_SPECIAL.test(element) ? element.replace(ARRAY_ELEMENT_SPECIALS, '\\$&') : element}"`;
    } else if (typeof element === 'number' || typeof element === 'bigint') literal += String(element);
    else throw new TypeError(`Cannot write a ${typeof element} in an array literal`);
  }
  return `${literal}}`;
}

/** Characters escaped inside a double-quoted array element. */
const ARRAY_ELEMENT_SPECIAL = /["\\]/;
const ARRAY_ELEMENT_SPECIALS = /["\\]/g;
