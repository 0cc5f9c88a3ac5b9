/**
 * A young generation of 64 MiB per semi-space unless the flags already choose one: a request's objects live for the
 * milliseconds it is in flight, and with Node's default (16 MiB) many survive two scavenges at load, get promoted and
 * end in mark-compact pauses on the event loop (`npm run bench` at 1,000 req/s: p99 +17 → +10 ms, median of three
 * rounds). `npm start` passes the same flag to the single-process server.
 */
export function withServingHeap(execArgv: readonly string[]): string[] {
  return execArgv.some((flag) => flag.startsWith('--max-semi-space-size'))
    ? [...execArgv]
    : [...execArgv, '--max-semi-space-size=64'];
}
