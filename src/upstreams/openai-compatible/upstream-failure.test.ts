import { errors } from 'undici';
import { describe, expect, it } from 'vitest';
import { UpstreamError, UpstreamTimeoutError } from '../../errors/gateway-error.js';
import { findUpstreamError, parseRetryAfter, toUpstreamFailure, upstreamStatusError } from './upstream-failure.js';

function systemError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:9`), { code });
}

describe('toUpstreamFailure', () => {
  it('maps undici timeouts to their phase', () => {
    const cases = [
      [new errors.ConnectTimeoutError(), 'connect'],
      [new errors.HeadersTimeoutError(), 'first_byte'],
      [new errors.BodyTimeoutError(), 'idle'],
    ] as const;
    for (const [error, phase] of cases) {
      const mapped = toUpstreamFailure(error, 'vllm-a');
      expect(mapped).toBeInstanceOf(UpstreamTimeoutError);
      expect((mapped as UpstreamTimeoutError).phase).toBe(phase);
      expect(mapped.status).toBe(504);
      expect(mapped.retryable).toBe(true);
    }
  });

  it('maps connect failures to upstream_unreachable, also inside an AggregateError', () => {
    for (const error of [
      systemError('ECONNREFUSED'),
      systemError('ENOTFOUND'),
      systemError('EHOSTUNREACH'),
      new AggregateError([new Error('no code'), systemError('ECONNREFUSED')], 'all addresses failed'),
    ]) {
      const mapped = toUpstreamFailure(error, 'vllm-a');
      expect(mapped).toBeInstanceOf(UpstreamError);
      expect(mapped.code).toBe('upstream_unreachable');
      expect(mapped.retryable).toBe(true);
    }
  });

  it('maps broken connections to upstream_connection_lost', () => {
    for (const error of [
      new errors.SocketError('other side closed'),
      systemError('ECONNRESET'),
      new errors.ResponseContentLengthMismatchError(),
      Object.assign(new Error('Parse Error'), { code: 'HPE_INVALID_CHUNK_SIZE' }),
    ]) {
      expect(toUpstreamFailure(error, 'vllm-a').code).toBe('upstream_connection_lost');
    }
  });

  it('passes gateway upstream errors through and wraps anything else as upstream_error', () => {
    const original = new UpstreamError('x', { code: 'upstream_stream_truncated' });
    expect(toUpstreamFailure(original, 'vllm-a')).toBe(original);
    const mapped = toUpstreamFailure(new TypeError('boom'), 'vllm-a');
    expect(mapped.code).toBe('upstream_error');
    expect(mapped.message).not.toContain('boom');
  });
});

describe('parseRetryAfter', () => {
  const now = Date.UTC(2025, 0, 1, 12, 0, 0);
  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('7', now)).toBe(7);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter(['30', '40'], now)).toBe(30);
    expect(parseRetryAfter('Wed, 01 Jan 2025 12:02:00 GMT', now)).toBe(120);
    expect(parseRetryAfter('Wed, 01 Jan 2025 11:00:00 GMT', now)).toBe(0);
  });
  it('returns undefined for absent or unreadable values', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-5', now)).toBeUndefined();
  });
});

describe('upstreamStatusError', () => {
  it('prefers retry-after-ms over retry-after', () => {
    const error = upstreamStatusError('a', 429, { 'retry-after-ms': '1500', 'retry-after': '9' }, '', 0);
    expect(error.retryAfterSeconds).toBe(1.5);
  });

  it('keeps the status, and forwards the message of client errors only', () => {
    const body = JSON.stringify({ error: { message: 'secret internals', type: 'server_error' } });
    const tooLong = upstreamStatusError('a', 400, {}, JSON.stringify({ error: { message: 'prompt too long' } }), 0);
    expect(tooLong.message).toBe('prompt too long');
    expect(tooLong.retryable).toBe(false);
    // A model the upstream does not know is the deployment's mistake: retried elsewhere, its text (naming the
    // upstream's model) kept back.
    const notFound = upstreamStatusError('a', 404, {}, JSON.stringify({ error: { message: 'no model up-x' } }), 0);
    expect(notFound.message).not.toContain('up-x');
    expect(notFound.retryable).toBe(true);
    const serverError = upstreamStatusError('a', 503, {}, body, 0);
    expect(serverError.message).not.toContain('secret');
    expect(serverError.upstreamStatus).toBe(503);
    expect(serverError.retryable).toBe(true);
    const forbidden = upstreamStatusError('a', 403, {}, JSON.stringify({ error: { message: 'key sk-1 blocked' } }), 0);
    expect(forbidden.message).not.toContain('sk-1');
    expect(forbidden.retryable).toBe(true);
  });

  it('survives a non-JSON error page and truncates long messages', () => {
    const page = upstreamStatusError('a', 502, {}, '<html><body>Bad Gateway</body></html>', 0);
    expect(page.code).toBe('upstream_http_error');
    const long = upstreamStatusError('a', 400, {}, JSON.stringify({ error: { message: 'x'.repeat(5_000) } }), 0);
    expect(long.message.length).toBe(1_000);
  });
});

describe('findUpstreamError', () => {
  it('reads the OpenAI shape, vLLM flat shape and a bare string', () => {
    expect(findUpstreamError({ error: { message: 'm', param: 'p' } })).toEqual({ message: 'm', param: 'p' });
    expect(findUpstreamError({ object: 'error', message: 'flat', param: null })).toEqual({
      message: 'flat',
      param: undefined,
    });
    expect(findUpstreamError({ error: 'plain' })).toEqual({ message: 'plain', param: undefined });
    expect(findUpstreamError({ choices: [] })).toBeUndefined();
    expect(findUpstreamError(null)).toBeUndefined();
  });
});
