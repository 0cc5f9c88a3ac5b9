import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../errors/gateway-error.js';
import { configuredLoggerOptions, createLogger, type LoggerOptions, redactError } from './logger.js';

const secret = 'the merger closes on Friday';

/** Logs `{ err: error }` through a logger like the gateway's and returns the line, parsed. */
function logged(error: unknown, options: LoggerOptions = {}): { text: string; err: any } {
  const destination = new PassThrough();
  let text = '';
  destination.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  createLogger({ sync: true, destination, ...options }).error({ err: error }, 'failed');
  return { text, err: JSON.parse(text).err };
}

function parseFailure(text: string): SyntaxError {
  try {
    JSON.parse(text);
  } catch (error) {
    return error as SyntaxError;
  }
  throw new Error('parsed');
}

describe('errors in logs', () => {
  it('lose the text a JSON parse error quotes, and keep its class, what failed and where', () => {
    // V8 quotes the text it could not parse: an upstream's reply, or a batch line, holds the prompt or the answer.
    for (const text of [secret, `{"reply": x${secret}}`]) {
      const error = parseFailure(text);
      expect(error.message).toContain('merge');
      const { text: line, err } = logged(error);
      expect(line).not.toContain('merge');
      expect(err.type).toBe('SyntaxError');
      expect(err.message).toMatch(/JSON/);
      expect(err.stack).toMatch(/^\s+at .*logger\.test\.ts/m);
    }
  });

  it('lose the data a store error carries, and keep the codes and names that say what failed', () => {
    const error = Object.assign(new Error(`invalid input syntax for type json: "${secret}"`), {
      code: '22P02',
      severity: 'ERROR',
      table: 'files',
      detail: `Token "${secret}" is invalid.`,
      where: `JSON data, line 1: ${secret}`,
      command: { name: 'set', args: [secret] },
      position: 12,
    });
    const { text, err } = logged(error);
    expect(text).not.toContain('merger');
    expect(err).toMatchObject({ type: 'Error', code: '22P02', severity: 'ERROR', table: 'files', position: 12 });
    expect(err.message).toBe('invalid input syntax for type json: [quoted text redacted]');
    expect(err).not.toHaveProperty('detail');
    expect(err).not.toHaveProperty('command');
  });

  it('redact a quote never closed, but not an apostrophe', () => {
    expect((redactError(new Error(`at or near "${secret}`)) as { message: string }).message).toBe(
      'at or near [quoted text redacted]',
    );
    const plain = "The gateway could not read your key's limits: its store is unavailable.";
    expect((redactError(new Error(plain)) as { message: string }).message).toBe(plain);
  });

  it("redact causes the same way, and keep a gateway error's own fields", () => {
    const error = new StoreUnavailableError(new Error(`duplicate key "${secret}"`), 'your plan');
    const { text, err } = logged(error);
    expect(text).not.toContain('merger');
    expect(err).toMatchObject({ type: 'StoreUnavailableError', status: 503, code: 'store_unavailable' });
    expect(err.message).toBe(error.message);
    expect(err.cause).toMatchObject({ type: 'Error', message: 'duplicate key [quoted text redacted]' });
  });

  it('are logged whole with log.verbatim_errors', () => {
    const { err } = logged(parseFailure(secret), configuredLoggerOptions({ level: 'info', verbatim_errors: true }));
    expect(err.message).toContain('the merge');
  });
});
