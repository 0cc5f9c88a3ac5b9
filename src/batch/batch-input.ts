/**
 * Validation of a batch input file, streamed line by line (a line longer than the limit is skipped, never held).
 * A line is `{custom_id, method: "POST", url, body}`; a line that fails a check becomes a failed line with an error
 * (it goes to the error file) and the batch goes on. The file fails the batch as a whole only when it is not JSONL
 * at all (no line parses), is empty, or has too many lines.
 */
import { performance } from 'node:perf_hooks';
import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  EmbeddingRequestSchema,
} from '../api/request-schemas.js';
import {
  type ChatRequestOptions,
  chatRequestOf,
  type ResponsesRequest,
  ResponsesRequestSchema,
} from '../api/responses/responses-request.js';
import { GatewayError } from '../errors/gateway-error.js';
import { countPromptTokensOffThread } from '../metering/prompt-token-pool.js';
import { maxOutputTokens } from '../relay/output-budget.js';
import type { BatchFailure, BatchLineError, NewBatchLine } from './batch-store.js';

/**
 * The endpoints a batch may target, with the gateway endpoint each runs on: a Responses line runs as the chat
 * completion it translates to (`chatRequestOf`), and its output is the Response made of the answer.
 */
export const batchEndpoints = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
  '/v1/responses': 'chat',
} as const;

/** The endpoint the request log records for a batch endpoint's lines: what the same request sent online records. */
export const batchLogEndpoints = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
  '/v1/responses': 'responses',
} as const satisfies Record<keyof typeof batchEndpoints, string>;

/** A batch endpoint URL. */
export type BatchEndpointUrl = keyof typeof batchEndpoints;

/** Whether `url` is one of `batchEndpoints`. */
export function isBatchEndpoint(url: unknown): url is BatchEndpointUrl {
  return typeof url === 'string' && Object.hasOwn(batchEndpoints, url);
}

const bodyChecks: Record<BatchEndpointUrl, TypeCheck<TSchema>> = {
  '/v1/chat/completions': TypeCompiler.Compile(ChatCompletionRequestSchema),
  '/v1/completions': TypeCompiler.Compile(CompletionRequestSchema),
  '/v1/embeddings': TypeCompiler.Compile(EmbeddingRequestSchema),
  '/v1/responses': TypeCompiler.Compile(ResponsesRequestSchema),
};

/**
 * The request a line's body sends upstream: itself, or for the Responses API the chat request it becomes; its
 * compaction items opened with `openCompaction` (the batch's tenant's), refused without it.
 */
export function upstreamBodyOf(
  url: BatchEndpointUrl,
  body: Record<string, unknown>,
  openCompaction?: ChatRequestOptions['openCompaction'],
): Record<string, unknown> {
  if (url !== '/v1/responses') return body;
  return chatRequestOf(body as ResponsesRequest, undefined, openCompaction === undefined ? {} : { openCompaction });
}

/** Options of `readBatchInput`. */
export interface BatchInputOptions {
  batchId: string;
  /** The batch's endpoint: every line's url must equal it. */
  endpoint: BatchEndpointUrl;
  /** Longest line, bytes. */
  maxLineBytes: number;
  /** Most lines. */
  maxLines: number;
  /** Receives validated lines in input order, a few hundred at a time. */
  onLines: (lines: NewBatchLine[]) => Promise<void>;
  /** Asked between slices of work: true gives up (`ValidationStopped`), e.g. when the gateway stops. */
  stopping?: () => boolean;
  /** Opens the compaction items of Responses lines (the batch's tenant's); without it, such a line is invalid. */
  openCompaction?: ChatRequestOptions['openCompaction'];
}

/** Thrown by `readBatchInput` when `stopping` said so: the batch is left to validate again later. */
export class ValidationStopped extends Error {
  constructor() {
    super('batch input validation stopped');
    this.name = 'ValidationStopped';
  }
}

/**
 * Longest stretch of validation without giving the event loop a turn, ms. Lines are parsed, checked and counted on
 * the main thread, and awaiting settled promises yields to microtasks only: a 60,000-line file held the loop for
 * seconds at a time, and online requests waited behind it. A slice of 5 ms costs them at most that.
 */
const SLICE_MS = 5;

