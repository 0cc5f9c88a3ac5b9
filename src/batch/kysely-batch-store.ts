import { type Kysely, type Selectable, sql } from 'kysely';
import type { DatabaseSchema } from '../store/database-schema.js';
import type {
  BatchChanges,
  BatchFailure,
  BatchLineCounts,
  BatchLineError,
  BatchLineOutcome,
  BatchLineRecord,
  BatchLineState,
  BatchListQuery,
  BatchRecord,
  BatchStatus,
  BatchStore,
  FileListQuery,
  FilePurpose,
  FileRecord,
  NewBatchLine,
} from './batch-store.js';
import { batchLineStates } from './batch-store.js';

/** `files` (migration 0003). */
export interface FilesTable {
  id: string;
  tenant_id: string;
  purpose: string;
  filename: string;
  bytes: number;
  created_at: number;
  expires_at: number | null;
}

/** `batches` (migration 0003). */
export interface BatchesTable {
  id: string;
  tenant_id: string;
  key_id: string;
  endpoint: string;
  model: string | null;
  input_file_id: string;
  completion_window: string;
  status: string;
  output_file_id: string | null;
  error_file_id: string | null;
  errors: string | null;
  metadata: string | null;
  created_at: number;
  expires_at: number;
  /** Seconds (migration 0010). */
  output_expires_after: number | null;
  in_progress_at: number | null;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
}

/** `batch_lines` (migration 0003). */
export interface BatchLinesTable {
  batch_id: string;
  line_index: number;
  custom_id: string | null;
  url: string | null;
  body: string | null;
  estimated_tokens: number;
  state: string;
  attempts: number;
  request_id: string;
  status_code: number | null;
  response: string | null;
  error: string | null;
  input_tokens: number;
  cached_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  started_at: number | null;
  finished_at: number | null;
}

/** The tables of the batch store, next to the gateway's own (a type alias: Kysely needs an index signature). */
export type BatchTables = {
  files: FilesTable;
  batches: BatchesTable;
  batch_lines: BatchLinesTable;
};

type Database = DatabaseSchema & BatchTables;

/** Lines per INSERT: 14 columns each, well under SQLite's and PostgreSQL's parameter limits. */
const LINES_PER_INSERT = 500;

/** `BatchStore` over the gateway store's Kysely instance (SQLite or PostgreSQL). */
export class KyselyBatchStore implements BatchStore {
  private readonly db: Kysely<Database>;

  constructor(db: Kysely<DatabaseSchema>) {
    this.db = db.withTables<BatchTables>();
  }

  async insertFile(file: FileRecord): Promise<void> {
    await this.db
      .insertInto('files')
      .values({
        id: file.id,
        tenant_id: file.tenantId,
        purpose: file.purpose,
        filename: file.filename,
        bytes: file.bytes,
        created_at: file.createdAt,
        expires_at: file.expiresAt,
      })
      .execute();
  }

  async getFile(id: string): Promise<FileRecord | undefined> {
    const row = await this.db.selectFrom('files').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : fileFromRow(row);
  }

  async listFiles(query: FileListQuery): Promise<FileRecord[]> {
    const order = query.order ?? 'desc';
    let select = this.db.selectFrom('files').selectAll().where('tenant_id', '=', query.tenantId);
    const liveAt = query.liveAt;
    if (liveAt !== undefined) {
      select = select.where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', liveAt)]));
    }
    if (query.purpose !== undefined) select = select.where('purpose', '=', query.purpose);
    if (query.after !== undefined) {
      const cursor = await this.getFile(query.after);
      if (cursor === undefined || cursor.tenantId !== query.tenantId) return [];
      const comparison = order === 'desc' ? '<' : '>';
      select = select.where((eb) =>
        eb.or([
          eb('created_at', comparison, cursor.createdAt),
          eb.and([eb('created_at', '=', cursor.createdAt), eb('id', comparison, cursor.id)]),
        ]),
      );
    }
    const rows = await select.orderBy('created_at', order).orderBy('id', order).limit(query.limit).execute();
    return rows.map(fileFromRow);
  }

  async listExpiredFiles(now: number, limit: number): Promise<FileRecord[]> {
    const rows = await this.db
      .selectFrom('files')
      .selectAll()
      .where('expires_at', '<=', now)
      .orderBy('expires_at')
      .limit(limit)
      .execute();
    return rows.map(fileFromRow);
  }

