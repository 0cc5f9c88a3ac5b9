/**
 * The o200k_base byte-pair ranks, kept off the V8 heap: every token's bytes in one `Uint8Array`, found through an
 * open-addressing hash table in an `Int32Array`. About 5 MB of typed arrays, which the garbage collector never walks.
 *
 * Why not the library's own tables: gpt-tokenizer holds the 200,000 tokens as JavaScript strings in a `Map` and an
 * array, 21 MB of heap that every mark-compact walks. In the gateway that made each full collection ~20 ms longer
 * (24 ms instead of 2.6 ms for the tokenizer's module alone, measured with `--expose-gc`), and those pauses were most
 * of the p99 latency at 1,000 req/s. tiktoken's WASM build keeps its table off-heap but rescans long pieces (O(n²),
 * see `long-piece-merge.ts`) and is not a dependency here. So the ranks are read from the `.tiktoken` file that
 * gpt-tokenizer ships (one `base64-bytes rank` line per token) into typed arrays; the split pattern and the merge rule
 * are the encoding's, and `token-counter.test.ts` holds every count against gpt-tokenizer's.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** Looks up byte sequences among an encoding's tokens. */
export class BpeRanks {
  /** The longest token's length in bytes: a longer sequence is never a token. */
  readonly maxTokenBytes: number;
  /** Number of tokens. */
  readonly size: number;

  private constructor(
    /** All tokens' bytes, token after token in rank order. */
    private readonly bytes: Uint8Array,
    /** Token `rank` is `bytes[starts[rank]]` up to `starts[rank + 1]`. */
    private readonly starts: Int32Array,
    /** Open addressing, linear probing: `rank + 1` per slot, 0 when empty. Its length is a power of two. */
    private readonly slots: Int32Array,
  ) {
    this.size = starts.length - 1;
    let longest = 0;
    for (let rank = 0; rank < this.size; rank++) {
      longest = Math.max(longest, (starts[rank + 1] as number) - (starts[rank] as number));
    }
    this.maxTokenBytes = longest;
  }

  /**
   * Reads a tiktoken ranks file: one token per line, its bytes in base64, a space, its rank, in rank order from 0
   * (true of every published encoding); anything else throws. Decoded straight from the file's bytes into the
   * typed arrays: no string or buffer per line, so loading leaves no garbage for the first collections to sweep.
   */
  static fromTiktokenFile(file: string): BpeRanks {
    const text = readFileSync(file);
    // Lines, and an upper bound of the decoded bytes (three per four base64 characters).
    let lines = 0;
    for (let index = 0; index < text.length; index++) if (text[index] === NEWLINE) lines++;
    if (text.length > 0 && text[text.length - 1] !== NEWLINE) lines++;
    const bytes = new Uint8Array(Math.ceil((text.length * 3) / 4));
    const starts = new Int32Array(lines + 1);
    let count = 0;
    let written = 0;
    let line = 1;
    for (let at = 0; at < text.length; line++) {
      let end = text.indexOf(NEWLINE, at);
      if (end === -1) end = text.length;
      if (end > at) {
        const space = text.indexOf(SPACE, at);
        if (space <= at || space >= end) throw new Error(`${file}:${line}: not a "base64 rank" line`);
        const rank = parseRank(text, space + 1, end);
        if (rank < 0) throw new Error(`${file}:${line}: not a "base64 rank" line`);
        if (rank !== count) throw new Error(`${file}:${line}: rank ${rank} where rank ${count} was due`);
        starts[count++] = written;
        const decoded = decodeBase64(text, at, space, bytes, written);
        if (decoded < 0) throw new Error(`${file}:${line}: not a "base64 rank" line`);
        written += decoded;
      }
      at = end + 1;
    }
    starts[count] = written;
    return BpeRanks.build(bytes.slice(0, written), starts.slice(0, count + 1));
  }

  private static build(bytes: Uint8Array, starts: Int32Array): BpeRanks {
    const count = starts.length - 1;
    // At most half full: probes stay short.
    let capacity = 1;
    while (capacity < count * 2) capacity *= 2;
    const slots = new Int32Array(capacity);
    const mask = capacity - 1;
    for (let rank = 0; rank < count; rank++) {
      let slot = hashBytes(bytes, starts[rank] as number, starts[rank + 1] as number) & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = rank + 1;
    }
    return new BpeRanks(bytes, starts, slots);
  }

