import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../errors/gateway-error.js';
import { chatRequestOf, conversationIdOf, type ResponsesRequest, responsesParamOf } from './responses-request.js';

/**
 * Request fields as a client sends them. The schema's static type names only `type` on tools and object tool
 * choices (the rest is checked by `chatRequestOf`), so they are widened here.
 */
type RequestFields = Omit<Partial<ResponsesRequest>, 'tools' | 'tool_choice'> & {
  tools?: Record<string, unknown>[];
  tool_choice?: 'none' | 'auto' | 'required' | Record<string, unknown>;
};

/** The chat request for a Responses request of `fields` (a model and a one-line input unless given). */
function chatOf(fields: RequestFields): Record<string, unknown> {
  return chatRequestOf({ model: 'gpt-4.1-mini', input: 'Hi', ...fields } as ResponsesRequest);
}

/** The `code` and `param` of the 400 `chatRequestOf` throws for `fields`. */
function refusalOf(fields: RequestFields): { status: number; code: string; param: string | null } {
  try {
    chatOf(fields);
  } catch (error: unknown) {
    if (!(error instanceof InvalidRequestError)) throw error;
    return { status: error.status, code: error.code, param: error.param };
  }
  throw new Error('chatRequestOf accepted the request');
}

const unsupported = (param: string) => ({ status: 400, code: 'unsupported_parameter', param });

/** One function tool: `tool_choice` and `parallel_tool_calls` reach chat only with tools. */
const oneTool = [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: {} } }];

