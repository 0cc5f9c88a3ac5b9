import { describe, expect, it } from 'vitest';
import { openAIErrors } from './openai-schema.js';

describe('openAIErrors (the schema validator the API tests rely on)', () => {
  const valid = {
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1,
    model: 'm',
    choices: [
      { index: 0, message: { role: 'assistant', content: 'hi', refusal: null }, logprobs: null, finish_reason: 'stop' },
    ],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  };

  it('accepts a well-formed chat completion', () => {
    expect(openAIErrors('CreateChatCompletionResponse', valid)).toEqual([]);
  });

  it('rejects malformed ones, so tests that use it can fail', () => {
    expect(openAIErrors('CreateChatCompletionResponse', { ...valid, object: 'chat' })).not.toEqual([]);
    expect(openAIErrors('CreateChatCompletionResponse', { ...valid, choices: [{ index: 0 }] })).not.toEqual([]);
    expect(openAIErrors('ErrorResponse', { error: { message: 'x', type: 'y', param: null, code: null } })).toEqual([]);
    expect(openAIErrors('ErrorResponse', { error: { message: 1 } })).not.toEqual([]);
  });
});