/** A line whose bytes are not UTF-8: refused, not run with its bad bytes replaced by U+FFFD. */
const NOT_UTF8 = Symbol('not UTF-8');
/** Fatal: throws on bytes that are not UTF-8. Keeps a byte order mark, which `readBatchInput` handles itself. */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeLine(bytes: Buffer): string | typeof NOT_UTF8 {
  try {
    return utf8.decode(bytes);
  } catch {
    return NOT_UTF8;
  }
}

/** What validation found. */
export interface BatchInputSummary {
  /** Lines in the file (blank lines excepted). */
  total: number;
  /** Lines that will run. */
  valid: number;
  /** The model of the first valid line. */
  model: string | null;
  /** Set when the file fails the batch as a whole. */
  failure: BatchFailure | null;
}

const FLUSH_LINES = 500;
const NEWLINE = 0x0a;
const BYTE_ORDER_MARK = 0xfeff;

/** Validates the input file `source`, handing the lines to `options.onLines`. */
export async function readBatchInput(
  source: AsyncIterable<Buffer | string>,
  options: BatchInputOptions,
): Promise<BatchInputSummary> {
  const seen = new Set<string>();
  const summary: BatchInputSummary = { total: 0, valid: 0, model: null, failure: null };
  let parsed = 0;
  let pending: NewBatchLine[] = [];
  let firstLine = true;
  let sliceStart = performance.now();

  const accept = async (raw: string | typeof NOT_UTF8 | null): Promise<void> => {
    if (performance.now() - sliceStart > SLICE_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      if (options.stopping?.() === true) throw new ValidationStopped();
      sliceStart = performance.now();
    }
    // A UTF-8 byte order mark (Windows editors write one) starts the file, not its first request.
    const text = firstLine && typeof raw === 'string' && raw.charCodeAt(0) === BYTE_ORDER_MARK ? raw.slice(1) : raw;
    firstLine = false;
    if (typeof text === 'string' && text.trim() === '') return;
    const index = summary.total++;
    if (summary.total > options.maxLines) return;
    const line = checkLine(text, index, options, seen);
    if (line.promptTokens !== undefined) line.record.estimatedTokens += await line.promptTokens;
    if (line.parsed) parsed++;
    if (line.record.state === 'pending') {
      summary.valid++;
      summary.model ??= line.model;
    }
    pending.push(line.record);
    if (pending.length >= FLUSH_LINES) {
      const flushed = pending;
      pending = [];
      await options.onLines(flushed);
    }
  };

  let parts: Buffer[] = [];
  let length = 0;
  let oversize = false;
  for await (const chunk of source) {
    let buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    for (let newline = buffer.indexOf(NEWLINE); newline !== -1; newline = buffer.indexOf(NEWLINE)) {
      const head = buffer.subarray(0, newline);
      if (!oversize && length + head.length <= options.maxLineBytes) parts.push(head);
      const tooLong = oversize || length + head.length > options.maxLineBytes;
      await accept(tooLong ? null : decodeLine(Buffer.concat(parts)));
      parts = [];
      length = 0;
      oversize = false;
      buffer = buffer.subarray(newline + 1);
    }
    if (oversize) continue;
    length += buffer.length;
    if (length > options.maxLineBytes) {
      // Drop what we have: the line is refused, and holding it would defeat the limit.
      oversize = true;
      parts = [];
    } else if (buffer.length > 0) {
      parts.push(Buffer.from(buffer));
    }
  }
  if (oversize || length > 0) await accept(oversize ? null : decodeLine(Buffer.concat(parts)));
  if (pending.length > 0) await options.onLines(pending);

  if (summary.total === 0) {
    summary.failure = { code: 'empty_file', message: 'The input file has no requests.', param: null, line: null };
  } else if (summary.total > options.maxLines) {
    summary.failure = {
      code: 'too_many_requests',
      message: `The input file has ${summary.total} requests; a batch may have at most ${options.maxLines}.`,
      param: null,
      line: null,
    };
  } else if (parsed === 0) {
    summary.failure = {
      code: 'invalid_file_format',
      message:
        'The input file is not JSONL: no line is a JSON object. Each line must be {"custom_id", "method", "url", "body"}.',
      param: null,
      line: null,
    };
  }
  return summary;
}

interface CheckedLine {
  record: NewBatchLine;
  /** The line was a JSON object (whatever else was wrong with it). */
  parsed: boolean;
  model: string | null;
  /** A long prompt being counted on a worker thread, to add to `record.estimatedTokens`. */
  promptTokens?: Promise<number>;
}