describe('chatRequestOf', () => {
  it('makes a string input one user message', () => {
    expect(chatOf({ input: 'Tell me a joke.' })).toEqual({
      model: 'gpt-4.1-mini',
      messages: [{ role: 'user', content: 'Tell me a joke.' }],
    });
  });

  it('puts instructions first, as a system message', () => {
    expect(chatOf({ instructions: 'Answer in French.', input: 'Hello' }).messages).toEqual([
      { role: 'system', content: 'Answer in French.' },
      { role: 'user', content: 'Hello' },
    ]);
  });

  it('ignores null instructions', () => {
    expect(chatOf({ instructions: null }).messages).toEqual([{ role: 'user', content: 'Hi' }]);
  });

  it('keeps string content, and makes input_text and input_image parts chat text and image_url parts', () => {
    const chat = chatOf({
      input: [
        { type: 'message', role: 'user', content: 'What is in this picture?' },
        {
          type: 'message',
          role: 'user',
          content: [
            { type: 'input_text', text: 'And this one?' },
            { type: 'input_image', image_url: 'https://example.com/cat.png', detail: 'low' },
            { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=' },
          ],
        },
      ],
    });
    expect(chat.messages).toEqual([
      { role: 'user', content: 'What is in this picture?' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'And this one?' },
          { type: 'image_url', image_url: { url: 'https://example.com/cat.png', detail: 'low' } },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
        ],
      },
    ]);
  });

  it("makes an assistant's earlier output_text parts one plain string", () => {
    const chat = chatOf({
      input: [
        { role: 'user', content: 'Say hello twice.' },
        {
          type: 'message',
          id: 'msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41',
          status: 'completed',
          role: 'assistant',
          content: [
            { type: 'output_text', text: 'Hello. ', annotations: [] },
            { type: 'output_text', text: 'Hello.', annotations: [] },
          ],
        },
        { role: 'user', content: 'Again.' },
      ],
    });
    expect(chat.messages).toEqual([
      { role: 'user', content: 'Say hello twice.' },
      { role: 'assistant', content: 'Hello. Hello.' },
      { role: 'user', content: 'Again.' },
    ]);
  });

  it('sends the developer role as system', () => {
    const chat = chatOf({
      input: [
        { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'Be brief.' }] },
        { type: 'message', role: 'user', content: 'Hi' },
      ],
    });
    expect(chat.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ]);
  });

  it('takes an item without a type but with a role for a message', () => {
    expect(chatOf({ input: [{ role: 'user', content: 'Hi there' }] }).messages).toEqual([
      { role: 'user', content: 'Hi there' },
    ]);
  });

  it('merges consecutive function calls into one assistant message, and makes their outputs tool messages', () => {
    const chat = chatOf({
      input: [
        { role: 'user', content: 'Weather in Paris and Bogotá?' },
        {
          type: 'function_call',
          id: 'fc_12345xyz',
          call_id: 'call_paris',
          name: 'get_weather',
          arguments: '{"location":"Paris, France"}',
        },
        {
          type: 'function_call',
          id: 'fc_12346xyz',
          call_id: 'call_bogota',
          name: 'get_weather',
          arguments: '{"location":"Bogotá, Colombia"}',
        },
        { type: 'function_call_output', call_id: 'call_paris', output: '{"temperature":14}' },
        {
          type: 'function_call_output',
          call_id: 'call_bogota',
          output: [{ type: 'input_text', text: '{"temperature":19}' }],
        },
      ],
    });
    expect(chat.messages).toEqual([
      { role: 'user', content: 'Weather in Paris and Bogotá?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          {
            id: 'call_paris',
            type: 'function',
            function: { name: 'get_weather', arguments: '{"location":"Paris, France"}' },
          },
          {
            id: 'call_bogota',
            type: 'function',
            function: { name: 'get_weather', arguments: '{"location":"Bogotá, Colombia"}' },
          },
        ],
      },
      { role: 'tool', tool_call_id: 'call_paris', content: '{"temperature":14}' },
      { role: 'tool', tool_call_id: 'call_bogota', content: '{"temperature":19}' },
    ]);
  });

  it('starts a new assistant message for a function call that follows a tool output', () => {
    const call = (callId: string) => ({ type: 'function_call', call_id: callId, name: 'next', arguments: '{}' });
    const chat = chatOf({
      input: [
        { role: 'user', content: 'Go' },
        call('call_1'),
        { type: 'function_call_output', call_id: 'call_1', output: 'ok' },
        call('call_2'),
      ],
    });
    expect((chat.messages as Record<string, unknown>[]).map((message) => message.role)).toEqual([
      'user',
      'assistant',
      'tool',
      'assistant',
    ]);
  });

  it('drops reasoning items', () => {
    const chat = chatOf({
      input: [
        { role: 'user', content: 'Think, then answer.' },
        { type: 'reasoning', id: 'rs_6820f383d7c08191846711c5df8233bc', summary: [] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: '42', annotations: [] }] },
      ],
    });
    expect(chat.messages).toEqual([
      { role: 'user', content: 'Think, then answer.' },
      { role: 'assistant', content: '42' },
    ]);
  });

  it('refuses an input with nothing left once reasoning items are dropped', () => {
    expect(refusalOf({ input: [{ type: 'reasoning', id: 'rs_1', summary: [] }] })).toEqual({
      status: 400,
      code: 'invalid_value',
      param: 'input',
    });
  });

  it('sends max_output_tokens as max_completion_tokens, and copies the sampling and identity fields', () => {
    const chat = chatOf({
      max_output_tokens: 256,
      temperature: 0.2,
      top_p: 0.9,
      user: 'user-1',
      safety_identifier: 'hash-1',
      prompt_cache_key: 'cache-1',
      service_tier: 'flex',
    });
    expect(chat).toEqual({
      model: 'gpt-4.1-mini',
      messages: [{ role: 'user', content: 'Hi' }],
      max_completion_tokens: 256,
      temperature: 0.2,
      top_p: 0.9,
      user: 'user-1',
      safety_identifier: 'hash-1',
      prompt_cache_key: 'cache-1',
      service_tier: 'flex',
    });
    expect(chat).not.toHaveProperty('max_output_tokens');
    expect(chatOf({ tools: oneTool, parallel_tool_calls: false }).parallel_tool_calls).toBe(false);
  });

  it('asks a stream for usage, and asks nothing of a request that does not stream', () => {
    expect(chatOf({ stream: true })).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    const whole = chatOf({ stream: false });
    expect(whole).not.toHaveProperty('stream');
    expect(whole).not.toHaveProperty('stream_options');
  });

  it('gives function tools the chat tools shape', () => {
    const parameters = {
      type: 'object',
      properties: { location: { type: 'string' } },
      required: ['location'],
      additionalProperties: false,
    };
    const chat = chatOf({
      tools: [
        { type: 'function', name: 'get_weather', description: 'Current weather', parameters, strict: true },
        { type: 'function', name: 'now' },
      ],
    });
    expect(chat.tools).toEqual([
      {
        type: 'function',
        function: { name: 'get_weather', description: 'Current weather', parameters, strict: true },
      },
      { type: 'function', function: { name: 'now' } },
    ]);
  });

  it('refuses a function tool without a name', () => {
    expect(refusalOf({ tools: [{ type: 'function', parameters: {} }] })).toMatchObject({
      code: 'missing_required_parameter',
      param: 'tools[0].name',
    });
  });

  it.each([
    ['none', 'none'],
    ['auto', 'auto'],
    ['required', 'required'],
  ] as const)('passes tool_choice %s on as it is', (choice, expected) => {
    expect(chatOf({ tools: oneTool, tool_choice: choice }).tool_choice).toBe(expected);
  });

  it('makes a function tool_choice the chat shape', () => {
    expect(chatOf({ tools: oneTool, tool_choice: { type: 'function', name: 'get_weather' } }).tool_choice).toEqual({
      type: 'function',
      function: { name: 'get_weather' },
    });
  });

  it('refuses a tool_choice naming a built-in tool', () => {
    expect(refusalOf({ tools: oneTool, tool_choice: { type: 'web_search_preview' } })).toEqual(
      unsupported('tool_choice.type'),
    );
  });

  it('makes text.format json_object and json_schema a response_format', () => {
    expect(chatOf({ text: { format: { type: 'json_object' } } }).response_format).toEqual({ type: 'json_object' });
    const schema = {
      type: 'object',
      properties: { answer: { type: 'string' } },
      required: ['answer'],
      additionalProperties: false,
    };
    expect(
      chatOf({
        text: { format: { type: 'json_schema', name: 'answer', description: 'One answer', schema, strict: true } },
      }).response_format,
    ).toEqual({
      type: 'json_schema',
      json_schema: { name: 'answer', description: 'One answer', schema, strict: true },
    });
  });

  it('sends no response_format for text.format text, and passes verbosity on', () => {
    const chat = chatOf({ text: { format: { type: 'text' }, verbosity: 'low' } });
    expect(chat).not.toHaveProperty('response_format');
    expect(chat.verbosity).toBe('low');
  });

  it('refuses a json_schema format without a name', () => {
    expect(refusalOf({ text: { format: { type: 'json_schema', schema: {} } } })).toMatchObject({
      code: 'missing_required_parameter',
      param: 'text.format.name',
    });
  });

  it('sends reasoning.effort as reasoning_effort', () => {
    expect(chatOf({ reasoning: { effort: 'high', summary: 'auto' } }).reasoning_effort).toBe('high');
    expect(chatOf({ reasoning: null })).not.toHaveProperty('reasoning_effort');
  });

  it('puts the conversation of previous_response_id after the instructions and before the input', () => {
    const history = [
      { id: 'msg_1', type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Weather in Oslo?' }] },
      { id: 'rs_1', type: 'reasoning', summary: [] },
      { id: 'fc_1', type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{}' },
      { id: 'fco_1', type: 'function_call_output', call_id: 'call_1', output: '3°C' },
      {
        id: 'msg_2',
        type: 'message',
        role: 'assistant',
        content: [{ type: 'output_text', text: 'It is 3°C.', annotations: [] }],
      },
    ];
    const request = {
      model: 'gpt-4.1-mini',
      instructions: 'Be terse.',
      input: 'And tomorrow?',
      previous_response_id: 'resp_1',
    } as ResponsesRequest;
    expect(chatRequestOf(request, history).messages).toEqual([
      { role: 'system', content: 'Be terse.' },
      { role: 'user', content: [{ type: 'text', text: 'Weather in Oslo?' }] },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: '3°C' },
      { role: 'assistant', content: 'It is 3°C.' },
      { role: 'user', content: 'And tomorrow?' },
    ]);
    // Without the conversation read, previous_response_id cannot be served (a batch line).
    expect(() => chatRequestOf(request)).toThrow(InvalidRequestError);
  });

  describe('refuses what chat completions cannot carry, naming the field', () => {
    it.each<[string, RequestFields, string]>([
      [
        'previous_response_id',
        { previous_response_id: 'resp_68af4030592c81938ec0a5fbab4a3e9f' },
        'previous_response_id',
      ],
      ['conversation', { conversation: 'conv_689667905b048191b4740501625afd940c7533ace33a2dab' }, 'conversation'],
      ['prompt', { prompt: { id: 'pmpt_abc123', version: '2' } }, 'prompt'],
      ['background: true', { background: true }, 'background'],
      ["truncation: 'auto'", { truncation: 'auto' }, 'truncation'],
      ['top_logprobs', { top_logprobs: 5 }, 'top_logprobs'],
      [
        'include with logprobs',
        { include: ['reasoning.encrypted_content', 'message.output_text.logprobs'] },
        'include[1]',
      ],
      ['include with input image URLs', { include: ['message.input_image.image_url'] }, 'include[0]'],
      ['a built-in tool', { tools: [{ type: 'web_search' }] }, 'tools[0].type'],
      [
        'a built-in tool after a function tool',
        {
          tools: [
            { type: 'function', name: 'f' },
            { type: 'file_search', vector_store_ids: ['vs_1'] },
          ],
        },
        'tools[1].type',
      ],
      [
        'an item_reference item',
        {
          input: [
            { role: 'user', content: 'Hi' },
            { type: 'item_reference', id: 'msg_123' },
          ],
        },
        'input[1].type',
      ],
      [
        'an input_file part',
        {
          input: [
            {
              role: 'user',
              content: [
                { type: 'input_text', text: 'Summarize' },
                { type: 'input_file', file_id: 'file-6F2ksmvXxt4VdoqmHRw6kL' },
              ],
            },
          ],
        },
        'input[0].content[1].type',
      ],
      [
        'an input_image given by file id',
        { input: [{ role: 'user', content: [{ type: 'input_image', file_id: 'file-abc', detail: 'auto' }] }] },
        'input[0].content[0].file_id',
      ],
      [
        'an unknown item type',
        { input: [{ type: 'computer_call_output', call_id: 'call_1', output: {} }] },
        'input[0].type',
      ],
    ])('%s', (_name, fields, param) => {
      expect(refusalOf(fields)).toEqual(unsupported(param));
    });

    it('accepts the stateless forms of the same fields', () => {
      expect(() =>
        chatOf({
          previous_response_id: null,
          conversation: null,
          prompt: null,
          background: false,
          truncation: 'disabled',
          top_logprobs: 0,
          include: ['reasoning.encrypted_content'],
        }),
      ).not.toThrow();
    });
  });

  describe('refuses a malformed item, naming the field', () => {
    it.each<[string, Record<string, unknown>, { code: string; param: string }]>([
      [
        'a message with an unknown role',
        { type: 'message', role: 'tool', content: 'x' },
        { code: 'invalid_value', param: 'input[0].role' },
      ],
      [
        'a message whose content is neither string nor parts',
        { type: 'message', role: 'user', content: 42 },
        { code: 'invalid_type', param: 'input[0].content' },
      ],
      [
        'a function call without call_id',
        { type: 'function_call', name: 'f', arguments: '{}' },
        { code: 'missing_required_parameter', param: 'input[0].call_id' },
      ],
      [
        'a function call with an empty name',
        { type: 'function_call', call_id: 'call_1', name: '', arguments: '{}' },
        { code: 'invalid_type', param: 'input[0].name' },
      ],
      [
        'an input_image without image_url',
        { role: 'user', content: [{ type: 'input_image', detail: 'auto' }] },
        { code: 'missing_required_parameter', param: 'input[0].content[0].image_url' },
      ],
      [
        'an input_text part without text',
        { role: 'user', content: [{ type: 'input_text' }] },
        { code: 'invalid_type', param: 'input[0].content[0].text' },
      ],
    ])('%s', (_name, item, expected) => {
      expect(refusalOf({ input: [item] })).toEqual({ status: 400, ...expected });
    });
  });
});

