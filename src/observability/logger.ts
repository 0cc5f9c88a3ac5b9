/**
 * Structured JSON logs (pino). Secrets never reach a log line: authorization headers, API keys, prompts and
 * completions are not logged, and the redaction list below catches them if a caller passes them by mistake.
 */
import { type Logger, pino } from 'pino';

/** Options of `createLogger`. */
export interface LoggerOptions {
  /** pino level. Default `info`. */
  level?: string;
  /** Write synchronously (tests, CLI). Default false: a buffered asynchronous destination. */
  sync?: boolean;
  /** Where lines go. Default standard output. */
  destination?: NodeJS.WritableStream;
}

/** The process logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'tollgate' },
      redact: {
        paths: [
          'authorization',
          'headers.authorization',
          'req.headers.authorization',
          'key',
          'apiKey',
          'api_key',
          'adminToken',
          'messages',
          'prompt',
          'input',
          'content',
        ],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination({ sync: options.sync ?? false }),
  );
}

export type { Logger };
