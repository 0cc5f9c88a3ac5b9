/**
 * Whether an error thrown by a store call means the store could not be reached or could not serve now — a reset or
 * refused connection, a server shutting down or out of connections, SQLite busy past its timeout — rather than a
 * query or a program that is wrong. The HTTP layer answers the first with a retryable 503 and the second with a 500.
 *
 * Neither `pg` nor `better-sqlite3` has such a classification: `pg` surfaces socket errors by their `code`, its own
 * connection losses as plain `Error`s known only by their message, and server refusals by SQLSTATE.
 */

/** Socket-level codes: nothing reached the server, or the connection broke. */
const SOCKET_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * SQLSTATEs: class 08 (connection exception), 57P01–57P03 (admin or crash shutdown, cannot connect now), 53300 (too
 * many connections).
 */
const SQLSTATE = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/;

/** What `pg` and `pg-pool` throw when a connection is lost or cannot be made in time. */
const PG_CONNECTION_MESSAGE =
  /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect)/;

/** SQLite's codes for a database locked by another connection past the busy timeout. */
const SQLITE_BUSY = /^SQLITE_BUSY/;

export function isStoreUnreachable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (SOCKET_CODES.has(code) || SQLSTATE.test(code) || SQLITE_BUSY.test(code))) {
    return true;
  }
  return PG_CONNECTION_MESSAGE.test(error.message);
}
