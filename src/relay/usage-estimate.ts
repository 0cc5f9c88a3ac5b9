/**
 * Usage counted by the gateway when the upstream reports none, or for a stream that did not finish: the prompt as
 * the gateway's tokenizer counts it and the output actually delivered. Always flagged `estimated`.
 */
import { countTextTokensOffThread } from '../metering/prompt-token-pool.js';
import { generatedText } from '../upstreams/generated-text.js';
import type { UpstreamEndpoint } from '../upstreams/upstream.js';
import type { Usage } from '../upstreams/usage.js';

/** Usage of a whole answer without usage. A long output is counted on a worker thread. */
export async function estimateWholeUsage(
  endpoint: UpstreamEndpoint,
  body: Record<string, unknown>,
  promptTokens: number,
): Promise<Usage> {
  let text = '';
  if (endpoint !== 'embeddings' && Array.isArray(body.choices)) {
    for (const choice of body.choices as Array<Record<string, unknown>>) {
      const message = choice.message;
      if (message !== null && typeof message === 'object') text += generatedText(message as Record<string, unknown>);
      if (typeof choice.text === 'string') text += choice.text;
    }
  }
  return {
    input: { total: promptTokens, cached: 0 },
    output: { total: text === '' ? 0 : await countTextTokensOffThread(text), reasoning: 0 },
    estimated: true,
  };
}

/**
 * Usage of a stream from what was delivered; never more output than the upstream reported, when it reported. A long
 * output is counted on a worker thread.
 */
export async function estimateStreamUsage(
  promptTokens: number,
  deliveredText: string,
  reported: Usage | undefined,
): Promise<Usage> {
  const output = deliveredText === '' ? 0 : await countTextTokensOffThread(deliveredText);
  return {
    input: reported?.input ?? { total: promptTokens, cached: 0 },
    output: { total: reported === undefined ? output : Math.min(output, reported.output.total), reasoning: 0 },
    estimated: true,
  };
}