  async deleteFile(id: string): Promise<boolean> {
    const result = await this.db.deleteFrom('files').where('id', '=', id).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async insertBatch(batch: BatchRecord): Promise<void> {
    await this.db.insertInto('batches').values(batchToRow(batch)).execute();
  }

  async getBatch(id: string): Promise<BatchRecord | undefined> {
    const row = await this.db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirst();
    return row === undefined ? undefined : batchFromRow(row);
  }

  async listBatches(query: BatchListQuery): Promise<BatchRecord[]> {
    let select = this.db.selectFrom('batches').selectAll();
    if (query.tenantId !== undefined) select = select.where('tenant_id', '=', query.tenantId);
    if (query.after !== undefined) {
      const cursor = await this.getBatch(query.after);
      if (cursor === undefined || (query.tenantId !== undefined && cursor.tenantId !== query.tenantId)) return [];
      select = select.where((eb) =>
        eb.or([
          eb('created_at', '<', cursor.createdAt),
          eb.and([eb('created_at', '=', cursor.createdAt), eb('id', '<', cursor.id)]),
        ]),
      );
    }
    const rows = await select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit).execute();
    return rows.map(batchFromRow);
  }

  async listBatchesByStatus(statuses: readonly BatchStatus[]): Promise<BatchRecord[]> {
    if (statuses.length === 0) return [];
    const rows = await this.db
      .selectFrom('batches')
      .selectAll()
      .where('status', 'in', [...statuses])
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    return rows.map(batchFromRow);
  }

