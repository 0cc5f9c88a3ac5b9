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
   * Reads a tiktoken ranks file: one token per line, its bytes in base64, a space, its rank. Ranks must be distinct
   * and run from 0 without a gap (true of every published encoding); anything else throws.
   */
  static fromTiktokenFile(file: string): BpeRanks {
    const lines = readFileSync(file, 'latin1').split('\n');
    const decoded: Buffer[] = [];
    let total = 0;
    for (let index = 0; index < lines.length; index++) {
      const line = lines[index] as string;
      if (line.length === 0) continue;
      const space = line.indexOf(' ');
      const rank = Number(line.slice(space + 1));
      if (space <= 0 || !Number.isInteger(rank) || rank < 0 || decoded[rank] !== undefined) {
        throw new Error(`${file}:${index + 1}: not a "base64 rank" line with a new rank`);
      }
      const token = Buffer.from(line.slice(0, space), 'base64');
      decoded[rank] = token;
      total += token.length;
    }
    const bytes = new Uint8Array(total);
    const starts = new Int32Array(decoded.length + 1);
    let offset = 0;
    for (let rank = 0; rank < decoded.length; rank++) {
      const token = decoded[rank];
      if (token === undefined) throw new Error(`${file}: no token has rank ${rank}`);
      starts[rank] = offset;
      bytes.set(token, offset);
      offset += token.length;
    }
    starts[decoded.length] = offset;
    return BpeRanks.build(bytes, starts);
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
