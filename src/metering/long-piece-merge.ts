/**
 * Byte-pair merging for long pieces in O(n log n).
 *
 * The tokenizer first splits text into pieces (words, runs of punctuation…) and then merges each piece's bytes pair by
 * pair, always the adjacent pair of lowest rank, leftmost on ties. `gpt-tokenizer` (like tiktoken and its ports) does
 * that by rescanning the whole piece after every merge: O(n²) in the piece's length. Prose never notices, but the
 * o200k split pattern leaves runs of letters, punctuation or whitespace unbounded, so one request carrying a long run
 * without a word break (`"x".repeat(64_000)` took 4 s, 8 MiB would take hours) held the event loop of the whole
 * gateway. No maintained JavaScript tokenizer fixes this (gpt-tokenizer 4, js-tiktoken and ai-tokenizer all rescan),
 * hence this file.
 *
 * Same merges, same order, same tokens: pairs sit in a min-heap keyed by (rank, start offset), so the heap's top is
 * exactly the pair the rescan would pick; a merge changes only the two pairs beside it, which are pushed again, and
 * entries made stale by a merge are skipped when popped.
 */

/** Looks up the rank of a byte sequence; `undefined` when it is not a token. */
export type RankOf = (bytes: Uint8Array) => number | undefined;

// A heap entry packs (rank, start) into one double: rank · 2^32 + start. Ranks are below 2^20 and pieces below 2^32
// bytes, so the product stays under 2^53 and compares exactly like the pair.
const startSpan = 2 ** 32;
// Slots of the pair-rank cache; a power of two.
const pairCacheSize = 1 << 14;

/**
 * Tokens of one piece, identical to the lowest-rank-first merge. `maxTokenBytes` is the longest token's length: a
 * pair longer than that cannot be a token and is not looked up.
 */
export function mergeLongPiece(piece: Uint8Array, rankOf: RankOf, maxTokenBytes: number): number[] {
  const length = piece.length;
  if (length === 0) return [];
  // Parts are identified by their start offset, which never changes while the part lives: a merge extends the left
  // part and removes the right one. Every part is a token (single bytes are, and a merge makes one), so a pair's rank
  // depends only on its two parts' ranks, and is cached by them.
  const next = new Int32Array(length);
  const previous = new Int32Array(length);
  const partRank = new Int32Array(length);
  const pairRank = new Float64Array(length);
  const alive = new Uint8Array(length).fill(1);
  const byteRanks = new Int32Array(256).fill(-1);
  for (let start = 0; start < length; start++) {
    next[start] = start + 1; // `length` marks the end
    previous[start] = start - 1;
    const byte = piece[start] as number;
    let rank = byteRanks[byte] as number;
    if (rank < 0) {
      rank = rankOf(piece.subarray(start, start + 1)) ?? -1;
      if (rank < 0) throw new Error(`byte ${byte} is not a token`);
      byteRanks[byte] = rank;
    }
    partRank[start] = rank;
  }
  // A direct-mapped cache of pair ranks by the pair's token ranks (a Map keyed by doubles allocated on every lookup).
  const cacheLeft = new Int32Array(pairCacheSize).fill(-1);
  const cacheRight = new Int32Array(pairCacheSize);
  const cacheRank = new Float64Array(pairCacheSize);

  const rankPair = (start: number): number => {
    const second = next[start] as number;
    if (second >= length) return Number.POSITIVE_INFINITY;
    const left = partRank[start] as number;
    const right = partRank[second] as number;
    const slot = (Math.imul(left, 0x9e3779b1) ^ right) & (pairCacheSize - 1);
    if (cacheLeft[slot] === left && cacheRight[slot] === right) return cacheRank[slot] as number;
    const end = next[second] as number;
    const rank =
      end - start > maxTokenBytes
        ? Number.POSITIVE_INFINITY
        : (rankOf(piece.subarray(start, end)) ?? Number.POSITIVE_INFINITY);
    cacheLeft[slot] = left;
    cacheRight[slot] = right;
    cacheRank[slot] = rank;
    return rank;
  };
  const setPair = (start: number): void => {
    const rank = rankPair(start);
    pairRank[start] = rank;
    if (rank !== Number.POSITIVE_INFINITY) heap.push(rank * startSpan + start);
  };

  const initial: number[] = [];
  for (let start = 0; start < length - 1; start++) {
    const rank = rankPair(start);
    pairRank[start] = rank;
    if (rank !== Number.POSITIVE_INFINITY) initial.push(rank * startSpan + start);
  }
  pairRank[length - 1] = Number.POSITIVE_INFINITY;
  const heap = MinHeap.from(initial);

  while (heap.size > 0) {
    const key = heap.pop();
    const rank = Math.floor(key / startSpan); // exact: a power-of-two divisor; `%` on doubles is a slow fmod call
    const start = key - rank * startSpan;
    // A pair's bytes only grow when it changes, and a rank names one byte sequence, so a live entry is one whose rank
    // is still its part's current pair rank.
    if (alive[start] === 0 || pairRank[start] !== rank) continue;
    const removed = next[start] as number;
    const after = next[removed] as number;
    alive[removed] = 0;
    next[start] = after;
    if (after < length) previous[after] = start;
    partRank[start] = rank;
    setPair(start);
    const before = previous[start] as number;
    if (before >= 0) setPair(before);
  }

  const tokens: number[] = [];
  for (let start = 0; start < length; start = next[start] as number) tokens.push(partRank[start] as number);
  return tokens;
}

/** A binary min-heap of doubles in a typed array (no allocation per entry); the merge is its only user. */
class MinHeap {
  private items: Float64Array;
  size: number;

  private constructor(items: Float64Array, size: number) {
    this.items = items;
    this.size = size;
  }

  /** A heap of `values`, built bottom-up in O(n). */
  static from(values: readonly number[]): MinHeap {
    const heap = new MinHeap(new Float64Array(Math.max(16, values.length * 2)), values.length);
    heap.items.set(values);
    for (let index = (values.length >> 1) - 1; index >= 0; index--) heap.siftDown(index, heap.items[index] as number);
    return heap;
  }

  push(value: number): void {
    if (this.size === this.items.length) {
      const grown = new Float64Array(this.items.length * 2);
      grown.set(this.items);
      this.items = grown;
    }
    const items = this.items;
    let index = this.size++;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentValue = items[parent] as number;
      if (parentValue <= value) break;
      items[index] = parentValue;
      index = parent;
    }
    items[index] = value;
  }

  pop(): number {
    const top = this.items[0] as number;
    const last = this.items[--this.size] as number;
    if (this.size > 0) this.siftDown(0, last);
    return top;
  }

  /** Places `value` at `index` or below, moving smaller children up. */
  private siftDown(start: number, value: number): void {
    const items = this.items;
    const size = this.size;
    let index = start;
    while (true) {
      const left = 2 * index + 1;
      if (left >= size) break;
      const right = left + 1;
      let child = left;
      if (right < size && (items[right] as number) < (items[left] as number)) child = right;
      if ((items[child] as number) >= value) break;
      items[index] = items[child] as number;
      index = child;
    }
    items[index] = value;
  }
}
