/**
 * The one normalized token-usage type. Metering, pricing and limits read only this, never a provider's raw JSON.
 */

/** Token usage of one request. */
export interface Usage {
  input: {
    /** Prompt tokens, cached ones included. */
    total: number;
    /** Prompt tokens served from the upstream's prefix cache. */
    cached: number;
  };
  output: {
    /** Completion tokens, reasoning ones included. */
    total: number;
    /** Hidden reasoning tokens. */
    reasoning: number;
  };
  /** True when the gateway counted the tokens itself because the upstream reported none. */
  estimated: boolean;
}

/** OpenAI's `usage` object, as found in responses and in the final stream chunk. */
export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
}

/** A `Usage` of zero tokens. */
export function emptyUsage(estimated = false): Usage {
  return { input: { total: 0, cached: 0 }, output: { total: 0, reasoning: 0 }, estimated };
}

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
}

/**
 * Reads an upstream's `usage` object leniently. Returns `undefined` when it is absent or has no usable
 * `prompt_tokens` (embeddings report no completion tokens, which count as zero).
 */
export function usageFromOpenAI(raw: unknown): Usage | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const usage = raw as Record<string, unknown>;
  const prompt = count(usage.prompt_tokens);
  if (prompt === undefined) return undefined;
  const completion = count(usage.completion_tokens) ?? 0;
  const promptDetails = usage.prompt_tokens_details as Record<string, unknown> | null | undefined;
  const completionDetails = usage.completion_tokens_details as Record<string, unknown> | null | undefined;
  return {
    input: { total: prompt, cached: Math.min(prompt, count(promptDetails?.cached_tokens) ?? 0) },
    output: { total: completion, reasoning: Math.min(completion, count(completionDetails?.reasoning_tokens) ?? 0) },
    estimated: false,
  };
}

/** The OpenAI `usage` object for a normalized usage. */
export function toOpenAIUsage(usage: Usage): OpenAIUsage {
  return {
    prompt_tokens: usage.input.total,
    completion_tokens: usage.output.total,
    total_tokens: usage.input.total + usage.output.total,
    prompt_tokens_details: { cached_tokens: usage.input.cached },
    completion_tokens_details: { reasoning_tokens: usage.output.reasoning },
  };
}
