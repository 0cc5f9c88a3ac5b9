/**
 * Prompt counting that keeps long prompts off the event loop. Counting ordinary text takes 20–30 ms a megabyte
 * here, a long run without word breaks 15–50 times longer (`npm run bench:tokenizer`), so an 8 MiB prompt held every
 * other request of the process for several seconds. Prompts whose text passes `offThreadCharacters` are counted on a
 * worker thread instead; shorter ones, nearly all, are counted in place, where a thread hop would cost more than the
 * count.
 *
 * One pool per process (gateway and in-process simulated fleet share it), created on the first long prompt, with
 * fewer threads than cores so the event loop keeps one; idle threads exit after a minute.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { PromptCountTask } from './prompt-token-worker.js';
import { type CountedEndpoint, countPromptTokens, countTextTokens } from './token-counter.js';

/** Text characters from which a prompt is counted on a worker thread. */
export const offThreadCharacters = 32_768;

let pool: Piscina<PromptCountTask, number> | undefined;

/**
 * Prompt tokens of a request body, as `countPromptTokens` counts them; long prompts are counted on a worker thread.
 * A prompt counted in place is returned as a number, not a promise, so that a caller stays synchronous up to its
 * next real wait (the simulated fleet enqueues a request on its engine before returning, which its virtual-clock
 * timing relies on).
 */
export function countPromptTokensOffThread(
  endpoint: CountedEndpoint,
  body: Readonly<Record<string, unknown>>,
): number | Promise<number> {
  if (!textLongerThan(body, offThreadCharacters)) return countPromptTokens(endpoint, body);
  return countOnPool({ endpoint, body: body as Record<string, unknown> });
}

/** Tokens of a text, as `countTextTokens` counts them; a long text (an answer's output) on a worker thread. */
export function countTextTokensOffThread(text: string): number | Promise<number> {
  if (text.length <= offThreadCharacters) return countTextTokens(text);
  // A completions prompt that is one string counts exactly that string's tokens.
  return countOnPool({ endpoint: 'completions', body: { prompt: text } });
}

/**
 * Tokens of the longest prompt of a legacy completions request: each prompt of a batch (an array of strings or of
 * token-id arrays) is a sequence of its own. Long prompts are counted on the worker threads.
 */
export async function countLongestPromptTokensOffThread(prompt: unknown): Promise<number> {
  if (!Array.isArray(prompt) || typeof prompt[0] === 'number')
    return countPromptTokensOffThread('completions', { prompt });
  const counts = await Promise.all(
    prompt.map((item) =>
      Array.isArray(item) ? item.length : typeof item === 'string' ? countTextTokensOffThread(item) : 0,
    ),
  );
  return Math.max(0, ...counts);
}

function countOnPool(task: PromptCountTask): Promise<number> {
  pool ??= new Piscina<PromptCountTask, number>({
    filename: workerFilename(),
    minThreads: 0,
    maxThreads: Math.max(1, availableParallelism() - 1),
    idleTimeout: 60_000,
  });
  return pool.run(task);
}

/** Whether the strings anywhere in `value` add up to more than `limit` characters; stops as soon as they do. */
function textLongerThan(value: unknown, limit: number): boolean {
  let remaining = limit;
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (typeof item === 'string') {
      remaining -= item.length;
      if (remaining < 0) return true;
    } else if (typeof item === 'object' && item !== null) {
      for (const child of Array.isArray(item) ? item : Object.values(item)) pending.push(child);
    }
  }
  return false;
}

function workerFilename(): string {
  const compiled = fileURLToPath(new URL('./prompt-token-worker.js', import.meta.url));
  if (existsSync(compiled)) return compiled;
  // Tests run the TypeScript sources, which a worker thread cannot load; `npm test` builds dist before running them.
  return compiled.replace(`${sep}src${sep}metering${sep}`, `${sep}dist${sep}src${sep}metering${sep}`);
}
