import { describe, expect, it } from 'vitest';
import { countPromptTokensOffThread, countTextTokensOffThread, offThreadCharacters } from './prompt-token-pool.js';
import { countPromptTokens, countTextTokens } from './token-counter.js';

describe('countPromptTokensOffThread', () => {
  it('counts short and long prompts as countPromptTokens does', async () => {
    const short = { messages: [{ role: 'user', content: 'How many tokens is this?' }] };
    const long = { prompt: ['alpha beta gamma '.repeat(offThreadCharacters / 8), [1, 2, 3]] };
    expect(await countPromptTokensOffThread('chat', short)).toBe(countPromptTokens('chat', short));
    expect(await countPromptTokensOffThread('completions', long)).toBe(countPromptTokens('completions', long));
  });

  it('leaves the event loop free while it counts a long prompt', async () => {
    // Two million characters without a word break take over a second to count. Counted in place, no timer could
    // fire before the count's promise settles; counted on a worker, the interval keeps ticking.
    let ticks = 0;
    const interval = setInterval(() => ticks++, 1);
    try {
      const body = { messages: [{ role: 'user', content: 'x'.repeat(2_000_000) }] };
      const counted = await countPromptTokensOffThread('chat', body);
      expect(ticks).toBeGreaterThan(0);
      expect(counted).toBe(countPromptTokens('chat', body));
    } finally {
      clearInterval(interval);
    }
  });

  it('counts an output text in place when short and on the worker when long, as countTextTokens does', async () => {
    const short = 'A short answer.';
    expect(countTextTokensOffThread(short)).toBe(countTextTokens(short));
    const long = `${'Delivered tokens are billed exactly. '.repeat(2000)}${'z'.repeat(50_000)}`;
    const counted = countTextTokensOffThread(long);
    expect(counted).toBeInstanceOf(Promise);
    expect(await counted).toBe(countTextTokens(long));
  });
});
