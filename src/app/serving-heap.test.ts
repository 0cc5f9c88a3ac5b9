import { describe, expect, it } from 'vitest';
import { withServingHeap } from './serving-heap.js';

describe('withServingHeap', () => {
  it('adds the serving young-generation size unless the flags choose one', () => {
    expect(withServingHeap(['--enable-source-maps'])).toEqual(['--enable-source-maps', '--max-semi-space-size=64']);
    expect(withServingHeap(['--max-semi-space-size=16'])).toEqual(['--max-semi-space-size=16']);
    expect(withServingHeap([])).toEqual(['--max-semi-space-size=64']);
  });
});
