/**
 * Faults the standalone simulated server can inject, for adapter, retry and failover tests. Written as text
 * (server option or `x-sim-fault` request header), comma-separated, e.g. `slow-first-byte:200,no-usage`:
 *
 * - `hang`: read the request, never answer (until the client or the server closes the connection);
 * - `die-mid-stream[:<chunks>]`: send that many SSE chunks (default 3; half the body of a whole answer), then destroy
 *   the socket;
 * - `no-usage`: never send usage (no usage chunk even when asked; no `usage` field in a whole answer);
 * - `no-done`: end the stream cleanly but without `data: [DONE]`;
 * - `status:<code>`: answer that HTTP status (400–599) with an OpenAI error body (`retry-after: 1` on 429);
 * - `slow-first-byte:<ms>`: wait that long before answering.
 */

import { assertNever } from '../../errors/assert-never.js';
import { InvalidRequestError } from '../../errors/gateway-error.js';

/** The fault names, as written before any `:` argument. */
export const simFaultKinds = ['hang', 'die-mid-stream', 'no-usage', 'no-done', 'status', 'slow-first-byte'] as const;
/** One of `simFaultKinds`. */
export type SimFaultKind = (typeof simFaultKinds)[number];

/** One injected fault. */
export type SimFault =
  | { kind: 'hang' }
  | {
      kind: 'die-mid-stream';
      /** SSE chunks sent before the socket is destroyed. Default 3. */
      afterChunks: number;
    }
  | { kind: 'no-usage' }
  | { kind: 'no-done' }
  | {
      kind: 'status';
      /** HTTP status to answer, 400–599. */
      status: number;
    }
  | {
      kind: 'slow-first-byte';
      /** Delay before the response starts, ms. */
      delayMs: number;
    };

/** The request header that selects faults for one request; it replaces the server's faults when present. */
export const simFaultHeader = 'x-sim-fault';

/** Parses a fault list such as `status:503` or `slow-first-byte:200,no-usage`. Throws `InvalidRequestError`. */
export function parseSimFaults(text: string): SimFault[] {
  const faults: SimFault[] = [];
  for (const item of text.split(',')) {
    const trimmed = item.trim();
    if (trimmed === '') continue;
    const separator = trimmed.indexOf(':');
    const name = separator < 0 ? trimmed : trimmed.slice(0, separator);
    const argument = separator < 0 ? undefined : trimmed.slice(separator + 1);
    if (!isFaultKind(name)) throw invalidFault(trimmed);
    faults.push(parseFault(name, argument, trimmed));
  }
  return faults;
}

function parseFault(kind: SimFaultKind, argument: string | undefined, text: string): SimFault {
  switch (kind) {
    case 'hang':
    case 'no-usage':
    case 'no-done':
      if (argument !== undefined) throw invalidFault(text);
      return { kind };
    case 'die-mid-stream':
      return { kind, afterChunks: argument === undefined ? 3 : integerArgument(argument, 0, 1_000_000, text) };
    case 'status':
      if (argument === undefined) throw invalidFault(text);
      return { kind, status: integerArgument(argument, 400, 599, text) };
    case 'slow-first-byte':
      if (argument === undefined) throw invalidFault(text);
      return { kind, delayMs: integerArgument(argument, 0, 3_600_000, text) };
    default:
      return assertNever(kind);
  }
}

function integerArgument(argument: string, min: number, max: number, text: string): number {
  const value = Number(argument);
  if (!/^\d+$/.test(argument) || value < min || value > max) throw invalidFault(text);
  return value;
}

function isFaultKind(name: string): name is SimFaultKind {
  return (simFaultKinds as readonly string[]).includes(name);
}

function invalidFault(text: string): InvalidRequestError {
  return new InvalidRequestError(`Unknown or malformed simulated fault '${text}'.`, {
    param: simFaultHeader,
    code: 'invalid_fault',
  });
}
