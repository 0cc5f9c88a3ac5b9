/**
 * The Files and Batches API behind the HTTP routes: ownership (a tenant sees only its own files and batches; any
 * other id is a 404), upload limits, batch creation and cancellation, and the OpenAI object views.
 */
import { GatewayError, InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import { type OpenAIListPage, openAIListPage, pageOf } from '../store/list-page.js';
import { randomId } from '../store/random-id.js';
import type { Principal } from '../tenancy/key-service.js';
import { isBatchEndpoint } from './batch-input.js';
import type {
  BatchLineCounts,
  BatchRecord,
  BatchStore,
  FileListQuery,
  FilePurpose,
  FileRecord,
} from './batch-store.js';
import { filePurposes } from './batch-store.js';
import type { FileStorage } from './file-storage.js';

/** Options of `BatchService`. */
export interface BatchServiceOptions {
  /** Completion windows clients may ask for, e.g. `['24h']`. */
  completionWindows: readonly string[];
  /** Largest upload, bytes. */
  maxFileBytes: number;
  /** Called when a batch was created or cancelled, so the runner looks at once. */
  onChange?: () => void;
}

/** What `POST /v1/batches` carries (validated by the route's schema). */
export interface CreateBatchInput {
  input_file_id: string;
  endpoint: string;
  completion_window: string;
  metadata?: Record<string, string> | null;
  /** When the output and error files expire, after they are written. */
  output_expires_after?: FileExpiry;
}

/** OpenAI's file expiration policy: `seconds` (3600 to 2592000) after the file's creation. */
export interface FileExpiry {
  anchor: 'created_at';
  seconds: number;
}

/** The range OpenAI allows for a file's `expires_after.seconds`: one hour to 30 days. */
export const FILE_EXPIRY_SECONDS = { minimum: 3600, maximum: 2_592_000 } as const;

/** The expiry of a batch input uploaded without one: 30 days, as on OpenAI. */
const DEFAULT_BATCH_INPUT_EXPIRY: FileExpiry = { anchor: 'created_at', seconds: FILE_EXPIRY_SECONDS.maximum };

/** OpenAI's `OpenAIFile`. */
export interface OpenAIFileObject {
  id: string;
  object: 'file';
  bytes: number;
  created_at: number;
  expires_at?: number;
  filename: string;
  purpose: FilePurpose;
  status: 'processed';
}

/** OpenAI's `Batch` (absent optional fields are omitted, as the schema types them non-nullable). */
export type OpenAIBatchObject = Record<string, unknown> & { id: string; object: 'batch'; status: string };

/** Files and batches of tenants. */
export class BatchService {
  private readonly windows: ReadonlySet<string>;

  constructor(
    readonly store: BatchStore,
    readonly files: FileStorage,
    private readonly options: BatchServiceOptions,
  ) {
    this.windows = new Set(options.completionWindows);
  }

  /** Largest upload, bytes. */
  get maxFileBytes(): number {
    return this.options.maxFileBytes;
  }

  /**
   * Records an upload already streamed to disk. It expires `expiresAfter.seconds` from now when given; a batch input
   * without one expires after 30 days, as on OpenAI (a batch copies its input's lines into the store as it starts,
   * so it runs on after its input file expires).
   */
  async uploadFile(
    principal: Principal,
    upload: { filename: string; purpose: FilePurpose; id: string; bytes: number; expiresAfter?: FileExpiry },
  ): Promise<FileRecord> {
    const createdAt = Date.now();
    const expiresAfter = upload.expiresAfter ?? (upload.purpose === 'batch' ? DEFAULT_BATCH_INPUT_EXPIRY : undefined);
    const record: FileRecord = {
      id: upload.id,
      tenantId: principal.tenantId,
      purpose: upload.purpose,
      filename: upload.filename,
      bytes: upload.bytes,
      createdAt,
      expiresAt: expiresAfter === undefined ? null : createdAt + expiresAfter.seconds * 1000,
    };
    await this.store.insertFile(record);
    return record;
  }

  /** A new file id. */
  newFileId(): string {
    return randomId('file-');
  }

  /**
   * The file, if it is the tenant's and has not expired (a sweep may not have deleted it yet); 404 otherwise,
   * naming `param` (the field that carried `id`). Default `id`.
   */
  async getFile(tenantId: string, id: string, param = 'id'): Promise<FileRecord> {
    const file = await this.store.getFile(id);
    if (file === undefined || file.tenantId !== tenantId || isExpired(file, Date.now())) {
      throw new NotFoundError(`No such File object: ${id}`, 'file_not_found', { param });
    }
    return file;
  }

  /** A page of the tenant's files; 400 when `after` names no file of the tenant (as the admin lists answer). */
  async listFiles(query: FileListQuery): Promise<OpenAIListPage<OpenAIFileObject>> {
    if (query.after !== undefined) {
      const cursor = await this.store.getFile(query.after);
      if (cursor === undefined || cursor.tenantId !== query.tenantId) {
        throw invalidCursor(`No file with id "${query.after}" to list after.`);
      }
    }
    const rows = await this.store.listFiles({ ...query, limit: query.limit + 1, liveAt: Date.now() });
    return openAIListPage(pageOf(rows, query.limit), toOpenAIFile);
  }

  async deleteFile(tenantId: string, id: string): Promise<{ id: string; object: 'file'; deleted: boolean }> {
    await this.getFile(tenantId, id);
    const deleted = await this.store.deleteFile(id);
    await this.files.remove(id);
    return { id, object: 'file', deleted };
  }

  async createBatch(principal: Principal, input: CreateBatchInput): Promise<BatchRecord> {
    if (!isBatchEndpoint(input.endpoint)) {
      throw new InvalidRequestError(
        `Invalid endpoint '${input.endpoint}': use /v1/chat/completions, /v1/completions, /v1/embeddings or ` +
          '/v1/responses.',
        { param: 'endpoint', code: 'invalid_value' },
      );
    }
    if (!this.windows.has(input.completion_window)) {
      throw new InvalidRequestError(
        `Invalid completion_window '${input.completion_window}': use ${[...this.windows].join(', ')}.`,
        { param: 'completion_window', code: 'invalid_value' },
      );
    }
    const file = await this.getFile(principal.tenantId, input.input_file_id, 'input_file_id');
    if (file.purpose !== 'batch') {
      throw new InvalidRequestError(`File ${file.id} was not uploaded with purpose 'batch'.`, {
        param: 'input_file_id',
        code: 'invalid_file_purpose',
      });
    }
    const now = Date.now();
    const record: BatchRecord = {
      id: randomId('batch_'),
      tenantId: principal.tenantId,
      keyId: principal.keyId,
      endpoint: input.endpoint,
      model: null,
      inputFileId: file.id,
      completionWindow: input.completion_window,
      status: 'validating',
      outputFileId: null,
      errorFileId: null,
      errors: null,
      metadata: input.metadata ?? null,
      createdAt: now,
      expiresAt: now + completionWindowMs(input.completion_window),
      outputExpiresAfterSeconds: input.output_expires_after?.seconds ?? null,
      inProgressAt: null,
      finalizingAt: null,
      completedAt: null,
      failedAt: null,
      expiredAt: null,
      cancellingAt: null,
      cancelledAt: null,
    };
    await this.store.insertBatch(record);
    this.options.onChange?.();
    return record;
  }

  /** The batch, if it is the tenant's (`tenantId` undefined: any tenant, for the admin API); 404 otherwise. */
  async getBatch(tenantId: string | undefined, id: string): Promise<BatchRecord> {
    const batch = await this.store.getBatch(id);
    if (batch === undefined || (tenantId !== undefined && batch.tenantId !== tenantId)) {
      throw new NotFoundError(`No such Batch object: ${id}`, 'batch_not_found', { param: 'id' });
    }
    return batch;
  }

  /**
   * A page of batches, newest first (`tenantId` undefined: every tenant's, for the admin API); 400 when `after` names
   * no batch in the list.
   */
  async listBatches(query: {
    tenantId?: string;
    after?: string;
    limit: number;
  }): Promise<{ rows: BatchRecord[]; hasMore: boolean }> {
    if (query.after !== undefined) {
      const cursor = await this.store.getBatch(query.after);
      if (cursor === undefined || (query.tenantId !== undefined && cursor.tenantId !== query.tenantId)) {
        throw invalidCursor(`No batch with id "${query.after}" to list after.`);
      }
    }
    const rows = await this.store.listBatches({ ...query, limit: query.limit + 1 });
    return { rows: rows.slice(0, query.limit), hasMore: rows.length > query.limit };
  }

  /** Asks the batch to stop: `cancelling` until its in-flight lines finish, then `cancelled` (by the runner). */
  async cancelBatch(tenantId: string, id: string): Promise<BatchRecord> {
    const batch = await this.getBatch(tenantId, id);
    if (batch.status === 'cancelling' || batch.status === 'cancelled') return batch;
    const moved = await this.store.transitionBatch(id, ['validating', 'in_progress'], {
      status: 'cancelling',
      cancellingAt: Date.now(),
    });
    if (!moved) {
      const current = await this.getBatch(tenantId, id);
      if (current.status === 'cancelling' || current.status === 'cancelled') return current;
      throw new GatewayConflict(`Cannot cancel a batch whose status is ${current.status}.`);
    }
    this.options.onChange?.();
    return this.getBatch(tenantId, id);
  }

  /** The OpenAI view of a batch (reads its line counts). */
  async view(batch: BatchRecord): Promise<OpenAIBatchObject> {
    return toOpenAIBatch(batch, await this.store.lineCounts(batch.id));
  }
}

/** 400 for an `after` cursor that names no row of the list: a typo or a stale cursor, never the end of the list. */
function invalidCursor(message: string): InvalidRequestError {
  return new InvalidRequestError(message, { param: 'after', code: 'invalid_value' });
}

/** 409: the batch is in a state that does not allow the operation. */
class GatewayConflict extends GatewayError {
  constructor(message: string) {
    super(409, 'invalid_request_error', 'invalid_batch_status', message, false);
  }
}

/** Milliseconds of a completion window such as `24h`, `90m`, `2d` or `30s`. */
export function completionWindowMs(window: string): number {
  const match = /^([1-9][0-9]*)([smhd])$/.exec(window);
  if (match === null) throw new RangeError(`Not a completion window: ${window}`);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

/** Whether `value` is a purpose Tollgate accepts for uploads. */
export function isUploadPurpose(value: unknown): value is 'batch' {
  return value === 'batch';
}

/** Whether `value` names a file purpose (list filter). */
export function isFilePurpose(value: unknown): value is FilePurpose {
  return typeof value === 'string' && (filePurposes as readonly string[]).includes(value);
}

const seconds = (ms: number) => Math.floor(ms / 1000);

const isExpired = (file: FileRecord, now: number) => file.expiresAt !== null && file.expiresAt <= now;

/** The OpenAI view of a file. */
export function toOpenAIFile(file: FileRecord): OpenAIFileObject {
  return {
    id: file.id,
    object: 'file',
    bytes: file.bytes,
    created_at: seconds(file.createdAt),
    ...(file.expiresAt === null ? {} : { expires_at: seconds(file.expiresAt) }),
    filename: file.filename,
    purpose: file.purpose,
    status: 'processed',
  };
}

/** The OpenAI view of a batch. */
export function toOpenAIBatch(batch: BatchRecord, counts: BatchLineCounts): OpenAIBatchObject {
  const object: OpenAIBatchObject = {
    id: batch.id,
    object: 'batch',
    endpoint: batch.endpoint,
    input_file_id: batch.inputFileId,
    completion_window: batch.completionWindow,
    status: batch.status,
    created_at: seconds(batch.createdAt),
    expires_at: seconds(batch.expiresAt),
    request_counts: {
      total: counts.total,
      completed: counts.byState.succeeded,
      failed: counts.byState.failed + counts.byState.expired + counts.byState.cancelled,
    },
    usage: {
      input_tokens: counts.usage.inputTokens,
      input_tokens_details: { cached_tokens: counts.usage.cachedTokens },
      output_tokens: counts.usage.outputTokens,
      output_tokens_details: { reasoning_tokens: counts.usage.reasoningTokens },
      total_tokens: counts.usage.inputTokens + counts.usage.outputTokens,
    },
    metadata: batch.metadata,
  };
  if (batch.model !== null) object.model = batch.model;
  if (batch.outputFileId !== null) object.output_file_id = batch.outputFileId;
  if (batch.errorFileId !== null) object.error_file_id = batch.errorFileId;
  if (batch.errors !== null) object.errors = { object: 'list', data: batch.errors };
  const times: [string, number | null][] = [
    ['in_progress_at', batch.inProgressAt],
    ['finalizing_at', batch.finalizingAt],
    ['completed_at', batch.completedAt],
    ['failed_at', batch.failedAt],
    ['expired_at', batch.expiredAt],
    ['cancelling_at', batch.cancellingAt],
    ['cancelled_at', batch.cancelledAt],
  ];
  for (const [name, value] of times) if (value !== null) object[name] = seconds(value);
  return object;
}
