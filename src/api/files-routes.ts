/**
 * The OpenAI Files API under `/v1/files`: multipart upload streamed to disk (never held whole in memory), listing,
 * retrieval, content download (streamed from disk) and deletion. A tenant sees only its own files.
 */
import { stat } from 'node:fs/promises';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  type BatchService,
  FILE_EXPIRY_SECONDS,
  type FileExpiry,
  isFilePurpose,
  isUploadPurpose,
  toOpenAIFile,
} from '../batch/batch-service.js';
import { FileTooLargeError } from '../batch/file-storage.js';
import { GatewayError, InvalidRequestError, NotFoundError, UnavailableError } from '../errors/gateway-error.js';
import { pageLimit } from './page-limit.js';

/** Default and largest page size of `GET /v1/files`. */
const DEFAULT_FILE_PAGE = 10_000;

/** Registers the Files API on a scope (it adds the multipart parser to that scope only). */
export async function registerFilesRoutes(scope: FastifyInstance, batches: BatchService | undefined): Promise<void> {
  await scope.register(multipart);
  const service = (): BatchService => {
    if (batches === undefined) throw new UnavailableError('The Files API is not enabled on this gateway.');
    return batches;
  };

  scope.post('/v1/files', async (request, reply) => {
    const files = service();
    if (!request.isMultipart()) {
      throw new InvalidRequestError("Upload the file as multipart/form-data with the fields 'file' and 'purpose'.", {
        code: 'invalid_content_type',
      });
    }
    const upload = await receiveUpload(request, files);
    const record = await files.uploadFile(request.principal!, upload);
    return reply.code(200).send(toOpenAIFile(record));
  });

  scope.get<{ Querystring: Record<string, string | undefined> }>('/v1/files', async (request) => {
    const { purpose, after, order } = request.query;
    if (purpose !== undefined && !isFilePurpose(purpose)) {
      throw new InvalidRequestError(`Invalid purpose '${purpose}'.`, { param: 'purpose', code: 'invalid_value' });
    }
    if (order !== undefined && order !== 'asc' && order !== 'desc') {
      throw new InvalidRequestError("order must be 'asc' or 'desc'.", { param: 'order', code: 'invalid_value' });
    }
    return service().listFiles({
      tenantId: request.principal!.tenantId,
      limit: pageLimit(request.query.limit, DEFAULT_FILE_PAGE, DEFAULT_FILE_PAGE),
      ...(purpose === undefined ? {} : { purpose }),
      ...(after === undefined ? {} : { after }),
      ...(order === undefined ? {} : { order }),
    });
  });

  scope.get<{ Params: { id: string } }>('/v1/files/:id', async (request) =>
    toOpenAIFile(await service().getFile(request.principal!.tenantId, request.params.id)),
  );

  scope.get<{ Params: { id: string } }>('/v1/files/:id/content', async (request, reply) => {
    const files = service();
    const file = await files.getFile(request.principal!.tenantId, request.params.id);
    const path = files.files.pathOf(file.id);
    try {
      await stat(path);
    } catch {
      throw new NotFoundError(`The content of file ${file.id} is no longer available.`, 'file_not_found');
    }
    return reply.type('application/octet-stream').header('content-length', file.bytes).send(files.files.read(file.id));
  });

  scope.delete<{ Params: { id: string } }>('/v1/files/:id', async (request) =>
    service().deleteFile(request.principal!.tenantId, request.params.id),
  );
}

