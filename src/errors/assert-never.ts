/**
 * Fails to compile when a switch over a closed set misses a case, and throws if an unchecked value reaches it at run
 * time anyway (data from outside the type system: a row, a message, a configuration written by hand).
 */
export function assertNever(value: never): never {
  throw new Error(`Unexpected value: ${JSON.stringify(value) ?? String(value)}`);
}
