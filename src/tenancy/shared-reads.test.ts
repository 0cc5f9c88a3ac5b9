import { describe, expect, it } from 'vitest';
import { SharedReads } from './shared-reads.js';

describe('SharedReads', () => {
  it('shares a read among the callers of its generation only', async () => {
    const reads = new SharedReads<string>();
    let begun = 0;
    const begin = (answer: string) => () => {
      begun++;
      return Promise.resolve(answer);
    };
    const first = reads.join('k', 0, begin('old'));
    const joined = reads.join('k', 0, begin('unused'));
    const later = reads.join('k', 1, begin('new'));
    const other = reads.join('j', 0, begin('other'));
    expect(await Promise.all([first, joined, later, other])).toEqual(['old', 'old', 'new', 'other']);
    expect(begun).toBe(3);
  });

  it('forgets a read once it has settled, failed or not', async () => {
    const reads = new SharedReads<string>();
    await expect(reads.join('k', 0, () => Promise.reject(new Error('down')))).rejects.toThrow('down');
    expect(await reads.join('k', 0, () => Promise.resolve('up'))).toBe('up');
    expect(await reads.join('k', 0, () => Promise.resolve('again'))).toBe('again');
  });
});
