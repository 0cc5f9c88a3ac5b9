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

/** The parts of gpt-tokenizer's byte-pair core that Tollgate replaces or reads. */
interface BytePairCore {
  bytePairEncode(input: string): number[];
  getBpeRankFromBytes(bytes: Uint8Array): number | undefined;
  getBpeRankFromString(piece: string): number | undefined;
  bytePairRankDecoder: ReadonlyArray<string | readonly number[] | undefined>;
  tokenSplitRegex: RegExp;
}

const core = reachBytePairCore();

/** The library's own merge, kept for pieces up to `longPieceChars` and for tests that compare the two. */
export const libraryBytePairEncode: (input: string) => number[] = core.bytePairEncode.bind(core);

installLongPieceMerge(core);

function reachBytePairCore(): BytePairCore {
  // The core is private in the library's types, so it is reached at run time and checked: a library upgrade that
  // moves it fails here, at import, not silently on the first long piece.
  const found = Reflect.get(o200k, 'bytePairEncodingCoreProcessor') as Partial<BytePairCore> | undefined;
  if (
    typeof found?.bytePairEncode !== 'function' ||
    typeof found.getBpeRankFromBytes !== 'function' ||
    typeof found.getBpeRankFromString !== 'function' ||
    !Array.isArray(found.bytePairRankDecoder) ||
    !(found.tokenSplitRegex instanceof RegExp)
  ) {
    throw new Error('gpt-tokenizer no longer exposes the byte-pair core that token-counter builds on');
  }
  return found as BytePairCore;
}

function installLongPieceMerge(target: BytePairCore): void {
  const libraryEncode = target.bytePairEncode.bind(target);
  const rankOf = target.getBpeRankFromBytes.bind(target);
  let maxTokenBytes = 0;
  for (const token of target.bytePairRankDecoder) {
    if (token === undefined) continue;
    const bytes = typeof token === 'string' ? Buffer.byteLength(token) : token.length;
    if (bytes > maxTokenBytes) maxTokenBytes = bytes;
  }
  const utf8 = new TextEncoder();
  target.bytePairEncode = (input) =>
    input.length <= longPieceChars ? libraryEncode(input) : mergeLongPiece(utf8.encode(input), rankOf, maxTokenBytes);
}

/** Tokens of one piece of the split pattern, as the library's count takes them. */
function countPieceTokens(piece: string): number {
  return core.getBpeRankFromString(piece) === undefined ? core.bytePairEncode(piece).length : 1;
}

/**
 * Pieces a growing text keeps unsettled at its end. Appending text can change the last piece (a word goes on) and
 * the one before it (`abc` + `'` becomes `abc's`, a whitespace run gives its last space to the next word); the split
 * pattern looks no further back. A property test holds this against the whole-text count.
 */
const unsettledPieces = 2;

/**
 * Counts the tokens of a text that only grows, such as a stream's delivered output, without tokenizing it all again
 * each time: pieces of the split pattern that more text can no longer change are counted once and remembered.
 * `count(text)` always equals `countTextTokens(text)`.
 */
export class GrowingTextCounter {
  private readonly split = new RegExp(core.tokenSplitRegex.source, core.tokenSplitRegex.flags);
  /** Characters whose pieces are settled and counted in `settledTokens`. */
  private settledChars = 0;
  private settledTokens = 0;

  /** Characters the next `count` will tokenize before the text grows further: what was not settled. */
  unsettledLength(text: string): number {
    return text.length - this.settledChars;
  }

  /** Tokens of `text`, which must begin with every text counted before. */
  count(text: string): number {
    const pieces: { end: number; tokens: number }[] = [];
    this.split.lastIndex = this.settledChars;
    for (let match = this.split.exec(text); match !== null; match = this.split.exec(text)) {
      pieces.push({ end: match.index + match[0].length, tokens: countPieceTokens(match[0]) });
    }
    const settling = pieces.length - unsettledPieces;
    let tokens = this.settledTokens;
    for (let index = 0; index < pieces.length; index++) {
      const piece = pieces[index] as { end: number; tokens: number };
      tokens += piece.tokens;
      if (index < settling) {
        this.settledTokens += piece.tokens;
        this.settledChars = piece.end;
      }
    }
    return tokens;
  }
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
