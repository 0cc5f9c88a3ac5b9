import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chunkRewriter, synthesizedUsageChunk, withoutUsage } from './chunk-rewriting.js';

/** What the rewriter must produce, done the slow way: parse, edit, compare as objects. */
function expected(
  chunk: Record<string, unknown>,
  options: { publicModel: string; serviceTier: string | undefined; stripNullUsage: boolean },
): Record<string, unknown> {
  const result: Record<string, unknown> = { ...chunk };
  if (typeof result.model === 'string') result.model = options.publicModel;
  if (options.stripNullUsage && 'usage' in result && result.usage === null) delete result.usage;
  if (options.serviceTier !== undefined && !('service_tier' in result)) result.service_tier = options.serviceTier;
  return result;
}

const chunkArbitrary = fc.record(
  {
    id: fc.string(),
    object: fc.constant('chat.completion.chunk'),
    created: fc.integer({ min: 0 }),
    // The configured upstream model, a resolved one (as OpenAI answers), the public name, or anything (quotes and
    // backslashes included, escaped in the JSON).
    model: fc.oneof(fc.constantFrom('up-model', 'up-model-2024-08-06', 'public-model'), fc.string()),
    service_tier: fc.constantFrom('default', 'flex'),
    choices: fc.array(
      fc.record({
        index: fc.nat(3),
        // Text that looks like the fields the rewriter edits must stay as it is.
        delta: fc.record({
          content: fc.oneof(fc.string(), fc.constantFrom('"model":"up-model"', ',"usage":null', '"service_tier"')),
        }),
        finish_reason: fc.constantFrom(null, 'stop'),
      }),
      { maxLength: 2 },
    ),
    usage: fc.constantFrom(null, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 }),
  },
  { requiredKeys: ['id', 'object', 'created', 'model', 'choices'] },
);

describe('chunkRewriter', () => {
  it('names the public model, drops a null usage and states the tier exactly as editing the parsed chunk would', () => {
    fc.assert(
      fc.property(
        chunkArbitrary,
        fc.boolean(),
        fc.constantFrom(undefined, 'default', 'flex'),
        fc.constantFrom('up-model', 'public-model', 'pub"lic\\model'),
        fc.boolean(),
        (chunk, stripNullUsage, serviceTier, publicModel, spaced) => {
          const options = { publicModel, serviceTier, stripNullUsage };
          const text = spaced ? JSON.stringify(chunk, null, 1).replace(/\n/g, '') : JSON.stringify(chunk);
          const rewritten = chunkRewriter(options)(text);
          expect(JSON.parse(rewritten)).toEqual(expected(chunk, options));
          if (!spaced && publicModel === chunk.model && (!stripNullUsage || chunk.usage !== null)) {
            if (serviceTier === undefined || 'service_tier' in chunk) expect(rewritten).toBe(text);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('leaves a chunk without the fields as it is', () => {
    const rewrite = chunkRewriter({
      publicModel: 'b',
      serviceTier: undefined,
      stripNullUsage: true,
    });
    expect(rewrite('{"id":"x","choices":[]}')).toBe('{"id":"x","choices":[]}');
  });

  it('removes a usage attached to a content chunk', () => {
    const chunk = { id: 'x', choices: [{ index: 0, delta: { content: 'hi' } }], usage: { total_tokens: 1 } };
    expect(JSON.parse(withoutUsage(JSON.stringify(chunk)))).toEqual({ id: 'x', choices: chunk.choices });
  });
});

describe('synthesizedUsageChunk', () => {
  it('is a usage-only chunk like the stream it ends: same id, time, fingerprint and tier', () => {
    const last = JSON.stringify({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 17,
      model: 'up',
      system_fingerprint: 'fp_1',
      choices: [{ index: 0, delta: {}, finish_reason: 'stop' }],
    });
    const usage = { input: { total: 5, cached: 0 }, output: { total: 7, reasoning: 0 }, estimated: true };
    expect(JSON.parse(synthesizedUsageChunk(last, 'public', usage, 'flex'))).toEqual({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 17,
      model: 'public',
      service_tier: 'flex',
      system_fingerprint: 'fp_1',
      choices: [],
      usage: expect.objectContaining({ prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 }),
    });
    const bare = JSON.parse(synthesizedUsageChunk(undefined, 'public', usage, undefined));
    expect(bare).not.toHaveProperty('service_tier');
    expect(bare).not.toHaveProperty('system_fingerprint');
  });
});
