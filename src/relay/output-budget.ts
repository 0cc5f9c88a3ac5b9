/**
 * How many output tokens a request may ask the upstream for: the worst case that rate limits, the scheduler and the
 * wallet reservation must cover before it runs.
 */
import type { UpstreamEndpoint } from '../upstreams/upstream.js';

/** `max_completion_tokens` or `max_tokens`, when the client set one: the limit of each generated sequence. */
export function requestedOutputTokens(body: Readonly<Record<string, unknown>>): number | undefined {
  const value = body.max_completion_tokens ?? body.max_tokens;
  return typeof value === 'number' ? value : undefined;
}

/** The field a client limits output with: `max_completion_tokens` when it sent that, else `max_tokens`. */
export function outputLimitParam(body: Readonly<Record<string, unknown>>): 'max_completion_tokens' | 'max_tokens' {
  return typeof body.max_completion_tokens === 'number' ? 'max_completion_tokens' : 'max_tokens';
}

/**
 * Sequences the upstream generates for one request, each up to the output limit: `n` choices, and for legacy
 * completions `best_of` candidates (at least `n`) for each prompt of a batch of prompts. Usage counts the output of
 * them all, so a request for 20 choices of 100 tokens may produce 2,000.
 */
export function outputSequences(endpoint: UpstreamEndpoint, body: Readonly<Record<string, unknown>>): number {
  if (endpoint === 'embeddings') return 0;
  const choices = positiveInteger(body.n);
  if (endpoint === 'chat') return choices;
  return Math.max(choices, positiveInteger(body.best_of)) * promptCount(body.prompt);
}

/** The most output tokens the request may produce: the limit of each sequence (`fallback` when none is set) × them. */
export function maxOutputTokens(
  endpoint: UpstreamEndpoint,
  body: Readonly<Record<string, unknown>>,
  fallback: number,
): number {
  const sequences = outputSequences(endpoint, body);
  return sequences === 0 ? 0 : (requestedOutputTokens(body) ?? fallback) * sequences;
}

function positiveInteger(value: unknown): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 ? value : 1;
}

/** Prompts of a legacy completions request: a string or one array of token ids is one; an array of either is many. */
function promptCount(prompt: unknown): number {
  if (!Array.isArray(prompt) || prompt.length === 0) return 1;
  return typeof prompt[0] === 'number' ? 1 : prompt.length;
}
