import { describe, expect, it } from 'vitest';
import { countTextTokens } from '../metering/token-counter.js';
import { estimateWholeUsage } from './usage-estimate.js';

describe('estimateWholeUsage', () => {
  it('counts tool calls, refusals and reasoning of a whole answer, not only its content', async () => {
    const args = JSON.stringify({ city: 'Paris', days: [1, 2, 3], units: 'metric', note: 'x'.repeat(200) });
    const body = {
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            reasoning_content: 'The user wants a forecast.',
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: args } }],
          },
          finish_reason: 'tool_calls',
        },
        { index: 1, message: { role: 'assistant', content: null, refusal: 'I cannot help with that.' } },
      ],
    };
    const usage = await estimateWholeUsage('chat', body, 42);
    const expected = countTextTokens(`The user wants a forecast.get_weather${args}I cannot help with that.`);
    expect(usage).toEqual({
      input: { total: 42, cached: 0 },
      output: { total: expected, reasoning: 0 },
      estimated: true,
    });
    expect(expected).toBeGreaterThan(50);
  });

  it('counts a legacy completion by its text, and nothing for embeddings', async () => {
    const completion = await estimateWholeUsage('completions', { choices: [{ text: 'Hello there' }] }, 3);
    expect(completion.output.total).toBe(countTextTokens('Hello there'));
    const embedding = await estimateWholeUsage('embeddings', { data: [{ embedding: [0.1] }] }, 3);
    expect(embedding.output.total).toBe(0);
  });
});