describe('responsesParamOf', () => {
  it.each([
    ['max_completion_tokens', 'max_output_tokens'],
    ['max_tokens', 'max_output_tokens'],
    ['messages', 'input'],
    ['messages[3].content', 'input'],
    ['reasoning_effort', 'reasoning.effort'],
    ['response_format', 'text.format'],
    ['temperature', 'temperature'],
    ['tools[0].type', 'tools[0].type'],
  ])('names chat field %s as %s', (param, expected) => {
    expect(responsesParamOf(param)).toBe(expected);
  });
});

describe('chatRequestOf: fields chat completions take differently', () => {
  it('sends neither tool_choice nor parallel_tool_calls without tools, and refuses a required tool choice then', () => {
    const chat = chatOf({ parallel_tool_calls: false, tool_choice: 'auto', tools: [] });
    expect(chat).not.toHaveProperty('parallel_tool_calls');
    expect(chat).not.toHaveProperty('tool_choice');
    expect(refusalOf({ tool_choice: 'required' })).toEqual({
      status: 400,
      code: 'invalid_value',
      param: 'tool_choice',
    });
  });

  it('refuses max_tool_calls rather than dropping it', () => {
    expect(refusalOf({ max_tool_calls: 1 })).toEqual(unsupported('max_tool_calls'));
  });

  it.each([
    ['response_format.json_schema.name', 'text.format.name'],
    ['response_format.json_schema', 'text.format'],
    ['tools[0].function.name', 'tools[0].name'],
    ['tool_choice.function.name', 'tool_choice.name'],
  ])('names the Responses field %s came from', (chatParam, responsesParam) => {
    expect(responsesParamOf(chatParam)).toBe(responsesParam);
  });
});

describe('conversationIdOf', () => {
  it('reads a conversation id as a string or {id}, and refuses anything else', () => {
    expect([conversationIdOf('conv_1'), conversationIdOf({ id: 'conv_2' }), conversationIdOf(null)]).toEqual([
      'conv_1',
      'conv_2',
      undefined,
    ]);
    expect(() => conversationIdOf(42)).toThrow(InvalidRequestError);
    expect(() => conversationIdOf({ name: 'x' })).toThrow(InvalidRequestError);
  });
});
