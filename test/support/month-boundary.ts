/** Keeps a test's requests and its checks in one billing month (UTC), however close to a month's end it runs. */

/** The start of the UTC month after the one `at` falls in, epoch ms. */
function nextUtcMonthStart(at: number): number {
  const date = new Date(at);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
}

/**
 * Resolves at once unless the UTC month ends within `marginMs`; then only once the next month has begun. What a test
 * does in the `marginMs` after it falls in one month. Resolves with that month, `YYYY-MM`.
 */
export async function clearOfMonthEnd(marginMs: number): Promise<string> {
  const now = Date.now();
  const boundary = nextUtcMonthStart(now);
  if (boundary - now < marginMs) await new Promise((resolve) => setTimeout(resolve, boundary - now + 100));
  return new Date().toISOString().slice(0, 7);
}
