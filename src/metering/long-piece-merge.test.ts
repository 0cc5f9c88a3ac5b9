import fc from 'fast-check';
import { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { describe, expect, it } from 'vitest';
import { BpeRanks, shippedRanksFile } from './bpe-ranks.js';
import { mergeLongPiece } from './long-piece-merge.js';
import { countTextTokens, longPieceBytes } from './token-counter.js';

const plainText = { disallowedSpecial: new Set<string>() };
const ranks = BpeRanks.fromTiktokenFile(shippedRanksFile('o200k_base'));
/** Tollgate's merge of one piece, over the off-heap ranks. */
const mergeTokens = (piece: string) => mergeLongPiece(Buffer.from(piece), ranks.rankOf, ranks.maxTokenBytes);

// Each alphabet stays inside one class of the o200k split pattern (lowercase letters, other letters, punctuation and
// symbols), so a string drawn from it is a single piece and reaches the merge whole.
const singlePieceAlphabets = ['xy', 'abcdefghijklmnopqrstuvwxyz', 'αβγδε', '日本語中文字', '!?.-_#', '😀🎉✨'];

const singlePiece = fc
  .constantFrom(...singlePieceAlphabets)
  .chain((alphabet) =>
    fc
      .array(fc.constantFrom(...Array.from(alphabet)), { minLength: longPieceBytes + 1, maxLength: 2500 })
      .map((characters) => characters.join('')),
  );

describe('long-piece merge', () => {
  it('gives exactly the tokens of the library merge for pieces past the threshold', () => {
    fc.assert(
      fc.property(singlePiece, (piece) => {
        expect(mergeTokens(piece)).toEqual(encode(piece, plainText));
        expect(countTextTokens(piece)).toBe(encode(piece, plainText).length);
      }),
      { numRuns: 60 },
    );
  });

  it('gives the library merge tokens for runs of one character, the case with the most merges', () => {
    for (const character of ['x', '_', 'é', '語', ' ', '\n']) {
      const run = character.repeat(3000);
      expect(mergeTokens(run)).toEqual(encode(run, plainText));
    }
  });

  it('counts a two-million-character run without a word break (the library merge would take hours)', () => {
    // 'x' runs tokenize periodically (eight to a token), so the long run is 250 copies of an 8,000-character one,
    // which the library's own merge still counts quickly.
    const unit = encode('x'.repeat(8000), plainText).length;
    expect(countTextTokens('x'.repeat(2_000_000))).toBe(250 * unit);
  });
});
