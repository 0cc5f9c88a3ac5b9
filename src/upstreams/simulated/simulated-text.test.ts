import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countTextTokens } from '../../metering/token-counter.js';
import { generateText, generateTokens, seedFromText, simulatedVocabulary } from './simulated-text.js';

describe('simulated text', () => {
  it('has a vocabulary of single-token words (with a leading space and capitalized)', () => {
    expect(simulatedVocabulary.length).toBeGreaterThanOrEqual(128);
    for (const word of simulatedVocabulary) {
      expect(countTextTokens(` ${word}`)).toBe(1);
      expect(countTextTokens(` ${word[0]!.toUpperCase()}${word.slice(1)}`)).toBe(1);
    }
  });

  it('has exactly n tokens for every n and seed', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (n, seed) => {
        const pieces = generateTokens(seed, n);
        expect(pieces).toHaveLength(n);
        const text = generateText(seed, n);
        expect(pieces.join('')).toBe(text);
        expect(countTextTokens(text)).toBe(n);
        for (const piece of pieces.slice(0, 50)) expect(countTextTokens(piece)).toBe(1);
      }),
      { numRuns: 150 },
    );
  });

  it('is deterministic per seed, differs across seeds, and prefixes agree', () => {
    expect(generateText(7, 300)).toBe(generateText(7, 300));
    expect(generateText(7, 300)).not.toBe(generateText(8, 300));
    expect(generateText(7, 300).startsWith(generateText(7, 100))).toBe(true);
    expect(generateText(7, 0)).toBe('');
    expect(generateText(7, 40)).toMatch(/^[A-Z][a-z]+[ ,.]/);
  });

  it('derives seeds from text', () => {
    expect(seedFromText('hello')).toBe(seedFromText('hello'));
    expect(seedFromText('hello')).not.toBe(seedFromText('hellp'));
    // FNV-1a of the empty string is the offset basis.
    expect(seedFromText('')).toBe(0x811c9dc5);
  });
});
