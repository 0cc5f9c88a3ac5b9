/**
 * Token counting with the o200k_base encoding (GPT-4o and later). The gateway uses it to estimate usage when an
 * upstream reports none; the simulated upstream uses it as its exact usage, so the two always agree.
 *
 * Counting is lenient: bodies arrive from clients and may have any shape. Whatever is not text or a token-id array is
 * skipped, never thrown on.
 */
import { assertNever } from '../errors/assert-never.js';
import { BpeRanks, shippedRanksFile } from './bpe-ranks.js';
import { mergeLongPiece } from './long-piece-merge.js';

/** The endpoints whose prompts can be counted. */
export type CountedEndpoint = 'chat' | 'completions' | 'embeddings';

/** Tokens every chat message adds around its content (`<|start|>{role}<|message|>…<|end|>` minus the role). */
export const chatTokensPerMessage = 3;
/** Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`). */
export const chatReplyPrimingTokens = 3;
/** Extra token when a message carries a `name`. */
export const chatTokensPerName = 1;

/**
 * o200k_base's split pattern as gpt-tokenizer writes it for JavaScript (the test holds the two equal): text is cut
 * into pieces (words with their leading space, digit runs of up to three, punctuation runs, whitespace), and each
 * piece is tokenized on its own. Special-token markers such as `<|endoftext|>` in user text are plain text.
 */
export const o200kSplitPattern =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|" +
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|" +
  '\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';

/**
 * Pieces longer than this many bytes are merged by `mergeLongPiece` (O(n log n)); shorter ones by the plain
 * lowest-rank-first rescan over scratch arrays, which allocates nothing and is faster for short pieces.
 */
export const longPieceBytes = 256;

/** The ranks, read once per process (~5 MB off the heap; see `bpe-ranks.ts`). */
const ranks = BpeRanks.fromTiktokenFile(shippedRanksFile('o200k_base'));

const split = new RegExp(o200kSplitPattern, 'gu');
const utf8 = new TextEncoder();
/** A piece's UTF-8 bytes (three bytes per UTF-16 unit at most); grown for longer pieces, up to `scratchLimit`. */
let scratch = new Uint8Array(4096);
const scratchLimit = 1 << 16;
/** Part starts and pair ranks of the short merge; `longPieceBytes` parts at most, plus the end. */
const mergeStarts = new Int32Array(longPieceBytes + 1);
const mergeRanks = new Int32Array(longPieceBytes);
const notAToken = 0x7fffffff;

/** Tokens of one piece of the split pattern. */
function countPieceTokens(piece: string): number {
  const needed = piece.length * 3;
  let bytes = scratch;
  if (needed > bytes.length) {
    bytes = new Uint8Array(needed);
    // A rare long piece gets an array of its own rather than keeping a large one for the process's life.
    if (needed <= scratchLimit) scratch = bytes;
  }
  const length = encodeUtf8(piece, bytes);
  if (ranks.rank(bytes, 0, length) >= 0) return 1;
  if (length > longPieceBytes)
    return mergeLongPiece(bytes.subarray(0, length), ranks.rankOf, ranks.maxTokenBytes).length;
  return countShortMerge(bytes, length);
}

/** Writes `text` as UTF-8 into `bytes` (long enough), returns the length; ASCII without `TextEncoder`'s call. */
function encodeUtf8(text: string, bytes: Uint8Array): number {
  const length = text.length;
  for (let index = 0; index < length; index++) {
    const code = text.charCodeAt(index);
    if (code >= 0x80) return utf8.encodeInto(text, bytes).written;
    bytes[index] = code;
  }
  return length;
}

/**
 * Tokens of a piece of at most `longPieceBytes` bytes that is not one token: merge the adjacent pair whose bytes have
 * the lowest rank (leftmost on ties) until no pair is a token. Every part is a token throughout (single bytes are).
 */
function countShortMerge(bytes: Uint8Array, length: number): number {
  const starts = mergeStarts;
  const pairRanks = mergeRanks;
  let parts = length;
  for (let index = 0; index <= length; index++) starts[index] = index;
  for (let index = 0; index < parts - 1; index++) pairRanks[index] = pairRank(bytes, index, index + 2);
  while (parts > 1) {
    let best = notAToken;
    let at = -1;
    for (let index = 0; index < parts - 1; index++) {
      const rank = pairRanks[index] as number;
      if (rank < best) {
        best = rank;
        at = index;
      }
    }
    if (at < 0) break;
    // Part `at + 1` joins part `at`: its start goes, and the pair it began goes with it.
    for (let index = at + 1; index < parts; index++) starts[index] = starts[index + 1] as number;
    for (let index = at + 1; index < parts - 2; index++) pairRanks[index] = pairRanks[index + 1] as number;
    parts--;
    if (at < parts - 1) pairRanks[at] = pairRank(bytes, starts[at] as number, starts[at + 2] as number);
    if (at > 0) pairRanks[at - 1] = pairRank(bytes, starts[at - 1] as number, starts[at + 1] as number);
  }
  return parts;
}

function pairRank(bytes: Uint8Array, start: number, end: number): number {
  const rank = ranks.rank(bytes, start, end);
  return rank < 0 ? notAToken : rank;
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
  private readonly split = new RegExp(o200kSplitPattern, 'gu');
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
  let tokens = 0;
  split.lastIndex = 0;
  for (let match = split.exec(text); match !== null; match = split.exec(text)) tokens += countPieceTokens(match[0]);
  return tokens;
}

/**
 * Prompt tokens of a request body, following OpenAI's documented counting for chat
 * (per message: 3 + role + content + name (+1); plus 3 to prime the reply). Content may be a string or an array of
 * parts, of which `text` (and `refusal`) parts count, and each image a floor (`IMAGE_PART_TOKENS`); assistant
 * `tool_calls` count their function name and arguments; the tools offered count as their JSON text.
 * Completions count `prompt` (string, strings, token ids or arrays of token ids); embeddings count `input` likewise.
 */
export function countPromptTokens(endpoint: CountedEndpoint, body: Readonly<Record<string, unknown>>): number {
  switch (endpoint) {
    case 'chat':
      return (
        countChatTokens(body.messages) +
        countToolDefinitionTokens(body.tools) +
        countToolDefinitionTokens(body.functions)
      );
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

/**
 * The tool (or legacy function) definitions a chat request offers the model, which upstreams render into the prompt
 * and bill as prompt tokens: counted as their JSON text, an approximation of each engine's own rendering, where
 * leaving them out would let a request with large schemas past the context-window and TPM checks far below its size.
 */
function countToolDefinitionTokens(tools: unknown): number {
  if (!Array.isArray(tools) || tools.length === 0) return 0;
  return countTextTokens(JSON.stringify(tools));
}

/**
 * Tokens counted for an image part: OpenAI's price of a low-detail image, the least any image costs. Its real
 * count depends on its size, which the gateway does not fetch the image to learn; a floor keeps the estimate from
 * refusing a request that fits.
 */
export const IMAGE_PART_TOKENS = 85;

function countContentTokens(content: unknown): number {
  if (typeof content === 'string') return countTextTokens(content);
  if (!Array.isArray(content)) return 0;
  let total = 0;
  for (const part of content) {
    if (typeof part === 'string') total += countTextTokens(part);
    else if (isRecord(part)) {
      if (part.type === 'text' && typeof part.text === 'string') total += countTextTokens(part.text);
      else if (part.type === 'refusal' && typeof part.refusal === 'string') total += countTextTokens(part.refusal);
      else if (part.type === 'image_url') total += IMAGE_PART_TOKENS;
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
