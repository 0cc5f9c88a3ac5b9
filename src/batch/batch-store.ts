/**
 * The batch store port: uploaded files' metadata, batches, and one row per batch input line with its execution
 * state. Implemented once over Kysely for SQLite and PostgreSQL (`KyselyBatchStore`) and checked by one conformance
 * suite. Times are epoch milliseconds.
 */

/** Why a file was uploaded (the subset of OpenAI's purposes Tollgate keeps). */
export const filePurposes = ['batch', 'batch_output'] as const;

/** One file purpose. */
export type FilePurpose = (typeof filePurposes)[number];

/** An uploaded (or generated) file. Its bytes live on disk, see `FileStorage`. */
export interface FileRecord {
  /** `file-…` */
  id: string;
  tenantId: string;
  purpose: FilePurpose;
  filename: string;
  /** Size, bytes. */
  bytes: number;
  createdAt: number;
  /** When the file may be deleted, or null for never. */
  expiresAt: number | null;
}

/** A batch's lifecycle, as OpenAI names it. */
export const batchStatuses = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
] as const;

/** One batch status. */
export type BatchStatus = (typeof batchStatuses)[number];

/** Statuses after which a batch never changes again. */
export const finalBatchStatuses: readonly BatchStatus[] = ['failed', 'completed', 'expired', 'cancelled'];

/** One error of a batch that failed as a whole (OpenAI's `BatchError`). */
export interface BatchFailure {
  code: string;
  message: string;
  param: string | null;
  /** 1-based line of the input file, when the error is about one. */
  line: number | null;
}

/** A batch. */
export interface BatchRecord {
  /** `batch_…` */
  id: string;
  tenantId: string;
  /** The key that created it: lines run as this key (its limits, its model permissions). */
  keyId: string;
  /** `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or `/v1/responses`. */
  endpoint: string;
  /** The model of the first valid line, once validated. */
  model: string | null;
  inputFileId: string;
  /** e.g. `24h`. */
  completionWindow: string;
  status: BatchStatus;
  outputFileId: string | null;
  errorFileId: string | null;
  /** Set when the batch failed as a whole (the file could not be used). */
  errors: BatchFailure[] | null;
  metadata: Record<string, string> | null;
  createdAt: number;
  /** `createdAt` + the completion window. */
  expiresAt: number;
  /** How long the output and error files live after they are written, seconds; null for ever. */
  outputExpiresAfterSeconds: number | null;
  inProgressAt: number | null;
  finalizingAt: number | null;
  completedAt: number | null;
  failedAt: number | null;
  expiredAt: number | null;
  cancellingAt: number | null;
  cancelledAt: number | null;
}

/** Timestamp and result fields a status change may set. */
export type BatchChanges = Partial<
  Pick<
    BatchRecord,
    | 'status'
    | 'model'
    | 'outputFileId'
    | 'errorFileId'
    | 'errors'
    | 'inProgressAt'
    | 'finalizingAt'
    | 'completedAt'
    | 'failedAt'
    | 'expiredAt'
    | 'cancellingAt'
    | 'cancelledAt'
  >
>;

/**
 * Where one input line stands: `pending` (waiting to run), `running` (handed to the gateway), `succeeded` (2xx),
 * `failed` (invalid line, or the gateway answered with an error), `expired` / `cancelled` (never ran).
 */
export const batchLineStates = ['pending', 'running', 'succeeded', 'failed', 'expired', 'cancelled'] as const;

/** One line state. */
export type BatchLineState = (typeof batchLineStates)[number];

/** An error of one line, as the error file shows it. */
export interface BatchLineError {
  code: string;
  message: string;
}

/** Tokens one line used. */
export interface BatchLineUsage {
  inputTokens: number;
  cachedTokens: number;
  outputTokens: number;
  reasoningTokens: number;
}

/** A line as validation writes it. */
export interface NewBatchLine {
  batchId: string;
  /** 0-based position in the input file. */
  lineIndex: number;
  customId: string | null;
  url: string | null;
  /** The request body as JSON text; null for an invalid line. */
  body: string | null;
  /** Prompt + max output tokens expected, for planning. */
  estimatedTokens: number;
  /** `pending` for a valid line, `failed` for an invalid one. */
  state: 'pending' | 'failed';
  /**
   * Deterministic: `<batchId>_<lineIndex>`, so a re-run after a crash is billed once. The request log holds it for
   * the attempt that ends the line; attempts that were retried are logged as `<requestId>_attempt<n>`.
   */
  requestId: string;
  /** Why an invalid line was refused. */
  error: BatchLineError | null;
}

