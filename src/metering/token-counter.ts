/**
 * Token counting with the o200k_base encoding (GPT-4o and later). The gateway uses it to estimate usage when an
 * upstream reports none; the simulated upstream uses it as its exact usage, so the two always agree.
 *
 * Counting is lenient: bodies arrive from clients and may have any shape. Whatever is not text or a token-id array is
 * skipped, never thrown on.
 */
import o200k, { countTokens } from 'gpt-tokenizer/encoding/o200k_base';
import { assertNever } from '../errors/assert-never.js';
import { mergeLongPiece } from './long-piece-merge.js';

/** The endpoints whose prompts can be counted. */
export type CountedEndpoint = 'chat' | 'completions' | 'embeddings';

/** Tokens every chat message adds around its content (`<|start|>{role}<|message|>…<|end|>` minus the role). */
export const chatTokensPerMessage = 3;
/** Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`). */
export const chatReplyPrimingTokens = 3;
/** Extra token when a message carries a `name`. */
export const chatTokensPerName = 1;

// Special-token markers such as `<|endoftext|>` in user text are counted as plain text (the library throws by default).
const plainTextOptions = { disallowedSpecial: new Set<string>() };

/**
 * Pieces longer than this many UTF-16 units are merged by `mergeLongPiece` (O(n log n)) instead of the library's
 * rescanning merge (O(n²)), and are not kept in the library's merge cache, which bounds entries by count, not size.
 * Below it the library is as fast or faster.
 */
export const longPieceChars = 256;

/** The parts of gpt-tokenizer's byte-pair core that the long-piece merge replaces or reads. */
interface BytePairCore {
  bytePairEncode(input: string): number[];
  getBpeRankFromBytes(bytes: Uint8Array): number | undefined;
  bytePairRankDecoder: ReadonlyArray<string | readonly number[] | undefined>;
}

/** The library's own merge, kept for pieces up to `longPieceChars` and for tests that compare the two. */
export const libraryBytePairEncode: (input: string) => number[] = installLongPieceMerge();

function installLongPieceMerge(): (input: string) => number[] {
  // The core is private in the library's types, so it is reached at run time and checked: a library upgrade that
  // moves it fails here, at import, not silently on the first long piece.
  const core = Reflect.get(o200k, 'bytePairEncodingCoreProcessor') as Partial<BytePairCore> | undefined;
  if (
    typeof core?.bytePairEncode !== 'function' ||
    typeof core.getBpeRankFromBytes !== 'function' ||
    !Array.isArray(core.bytePairRankDecoder)
  ) {
    throw new Error('gpt-tokenizer no longer exposes the byte-pair core that token-counter patches');
  }
  const complete = core as BytePairCore;
  const libraryEncode = complete.bytePairEncode.bind(complete);
  const rankOf = complete.getBpeRankFromBytes.bind(complete);
  let maxTokenBytes = 0;
  for (const token of complete.bytePairRankDecoder) {
    if (token === undefined) continue;
    const bytes = typeof token === 'string' ? Buffer.byteLength(token) : token.length;
    if (bytes > maxTokenBytes) maxTokenBytes = bytes;
  }
  const utf8 = new TextEncoder();
  complete.bytePairEncode = (input) =>
    input.length <= longPieceChars ? libraryEncode(input) : mergeLongPiece(utf8.encode(input), rankOf, maxTokenBytes);
  return libraryEncode;
}

/** Tokens of a piece of text. */
export function countTextTokens(text: string): number {
  if (text.length === 0) return 0;
  return countTokens(text, plainTextOptions);
}

/**
 * Prompt tokens of a request body, following OpenAI's documented counting for chat
 * (per message: 3 + role + content + name (+1); plus 3 to prime the reply). Content may be a string or an array of
 * parts, of which `text` (and `refusal`) parts count; assistant `tool_calls` count their function name and arguments.
 * Completions count `prompt` (string, strings, token ids or arrays of token ids); embeddings count `input` likewise.
 */
export function countPromptTokens(endpoint: CountedEndpoint, body: Readonly<Record<string, unknown>>): number {
  switch (endpoint) {
    case 'chat':
      return countChatTokens(body.messages);
    case 'completions':
      return countTextOrTokenIds(body.prompt);
    case 'embeddings':
      return countTextOrTokenIds(body.input);
    default:
      return assertNever(endpoint);
  }
}

function countChatTokens(messages: unknown): number {
  if (!Array.isArray(messages)) return 0;
  let total = chatReplyPrimingTokens;
  for (const message of messages) {
    total += chatTokensPerMessage;
    if (!isRecord(message)) continue;
    if (typeof message.role === 'string') total += countTextTokens(message.role);
    if (typeof message.name === 'string') total += countTextTokens(message.name) + chatTokensPerName;
    total += countContentTokens(message.content);
    total += countToolCallTokens(message.tool_calls);
  }
  return total;
}

function countContentTokens(content: unknown): number {
  if (typeof content === 'string') return countTextTokens(content);
  if (!Array.isArray(content)) return 0;
  let total = 0;
  for (const part of content) {
    if (typeof part === 'string') total += countTextTokens(part);
    else if (isRecord(part)) {
      if (part.type === 'text' && typeof part.text === 'string') total += countTextTokens(part.text);
      else if (part.type === 'refusal' && typeof part.refusal === 'string') total += countTextTokens(part.refusal);
    }
  }
  return total;
}

function countToolCallTokens(toolCalls: unknown): number {
  if (!Array.isArray(toolCalls)) return 0;
  let total = 0;
  for (const call of toolCalls) {
    if (!isRecord(call) || !isRecord(call.function)) continue;
    if (typeof call.function.name === 'string') total += countTextTokens(call.function.name);
    if (typeof call.function.arguments === 'string') total += countTextTokens(call.function.arguments);
  }
  return total;
}

/** A string, an array of token ids, or an array whose items are strings or token-id arrays. */
function countTextOrTokenIds(value: unknown): number {
  if (typeof value === 'string') return countTextTokens(value);
  if (!Array.isArray(value)) return 0;
  let total = 0;
  for (const item of value) {
    if (typeof item === 'number') total += 1;
    else if (typeof item === 'string') total += countTextTokens(item);
    else if (Array.isArray(item)) total += item.filter((id) => typeof id === 'number').length;
  }
  return total;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
