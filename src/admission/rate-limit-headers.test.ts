import { describe, expect, it } from 'vitest';
import { formatRateLimitDuration, RATE_LIMIT_HEADER_NAMES, rateLimitHeaders } from './rate-limit-headers.js';

describe('formatRateLimitDuration', () => {
  it.each([
    [0, '0s'],
    [0.2, '1ms'],
    [250, '250ms'],
    [999, '999ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [1020, '1.02s'],
    [59_999, '59.999s'],
    [60_000, '1m0s'],
    [360_000, '6m0s'],
    [60_750, '1m0.75s'],
    [3_600_000, '1h0m0s'],
    [3_723_000, '1h2m3s'],
    [86_400_000, '24h0m0s'],
  ])('%d ms → %s', (ms, expected) => {
    expect(formatRateLimitDuration(ms)).toBe(expected);
  });
});

describe('rateLimitHeaders', () => {
  it('sets exactly the headers RATE_LIMIT_HEADER_NAMES lists (the ones a browser page may read)', () => {
    const state = {
      requests: { limit: 10, remaining: 9, resetMs: 6_000 },
      tokens: { limit: 1_000, remaining: 900, resetMs: 60_000 },
    };
    expect(Object.keys(rateLimitHeaders(state, 1_500)).sort()).toEqual([...RATE_LIMIT_HEADER_NAMES].sort());
  });

  it('omits the dimensions no scope limits', () => {
    expect(rateLimitHeaders({})).toEqual({});
    expect(rateLimitHeaders({ tokens: { limit: 10, remaining: 3, resetMs: 6000 } })).toEqual({
      'x-ratelimit-limit-tokens': '10',
      'x-ratelimit-remaining-tokens': '3',
      'x-ratelimit-reset-tokens': '6s',
    });
  });

  it('gives retry-after in whole seconds, rounded up, at least 1', () => {
    expect(rateLimitHeaders({}, 1)['retry-after']).toBe('1');
    expect(rateLimitHeaders({}, 1000)['retry-after']).toBe('1');
    expect(rateLimitHeaders({}, 1001)['retry-after']).toBe('2');
    expect(rateLimitHeaders({}, 60_750)['retry-after']).toBe('61');
  });
});