  /** The rank of all of `bytes`, or `undefined` when they are not a token (the shape `mergeLongPiece` takes). */
  readonly rankOf = (bytes: Uint8Array): number | undefined => {
    const rank = this.rank(bytes, 0, bytes.length);
    return rank < 0 ? undefined : rank;
  };

  /** The rank of `piece[start..end)`, or -1 when those bytes are not a token. */
  rank(piece: Uint8Array, start: number, end: number): number {
    const length = end - start;
    if (length > this.maxTokenBytes || length <= 0) return -1;
    const slots = this.slots;
    const mask = slots.length - 1;
    const bytes = this.bytes;
    const starts = this.starts;
    for (let slot = hashBytes(piece, start, end) & mask; ; slot = (slot + 1) & mask) {
      const entry = slots[slot] as number;
      if (entry === 0) return -1;
      const rank = entry - 1;
      const tokenStart = starts[rank] as number;
      if ((starts[entry] as number) - tokenStart !== length) continue;
      let index = 0;
      while (index < length && bytes[tokenStart + index] === piece[start + index]) index++;
      if (index === length) return rank;
    }
  }
}

const NEWLINE = 0x0a;
const SPACE = 0x20;
const EQUALS = 0x3d;
/** The value of each base64 character (standard alphabet), -1 for any other byte. */
const BASE64_VALUES = (() => {
  const values = new Int8Array(256).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let index = 0; index < alphabet.length; index++) values[alphabet.charCodeAt(index)] = index;
  return values;
})();

/** The decimal number in `text[start..end)`, or -1 when it is not one. */
function parseRank(text: Uint8Array, start: number, end: number): number {
  if (end <= start || end - start > 9) return -1;
  let rank = 0;
  for (let index = start; index < end; index++) {
    const digit = (text[index] as number) - 0x30;
    if (digit < 0 || digit > 9) return -1;
    rank = rank * 10 + digit;
  }
  return rank;
}

/**
 * Decodes the base64 in `text[start..end)` (length a multiple of four, `=` padding only at the end) into `out` from
 * `offset`; returns the bytes written, or -1 when it is not base64.
 */
function decodeBase64(text: Uint8Array, start: number, end: number, out: Uint8Array, offset: number): number {
  if ((end - start) % 4 !== 0 || end === start) return -1;
  let padding = 0;
  if (text[end - 1] === EQUALS) padding = text[end - 2] === EQUALS ? 2 : 1;
  let written = offset;
  for (let index = start; index < end; index += 4) {
    const last = index + 4 === end;
    const a = BASE64_VALUES[text[index] as number] as number;
    const b = BASE64_VALUES[text[index + 1] as number] as number;
    const c = last && padding === 2 ? 0 : (BASE64_VALUES[text[index + 2] as number] as number);
    const d = last && padding >= 1 ? 0 : (BASE64_VALUES[text[index + 3] as number] as number);
    if ((a | b | c | d) < 0) return -1;
    const triple = (a << 18) | (b << 12) | (c << 6) | d;
    out[written++] = triple >> 16;
    if (!last || padding < 2) out[written++] = (triple >> 8) & 0xff;
    if (!last || padding < 1) out[written++] = triple & 0xff;
  }
  return written - offset;
}

/** FNV-1a over `bytes[start..end)`, 32 bits. */
function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let hash = 0x811c9dc5;
  for (let index = start; index < end; index++) hash = Math.imul(hash ^ (bytes[index] as number), 0x01000193);
  return hash >>> 0;
}

/** The `.tiktoken` file of an encoding as gpt-tokenizer ships it (`data/<encoding>.tiktoken`). */
export function shippedRanksFile(encoding: string): string {
  // The package's exports map has no entry for its data folder: find its root from its CommonJS entry point.
  const entry = createRequire(import.meta.url).resolve('gpt-tokenizer');
  return path.join(path.dirname(path.dirname(entry)), 'data', `${encoding}.tiktoken`);
}
