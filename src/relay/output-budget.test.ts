import { describe, expect, it } from 'vitest';
import { maxOutputTokens, outputLimitParam, outputSequences } from './output-budget.js';

describe('the output a request may produce', () => {
  it('counts every choice of a chat request', () => {
    expect(outputSequences('chat', {})).toBe(1);
    expect(outputSequences('chat', { n: 20 })).toBe(20);
    expect(outputSequences('chat', { n: null })).toBe(1);
    expect(maxOutputTokens('chat', { n: 20, max_tokens: 100 }, 4_096)).toBe(2_000);
    expect(maxOutputTokens('chat', { n: 3, max_completion_tokens: 50, max_tokens: 999 }, 4_096)).toBe(150);
    expect(maxOutputTokens('chat', { n: 2 }, 4_096)).toBe(8_192);
  });

  it('counts best_of candidates for each prompt of a legacy completions batch', () => {
    expect(outputSequences('completions', { prompt: 'a' })).toBe(1);
    expect(outputSequences('completions', { prompt: [1, 2, 3] })).toBe(1);
    expect(outputSequences('completions', { prompt: ['a', 'b', 'c'] })).toBe(3);
    expect(outputSequences('completions', { prompt: [[1], [2]], n: 2 })).toBe(4);
    expect(outputSequences('completions', { prompt: ['a', 'b'], n: 2, best_of: 5 })).toBe(10);
    expect(maxOutputTokens('completions', { prompt: ['a', 'b'], best_of: 3, max_tokens: 10 }, 4_096)).toBe(60);
  });

  it('is nothing for embeddings', () => {
    expect(maxOutputTokens('embeddings', { input: 'a', n: 5, max_tokens: 10 }, 4_096)).toBe(0);
  });

  it('names the limit the client used', () => {
    expect(outputLimitParam({ max_completion_tokens: 5 })).toBe('max_completion_tokens');
    expect(outputLimitParam({ max_tokens: 5 })).toBe('max_tokens');
    expect(outputLimitParam({})).toBe('max_tokens');
  });
});