/** A stored line. */
export interface BatchLineRecord extends Omit<NewBatchLine, 'state'>, BatchLineUsage {
  state: BatchLineState;
  /** Times the line was handed to the gateway. */
  attempts: number;
  /** HTTP status of the gateway's answer, once it ran. */
  statusCode: number | null;
  /** The gateway's answer body (JSON text): the completion, or an OpenAI error body. */
  response: string | null;
  startedAt: number | null;
  finishedAt: number | null;
}

/** How a line ended. */
export interface BatchLineOutcome extends BatchLineUsage {
  state: 'succeeded' | 'failed';
  statusCode: number;
  /** Response body, JSON text. */
  response: string;
  error: BatchLineError | null;
  finishedAt: number;
}

/** Lines of a batch per state, and the tokens used so far. */
export interface BatchLineCounts {
  total: number;
  byState: Record<BatchLineState, number>;
  /** Σ estimated tokens of lines still pending or running. */
  remainingEstimatedTokens: number;
  /** Σ input + output tokens of executed lines. */
  usedTokens: number;
  usage: BatchLineUsage;
}

/** A page query over a tenant's files. */
export interface FileListQuery {
  tenantId: string;
  purpose?: FilePurpose;
  /** Newest first (`desc`, default) or oldest first. */
  order?: 'asc' | 'desc';
  /** Cursor: the id of the last file of the previous page. One that names no file of the tenant gives no rows. */
  after?: string;
  limit: number;
  /** Leaves out files expired at this time (epoch ms); omitted, lists expired files too. */
  liveAt?: number;
}

/** A page query over batches, newest first. */
export interface BatchListQuery {
  /** Omit for every tenant (admin). */
  tenantId?: string;
  /** Cursor: the id of the last batch of the previous page. One that names no batch of the list gives no rows. */
  after?: string;
  limit: number;
}

/** Durable state of the Files and Batches API. */
export interface BatchStore {
  insertFile(file: FileRecord): Promise<void>;
  getFile(id: string): Promise<FileRecord | undefined>;
  /** A page of files (`limit` rows at most). */
  listFiles(query: FileListQuery): Promise<FileRecord[]>;
  /** Up to `limit` files whose expiry is at or before `now`, soonest expired first. */
  listExpiredFiles(now: number, limit: number): Promise<FileRecord[]>;
  /** Removes the record; false when there was none. */
  deleteFile(id: string): Promise<boolean>;

  insertBatch(batch: BatchRecord): Promise<void>;
  getBatch(id: string): Promise<BatchRecord | undefined>;
  /** A page of batches, newest first. */
  listBatches(query: BatchListQuery): Promise<BatchRecord[]>;
  /** Batches in any of `statuses`, oldest first. */
  listBatchesByStatus(statuses: readonly BatchStatus[]): Promise<BatchRecord[]>;
  /**
   * Applies `changes` only if the batch's status is one of `from` (a compare-and-set, so two processes never both
   * move a batch on). Returns whether it did.
   */
  transitionBatch(id: string, from: readonly BatchStatus[], changes: BatchChanges): Promise<boolean>;

  /** Inserts lines (a line already stored under its batch and index is left as it is). */
  insertLines(lines: readonly NewBatchLine[]): Promise<void>;
  /** Removes every line of a batch (validation starting over after a crash). */
  deleteLines(batchId: string): Promise<void>;
  /**
   * Moves up to `limit` pending lines (lowest index first) to `running`, counting an attempt; returns the lines this
   * call claimed (never a line another caller claimed).
   */
  claimLines(batchId: string, limit: number, at: number): Promise<BatchLineRecord[]>;
  /** Records how a running line ended. False when the line was not running. */
  finishLine(batchId: string, lineIndex: number, outcome: BatchLineOutcome): Promise<boolean>;
  /** Puts a running line back to `pending` (it will be retried). False when it was not running. */
  requeueLine(batchId: string, lineIndex: number): Promise<boolean>;
  /** Puts running lines started before `startedBefore` back to `pending` (their process died). Returns the count. */
  resetRunningLines(batchId: string, startedBefore: number): Promise<number>;
  /** Moves every pending line to `state` (a batch expired or was cancelled). Returns the count. */
  closePendingLines(batchId: string, state: 'expired' | 'cancelled', at: number): Promise<number>;
  /**
   * Fails every pending line with `error`, without running it (the batch's key was revoked or expired). Returns the
   * count.
   */
  failPendingLines(batchId: string, error: BatchLineError, at: number): Promise<number>;
  lineCounts(batchId: string): Promise<BatchLineCounts>;
  /** Lines of a batch in input order, from `fromIndex` on, `limit` at most. */
  listLines(batchId: string, fromIndex: number, limit: number): Promise<BatchLineRecord[]>;
  /** Whether the request log already holds `requestId` (a line that ran, at least partly, before). */
  requestLogged(requestId: string): Promise<boolean>;
}