  async transitionBatch(id: string, from: readonly BatchStatus[], changes: BatchChanges): Promise<boolean> {
    const row = changesToRow(changes);
    if (Object.keys(row).length === 0 || from.length === 0) return false;
    const result = await this.db
      .updateTable('batches')
      .set(row)
      .where('id', '=', id)
      .where('status', 'in', [...from])
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async insertLines(lines: readonly NewBatchLine[]): Promise<void> {
    for (let start = 0; start < lines.length; start += LINES_PER_INSERT) {
      const rows = lines.slice(start, start + LINES_PER_INSERT).map(lineToRow);
      await this.db
        .insertInto('batch_lines')
        .values(rows)
        .onConflict((conflict) => conflict.columns(['batch_id', 'line_index']).doNothing())
        .execute();
    }
  }

  async deleteLines(batchId: string): Promise<void> {
    await this.db.deleteFrom('batch_lines').where('batch_id', '=', batchId).execute();
  }

  async claimLines(batchId: string, limit: number, at: number): Promise<BatchLineRecord[]> {
    if (limit <= 0) return [];
    const candidates = await this.db
      .selectFrom('batch_lines')
      .select('line_index')
      .where('batch_id', '=', batchId)
      .where('state', '=', 'pending')
      .orderBy('line_index')
      .limit(limit)
      .execute();
    if (candidates.length === 0) return [];
    // The state condition makes the claim a compare-and-set: a line another process claimed meanwhile is skipped.
    const rows = await this.db
      .updateTable('batch_lines')
      .set((eb) => ({ state: 'running', attempts: eb('attempts', '+', 1), started_at: at }))
      .where('batch_id', '=', batchId)
      .where(
        'line_index',
        'in',
        candidates.map((candidate) => Number(candidate.line_index)),
      )
      .where('state', '=', 'pending')
      .returningAll()
      .execute();
    return rows.map(lineFromRow).sort((a, b) => a.lineIndex - b.lineIndex);
  }

  async finishLine(batchId: string, lineIndex: number, outcome: BatchLineOutcome): Promise<boolean> {
    const result = await this.db
      .updateTable('batch_lines')
      .set({
        state: outcome.state,
        status_code: outcome.statusCode,
        response: outcome.response,
        error: outcome.error === null ? null : JSON.stringify(outcome.error),
        input_tokens: outcome.inputTokens,
        cached_tokens: outcome.cachedTokens,
        output_tokens: outcome.outputTokens,
        reasoning_tokens: outcome.reasoningTokens,
        finished_at: outcome.finishedAt,
      })
      .where('batch_id', '=', batchId)
      .where('line_index', '=', lineIndex)
      .where('state', '=', 'running')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async requeueLine(batchId: string, lineIndex: number): Promise<boolean> {
    const result = await this.db
      .updateTable('batch_lines')
      .set({ state: 'pending', started_at: null })
      .where('batch_id', '=', batchId)
      .where('line_index', '=', lineIndex)
      .where('state', '=', 'running')
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async resetRunningLines(batchId: string, startedBefore: number): Promise<number> {
    const result = await this.db
      .updateTable('batch_lines')
      .set({ state: 'pending', started_at: null })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'running')
      .where((eb) => eb.or([eb('started_at', 'is', null), eb('started_at', '<', startedBefore)]))
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  async closePendingLines(batchId: string, state: 'expired' | 'cancelled', at: number): Promise<number> {
    const result = await this.db
      .updateTable('batch_lines')
      .set({ state, finished_at: at })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  async failPendingLines(batchId: string, error: BatchLineError, at: number): Promise<number> {
    const result = await this.db
      .updateTable('batch_lines')
      .set({ state: 'failed', error: JSON.stringify(error), finished_at: at })
      .where('batch_id', '=', batchId)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  async lineCounts(batchId: string): Promise<BatchLineCounts> {
    const rows = await this.db
      .selectFrom('batch_lines')
      .select((eb) => [
        'state',
        eb.fn.countAll().as('lines'),
        eb.fn.sum<number>('estimated_tokens').as('estimated'),
        eb.fn.sum<number>('input_tokens').as('input'),
        eb.fn.sum<number>('cached_tokens').as('cached'),
        eb.fn.sum<number>('output_tokens').as('output'),
        eb.fn.sum<number>('reasoning_tokens').as('reasoning'),
      ])
      .where('batch_id', '=', batchId)
      .groupBy('state')
      .execute();
    const byState = Object.fromEntries(batchLineStates.map((state) => [state, 0])) as Record<BatchLineState, number>;
    const counts: BatchLineCounts = {
      total: 0,
      byState,
      remainingEstimatedTokens: 0,
      usedTokens: 0,
      usage: { inputTokens: 0, cachedTokens: 0, outputTokens: 0, reasoningTokens: 0 },
    };
    for (const row of rows) {
      const lines = Number(row.lines);
      const state = row.state as BatchLineState;
      byState[state] += lines;
      counts.total += lines;
      if (state === 'pending' || state === 'running') counts.remainingEstimatedTokens += Number(row.estimated ?? 0);
      counts.usage.inputTokens += Number(row.input ?? 0);
      counts.usage.cachedTokens += Number(row.cached ?? 0);
      counts.usage.outputTokens += Number(row.output ?? 0);
      counts.usage.reasoningTokens += Number(row.reasoning ?? 0);
    }
    counts.usedTokens = counts.usage.inputTokens + counts.usage.outputTokens;
    return counts;
  }

  async listLines(batchId: string, fromIndex: number, limit: number): Promise<BatchLineRecord[]> {
    const rows = await this.db
      .selectFrom('batch_lines')
      .selectAll()
      .where('batch_id', '=', batchId)
      .where('line_index', '>=', fromIndex)
      .orderBy('line_index')
      .limit(limit)
      .execute();
    return rows.map(lineFromRow);
  }

  async requestLogged(requestId: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('request_log')
      .select(sql<number>`1`.as('found'))
      .where('request_id', '=', requestId)
      .executeTakeFirst();
    return row !== undefined;
  }
}

function nullableNumber(value: number | string | bigint | null): number | null {
  return value === null ? null : Number(value);
}

function fileFromRow(row: Selectable<FilesTable>): FileRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    purpose: row.purpose as FilePurpose,
    filename: row.filename,
    bytes: Number(row.bytes),
    createdAt: Number(row.created_at),
    expiresAt: nullableNumber(row.expires_at),
  };
}

function batchToRow(batch: BatchRecord): BatchesTable {
  return {
    id: batch.id,
    tenant_id: batch.tenantId,
    key_id: batch.keyId,
    endpoint: batch.endpoint,
    model: batch.model,
    input_file_id: batch.inputFileId,
    completion_window: batch.completionWindow,
    status: batch.status,
    output_file_id: batch.outputFileId,
    error_file_id: batch.errorFileId,
    errors: batch.errors === null ? null : JSON.stringify(batch.errors),
    metadata: batch.metadata === null ? null : JSON.stringify(batch.metadata),
    created_at: batch.createdAt,
    expires_at: batch.expiresAt,
    output_expires_after: batch.outputExpiresAfterSeconds,
    in_progress_at: batch.inProgressAt,
    finalizing_at: batch.finalizingAt,
    completed_at: batch.completedAt,
    failed_at: batch.failedAt,
    expired_at: batch.expiredAt,
    cancelling_at: batch.cancellingAt,
    cancelled_at: batch.cancelledAt,
  };
}

function changesToRow(changes: BatchChanges): Partial<BatchesTable> {
  const row: Partial<BatchesTable> = {};
  if (changes.status !== undefined) row.status = changes.status;
  if (changes.model !== undefined) row.model = changes.model;
  if (changes.outputFileId !== undefined) row.output_file_id = changes.outputFileId;
  if (changes.errorFileId !== undefined) row.error_file_id = changes.errorFileId;
  if (changes.errors !== undefined) row.errors = changes.errors === null ? null : JSON.stringify(changes.errors);
  if (changes.inProgressAt !== undefined) row.in_progress_at = changes.inProgressAt;
  if (changes.finalizingAt !== undefined) row.finalizing_at = changes.finalizingAt;
  if (changes.completedAt !== undefined) row.completed_at = changes.completedAt;
  if (changes.failedAt !== undefined) row.failed_at = changes.failedAt;
  if (changes.expiredAt !== undefined) row.expired_at = changes.expiredAt;
  if (changes.cancellingAt !== undefined) row.cancelling_at = changes.cancellingAt;
  if (changes.cancelledAt !== undefined) row.cancelled_at = changes.cancelledAt;
  return row;
}

function batchFromRow(row: Selectable<BatchesTable>): BatchRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    keyId: row.key_id,
    endpoint: row.endpoint,
    model: row.model,
    inputFileId: row.input_file_id,
    completionWindow: row.completion_window,
    status: row.status as BatchStatus,
    outputFileId: row.output_file_id,
    errorFileId: row.error_file_id,
    errors: row.errors === null ? null : (JSON.parse(row.errors) as BatchFailure[]),
    metadata: row.metadata === null ? null : (JSON.parse(row.metadata) as Record<string, string>),
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    outputExpiresAfterSeconds: nullableNumber(row.output_expires_after),
    inProgressAt: nullableNumber(row.in_progress_at),
    finalizingAt: nullableNumber(row.finalizing_at),
    completedAt: nullableNumber(row.completed_at),
    failedAt: nullableNumber(row.failed_at),
    expiredAt: nullableNumber(row.expired_at),
    cancellingAt: nullableNumber(row.cancelling_at),
    cancelledAt: nullableNumber(row.cancelled_at),
  };
}

function lineToRow(line: NewBatchLine): BatchLinesTable {
  return {
    batch_id: line.batchId,
    line_index: line.lineIndex,
    custom_id: line.customId,
    url: line.url,
    body: line.body,
    estimated_tokens: line.estimatedTokens,
    state: line.state,
    attempts: 0,
    request_id: line.requestId,
    status_code: null,
    response: null,
    error: line.error === null ? null : JSON.stringify(line.error),
    input_tokens: 0,
    cached_tokens: 0,
    output_tokens: 0,
    reasoning_tokens: 0,
    started_at: null,
    finished_at: line.state === 'failed' ? Date.now() : null,
  };
}

function lineFromRow(row: Selectable<BatchLinesTable>): BatchLineRecord {
  return {
    batchId: row.batch_id,
    lineIndex: Number(row.line_index),
    customId: row.custom_id,
    url: row.url,
    body: row.body,
    estimatedTokens: Number(row.estimated_tokens),
    state: row.state as BatchLineState,
    attempts: Number(row.attempts),
    requestId: row.request_id,
    statusCode: nullableNumber(row.status_code),
    response: row.response,
    error: row.error === null ? null : (JSON.parse(row.error) as BatchLineError),
    inputTokens: Number(row.input_tokens),
    cachedTokens: Number(row.cached_tokens),
    outputTokens: Number(row.output_tokens),
    reasoningTokens: Number(row.reasoning_tokens),
    startedAt: nullableNumber(row.started_at),
    finishedAt: nullableNumber(row.finished_at),
  };
}
