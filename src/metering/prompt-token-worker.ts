/** The worker-thread side of `countPromptTokensOffThread`: counts one prompt. */
import { type CountedEndpoint, countPromptTokens } from './token-counter.js';

/** One prompt to count. */
export interface PromptCountTask {
  endpoint: CountedEndpoint;
  body: Record<string, unknown>;
}

export default function countPrompt(task: PromptCountTask): number {
  return countPromptTokens(task.endpoint, task.body);
}
