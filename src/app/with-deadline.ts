import type { Logger } from '../observability/logger.js';

/**
 * Waits for `work` at most `ms`, then logs (warn, naming the step) and goes on; the work itself goes on too. For
 * steps that must not hold a process: a shutdown step, or a bus that cannot connect at start. Resolves true when the
 * work finished in time.
 */
export async function withDeadline(
  work: Promise<unknown> | undefined,
  ms: number,
  what: string,
  logger: Logger,
): Promise<boolean> {
  if (work === undefined) return true;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), ms);
  });
  const outcome = await Promise.race([work.then(() => 'done' as const), expired]);
  clearTimeout(timer);
  if (outcome === 'expired') logger.warn({ step: what, deadlineMs: ms }, 'step did not finish in time: going on');
  return outcome === 'done';
}
