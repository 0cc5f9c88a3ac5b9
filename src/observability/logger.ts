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
  /**
   * Log errors as they are (`log.verbatim_errors`): their whole message and stack, and every field they carry.
   * Default false: `redactError`.
   */
  verbatimErrors?: boolean;
}

/** What the configuration's `log` section sets of a logger. */
export function configuredLoggerOptions(log: { level: string; verbatim_errors: boolean }): LoggerOptions {
  return { level: log.level, verbatimErrors: log.verbatim_errors };
}

/** The process logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'tollgate' },
      serializers: { err: options.verbatimErrors === true ? pino.stdSerializers.err : redactError },
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

/**
 * String fields of an error that name things (codes, system calls, addresses, SQL identifiers, OpenAI error fields)
 * and are kept as they are (`type` is always the error's class, as in pino's own serializer). Any other string field may quote data: PostgreSQL's `detail` quotes the row it refused,
 * ioredis's `command` its arguments.
 */
const NAMING_FIELDS = new Set([
  'code',
  'errno',
  'syscall',
  'address',
  'param',
  'phase',
  'upstreamCode',
  'severity',
  'routine',
  'schema',
  'table',
  'column',
  'dataType',
  'constraint',
]);

/** Nested causes logged at most. */
const MAX_CAUSE_DEPTH = 4;

/**
 * A quoted span: from an opening quote to the last quote of its kind (a quoted JSON snippet holds quotes itself), or
 * to the end when it is never closed. A `'` after a letter or digit is an apostrophe, not a quote.
 */
const QUOTED = /"[\s\S]*"|"[\s\S]*|(?<![\p{L}\p{N}])'[\s\S]*'|(?<![\p{L}\p{N}])'[\s\S]*|`[\s\S]*`|`[\s\S]*/gu;

/**
 * What `{ err }` logs by default: the error's class, its message and stack with every quoted span replaced, the
 * fields that name things, its numbers and flags, and its causes the same way.
 *
 * Messages quote what they failed on: V8's `JSON.parse` quotes the text it could not parse (an upstream's answer, a
 * batch line), PostgreSQL the value it refused. So a quoted span is cut whatever it holds; `log.verbatim_errors`
 * logs errors whole when an operator needs the text. pino's own serializer has no such option, hence this one.
 */
export function redactError(error: unknown, depth = 0): unknown {
  if (!(error instanceof Error)) {
    return typeof error === 'string' ? redactText(error) : error;
  }
  const message = redactText(error.message);
  const serialized: Record<string, unknown> = { type: error.constructor?.name ?? error.name, message };
  if (typeof error.stack === 'string') serialized.stack = redactStack(error.stack, error.message, message);
  for (const [field, value] of Object.entries(error)) {
    if (field in serialized) continue;
    if (typeof value === 'number' || typeof value === 'boolean') serialized[field] = value;
    else if (typeof value === 'string' && NAMING_FIELDS.has(field)) serialized[field] = value;
  }
  if (depth < MAX_CAUSE_DEPTH) {
    if (error.cause !== undefined) serialized.cause = redactError(error.cause, depth + 1);
    if (error instanceof AggregateError) serialized.errors = error.errors.map((each) => redactError(each, depth + 1));
  }
  return serialized;
}

function redactText(text: string): string {
  return text.replace(QUOTED, '[quoted text redacted]');
}

/** The stack with its message part redacted as the message; the frames (file, line, function) are kept. */
function redactStack(stack: string, message: string, redacted: string): string {
  if (message !== '' && stack.includes(message)) return stack.replace(message, () => redacted);
  // A stack that does not repeat its message: only the frames are known to be free of data.
  return stack
    .split('\n')
    .filter((line) => line.trimStart().startsWith('at '))
    .join('\n');
}

export type { Logger };