/** Reads the multipart parts: the `file` is streamed to disk as it arrives; `purpose` may come before or after it. */
async function receiveUpload(
  request: FastifyRequest,
  files: BatchService,
): Promise<{ id: string; filename: string; purpose: 'batch'; bytes: number; expiresAfter?: FileExpiry }> {
  let purpose: unknown;
  const expiry: { anchor?: unknown; seconds?: unknown } = {};
  let stored: { id: string; filename: string; bytes: number } | undefined;
  const cleanUp = async () => {
    if (stored !== undefined) await files.files.remove(stored.id);
  };
  try {
    // One byte over the limit reaches our own counter, which refuses it and removes the partial file.
    for await (const part of request.parts({ limits: { fileSize: files.maxFileBytes + 1, files: 1, fields: 8 } })) {
      if (part.type === 'field') {
        if (part.fieldname === 'purpose') purpose = part.value;
        else if (part.fieldname === 'expires_after[anchor]') expiry.anchor = part.value;
        else if (part.fieldname === 'expires_after[seconds]') expiry.seconds = part.value;
        continue;
      }
      if (part.fieldname !== 'file' || stored !== undefined) {
        part.file.resume();
        continue;
      }
      const id = files.newFileId();
      const bytes = await files.files.write(id, part.file, files.maxFileBytes);
      stored = { id, filename: part.filename || 'upload.jsonl', bytes };
    }
  } catch (error: unknown) {
    await cleanUp();
    // Let the rest of the body drain so the client reads our answer instead of a reset connection.
    request.raw.resume();
    if (error instanceof FileTooLargeError || (error as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') {
      throw new GatewayError(
        413,
        'invalid_request_error',
        'file_too_large',
        `The file exceeds the limit of ${files.maxFileBytes} bytes.`,
        false,
        { param: 'file' },
      );
    }
    if ((error as { code?: string }).code === 'FST_FILES_LIMIT') {
      throw new InvalidRequestError('Upload one file per request.', { param: 'file', code: 'invalid_value' });
    }
    throw error;
  }
  if (stored === undefined) {
    throw new InvalidRequestError("Missing required parameter: 'file'.", {
      param: 'file',
      code: 'missing_required_parameter',
    });
  }
  if (!isUploadPurpose(purpose)) {
    await cleanUp();
    throw new InvalidRequestError(
      purpose === undefined
        ? "Missing required parameter: 'purpose'."
        : `Unsupported purpose '${String(purpose)}': use 'batch'.`,
      { param: 'purpose', code: purpose === undefined ? 'missing_required_parameter' : 'invalid_value' },
    );
  }
  let expiresAfter: FileExpiry | undefined;
  try {
    expiresAfter = fileExpiry(expiry);
  } catch (error: unknown) {
    await cleanUp();
    throw error;
  }
  return { ...stored, purpose, ...(expiresAfter === undefined ? {} : { expiresAfter }) };
}

/** The multipart fields `expires_after[anchor]` and `expires_after[seconds]`: both or neither. */
function fileExpiry(fields: { anchor?: unknown; seconds?: unknown }): FileExpiry | undefined {
  if (fields.anchor === undefined && fields.seconds === undefined) return undefined;
  if (fields.anchor !== 'created_at') {
    throw new InvalidRequestError(
      fields.anchor === undefined
        ? "Missing required parameter: 'expires_after[anchor]'."
        : `Invalid value for 'expires_after[anchor]': '${String(fields.anchor)}'. Supported: 'created_at'.`,
      {
        param: 'expires_after.anchor',
        code: fields.anchor === undefined ? 'missing_required_parameter' : 'invalid_value',
      },
    );
  }
  const { minimum, maximum } = FILE_EXPIRY_SECONDS;
  const seconds =
    typeof fields.seconds === 'string' && /^[0-9]{1,9}$/.test(fields.seconds) ? Number(fields.seconds) : Number.NaN;
  if (!(seconds >= minimum && seconds <= maximum)) {
    throw new InvalidRequestError(
      fields.seconds === undefined
        ? "Missing required parameter: 'expires_after[seconds]'."
        : `Invalid value for 'expires_after[seconds]': expected an integer between ${minimum} (1 hour) and ${maximum} (30 days).`,
      {
        param: 'expires_after.seconds',
        code: fields.seconds === undefined ? 'missing_required_parameter' : 'invalid_value',
      },
    );
  }
  return { anchor: 'created_at', seconds };
}
