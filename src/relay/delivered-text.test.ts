import { describe, expect, it } from 'vitest';
import { DeliveredText } from './delivered-text.js';

describe('DeliveredText', () => {
  it('reads back every piece in order, across parts and reads, as the concatenation would', () => {
    const delivered = new DeliveredText();
    let expected = '';
    expect(delivered.text).toBe('');
    // Pieces of varied length (empty ones, multi-byte and astral characters) across several parts, read in between.
    for (let index = 0; index < 500; index++) {
      const piece = index % 7 === 0 ? '' : index % 5 === 0 ? `é😀${index}` : ` w${index}`;
      delivered.append(piece);
      expected += piece;
      expect(delivered.length).toBe(expected.length);
      if (index % 45 === 0 || index === 95) expect(delivered.text).toBe(expected);
    }
    expect(delivered.text).toBe(expected);
    expect(delivered.text).toBe(expected);
  });
});