/** One line's checks; `text` null means the line was over the size limit. */
function checkLine(
  text: string | typeof NOT_UTF8 | null,
  index: number,
  options: BatchInputOptions,
  seen: Set<string>,
): CheckedLine {
  const requestId = `${options.batchId}_${index}`;
  const base = { batchId: options.batchId, lineIndex: index, requestId };
  const invalid = (
    error: BatchLineError,
    parsed: boolean,
    customId: string | null = null,
    url: string | null = null,
  ): CheckedLine => ({
    record: { ...base, customId, url, body: null, estimatedTokens: 0, state: 'failed', error },
    parsed,
    model: null,
  });

  if (text === null) {
    return invalid(
      { code: 'line_too_large', message: `Line ${index + 1} exceeds the limit of ${options.maxLineBytes} bytes.` },
      false,
    );
  }
  if (text === NOT_UTF8) {
    return invalid({ code: 'invalid_encoding', message: `Line ${index + 1} is not valid UTF-8.` }, false);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return invalid({ code: 'invalid_json_line', message: `Line ${index + 1} is not valid JSON.` }, false);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return invalid({ code: 'invalid_json_line', message: `Line ${index + 1} is not a JSON object.` }, false);
  }
  const line = value as Record<string, unknown>;
  const customId = typeof line.custom_id === 'string' && line.custom_id !== '' ? line.custom_id : null;
  const url = typeof line.url === 'string' ? line.url : null;
  if (customId === null) {
    return invalid(
      { code: 'missing_custom_id', message: `Line ${index + 1} has no custom_id (a non-empty string).` },
      true,
      null,
      url,
    );
  }
  if (seen.has(customId)) {
    return invalid(
      { code: 'duplicate_custom_id', message: `The custom_id '${customId}' of line ${index + 1} is not unique.` },
      true,
      customId,
      url,
    );
  }
  seen.add(customId);
  if (line.method !== 'POST') {
    return invalid({ code: 'invalid_method', message: `Line ${index + 1}: method must be POST.` }, true, customId, url);
  }
  if (!isBatchEndpoint(url)) {
    return invalid(
      {
        code: 'invalid_url',
        message: `Line ${index + 1}: url must be one of ${Object.keys(batchEndpoints).join(', ')}.`,
      },
      true,
      customId,
      url,
    );
  }
  if (url !== options.endpoint) {
    return invalid(
      {
        code: 'mismatched_endpoint',
        message: `Line ${index + 1}: url ${url} does not match the batch's endpoint ${options.endpoint}.`,
      },
      true,
      customId,
      url,
    );
  }
  const body = line.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return invalid(
      { code: 'invalid_body', message: `Line ${index + 1}: body must be a JSON object.` },
      true,
      customId,
      url,
    );
  }
  const request = body as Record<string, unknown>;
  const check = bodyChecks[url];
  if (!check.Check(request)) {
    const first = check.Errors(request).First();
    const where = first === undefined || first.path === '' ? 'body' : `body${first.path.replaceAll('/', '.')}`;
    return invalid(
      { code: 'invalid_body', message: `Line ${index + 1}: ${where}: ${first?.message ?? 'invalid'}.` },
      true,
      customId,
      url,
    );
  }
  if (request.stream === true) {
    return invalid(
      { code: 'invalid_body', message: `Line ${index + 1}: streaming is not supported in a batch.` },
      true,
      customId,
      url,
    );
  }
  let upstreamBody: Record<string, unknown>;
  try {
    upstreamBody = upstreamBodyOf(url, request, options.openCompaction);
  } catch (error: unknown) {
    if (!(error instanceof GatewayError)) throw error;
    const where = error.param === null ? 'body' : `body.${error.param}`;
    return invalid(
      { code: 'invalid_body', message: `Line ${index + 1}: ${where}: ${error.message}` },
      true,
      customId,
      url,
    );
  }
  const endpoint = batchEndpoints[url];
  // Without a limit, a nominal 256 tokens a sequence, for planning only.
  const maxOutput = maxOutputTokens(endpoint, upstreamBody, 256);
  const counted = countPromptTokensOffThread(endpoint, upstreamBody);
  return {
    record: {
      ...base,
      customId,
      url,
      body: JSON.stringify(request),
      estimatedTokens: maxOutput + (typeof counted === 'number' ? counted : 0),
      state: 'pending',
      error: null,
    },
    parsed: true,
    model: request.model as string,
    ...(typeof counted === 'number' ? {} : { promptTokens: counted }),
  };
}
