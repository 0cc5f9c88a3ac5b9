/**
 * The Responses API (`POST /v1/responses`) served over chat completions: its request schema, and the chat request a
 * Responses request becomes. Every upstream the gateway speaks to serves chat completions, so a Responses request is
 * translated at the edge and then takes the ordinary request path (authentication, admission, wallet, routing,
 * metering) as a chat request; its answer is translated back (`responses-object.ts`, `responses-stream-sink.ts`).
 *
 * A request that goes on from a stored response (`previous_response_id`) or belongs to a conversation
 * (`conversation`) carries that conversation's items before its own input: the caller reads them
 * (`StoredResponses.historyOf`, `Conversations.historyOf`) and passes them in.
 *
 * What chat completions cannot carry is refused with a 400 that names the field, never dropped silently: stored
 * state this gateway does not keep (`item_reference` items, `prompt`), built-in tools
 * (web search, file search, computer use, MCP …), file inputs and logprobs. Reasoning items a client sends back from
 * an earlier turn are dropped: chat completions have no place for them, and a model does not need them to go on.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { GatewayError, InvalidRequestError } from '../../errors/gateway-error.js';
import { serviceTierValues } from '../request-schemas.js';

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

/** An input item: checked field by field in `chatRequestOf`, so that an error names the item and field. */
const InputItem = Type.Object({}, { additionalProperties: true });

const FunctionTool = Type.Object({ type: Type.String({ minLength: 1 }) }, { additionalProperties: true });

const TextFormat = Type.Object(
  {
    type: Type.Union([Type.Literal('text'), Type.Literal('json_object'), Type.Literal('json_schema')]),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' })),
    schema: Type.Optional(Type.Object({}, { additionalProperties: true })),
    description: Type.Optional(Type.String()),
    strict: Type.Optional(Nullable(Type.Boolean())),
  },
  { additionalProperties: false },
);

/** `POST /v1/responses`: every field of OpenAI's `CreateResponse`; an unknown one is `unknown_parameter`. */
export const ResponsesRequestSchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    input: Type.Union([Type.String(), Type.Array(InputItem, { minItems: 1 })]),
    instructions: Type.Optional(Nullable(Type.String())),
    max_output_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 16 }))),
    temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
    top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
    stream: Type.Optional(Nullable(Type.Boolean())),
    stream_options: Type.Optional(Nullable(Type.Object({}, { additionalProperties: true }))),
    tools: Type.Optional(Type.Array(FunctionTool)),
    tool_choice: Type.Optional(
      Type.Union([
        Type.Literal('none'),
        Type.Literal('auto'),
        Type.Literal('required'),
        Type.Object({ type: Type.String() }, { additionalProperties: true }),
      ]),
    ),
    parallel_tool_calls: Type.Optional(Nullable(Type.Boolean())),
    text: Type.Optional(
      Type.Object(
        {
          format: Type.Optional(TextFormat),
          verbosity: Type.Optional(
            Nullable(Type.Union([Type.Literal('low'), Type.Literal('medium'), Type.Literal('high')])),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    reasoning: Type.Optional(
      Nullable(
        Type.Object(
          {
            effort: Type.Optional(
              Nullable(
                Type.Union(['none', 'minimal', 'low', 'medium', 'high', 'xhigh'].map((effort) => Type.Literal(effort))),
              ),
            ),
            summary: Type.Optional(Nullable(Type.String())),
            generate_summary: Type.Optional(Nullable(Type.String())),
          },
          { additionalProperties: false },
        ),
      ),
    ),
    metadata: Type.Optional(
      Nullable(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), { maxProperties: 16 })),
    ),
    store: Type.Optional(Nullable(Type.Boolean())),
    user: Type.Optional(Type.String()),
    safety_identifier: Type.Optional(Type.String()),
    prompt_cache_key: Type.Optional(Type.String()),
    prompt_cache_retention: Type.Optional(Nullable(Type.String())),
    service_tier: Type.Optional(Nullable(Type.Union(serviceTierValues.map((tier) => Type.Literal(tier))))),
    truncation: Type.Optional(Nullable(Type.Union([Type.Literal('auto'), Type.Literal('disabled')]))),
    include: Type.Optional(Nullable(Type.Array(Type.String()))),
    top_logprobs: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 20 }))),
    max_tool_calls: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
    previous_response_id: Type.Optional(Nullable(Type.String())),
    conversation: Type.Optional(Nullable(Type.Unknown())),
    prompt: Type.Optional(Nullable(Type.Unknown())),
    background: Type.Optional(Nullable(Type.Boolean())),
  },
  { additionalProperties: false },
);

/** A validated `POST /v1/responses` body. */
export type ResponsesRequest = Static<typeof ResponsesRequestSchema>;

/**
 * A `POST /v1/responses/input_tokens` body: a Responses request whose `input` may be left out, as OpenAI's allows
 * (the instructions alone are counted then).
 */
export const InputTokensRequestSchema = Type.Object(
  { ...ResponsesRequestSchema.properties, input: Type.Optional(ResponsesRequestSchema.properties.input) },
  { additionalProperties: false },
);

/**
 * A `POST /v1/responses/compact` body (OpenAI's `CompactResponseMethodPublicBody`): the conversation to compact, as
 * `input` and/or the stored conversation `previous_response_id` ends, and the model that summarises it.
 */
export const CompactRequestSchema = Type.Object(
  {
    model: ResponsesRequestSchema.properties.model,
    input: Type.Optional(Nullable(ResponsesRequestSchema.properties.input)),
    previous_response_id: ResponsesRequestSchema.properties.previous_response_id,
    instructions: ResponsesRequestSchema.properties.instructions,
    prompt_cache_key: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
    prompt_cache_retention: ResponsesRequestSchema.properties.prompt_cache_retention,
    prompt_cache_options: Type.Optional(Nullable(Type.Unknown())),
    service_tier: ResponsesRequestSchema.properties.service_tier,
  },
  { additionalProperties: false },
);

/** A validated `POST /v1/responses/compact` body. */
export type CompactRequest = Static<typeof CompactRequestSchema>;

/** A validated `POST /v1/responses/input_tokens` body. */
export type InputTokensRequest = Static<typeof InputTokensRequestSchema>;

/** The 400 for a field chat completions cannot carry. */
function unsupported(param: string, what: string): InvalidRequestError {
  return new InvalidRequestError(`${what} is not supported by this gateway's Responses API.`, {
    param,
    code: 'unsupported_parameter',
  });
}

/** A chat message as the upstream receives it. */
type ChatMessage = Record<string, unknown>;

/**
 * The chat completions request a Responses request becomes. Throws `InvalidRequestError` naming the field for
 * anything chat completions cannot carry. A stream always asks for usage: `response.completed` reports it.
 *
 * `history` is the conversation a `previous_response_id` or a `conversation` names, oldest item first (input and
 * output items); without it, either is refused (a batch line cannot go on from stored state). The previous
 * responses' instructions are not carried over, as on OpenAI: only this request's apply.
 *
 * `truncation: "auto"` is refused unless the caller says it `truncates` the result to the model's window
 * (`truncateToWindow`), and `background: true` unless it runs it so (`BackgroundResponses`): a batch line, translated
 * without its model's window at hand and run by the batch, can do neither.
 *
 * A `compaction` item (`POST /v1/responses/compact`) becomes the assistant message of its summary, which
 * `openCompaction` reads from its sealed `encrypted_content` (`CompactionSeal.open`, which refuses one it cannot
 * verify); without it, such an item is refused.
 */
export function chatRequestOf(
  request: ResponsesRequest | InputTokensRequest,
  history?: readonly Record<string, unknown>[],
  options: ChatRequestOptions = {},
): Record<string, unknown> {
  refuseStatefulFields(request, history !== undefined, options);
  const messages: ChatMessage[] = [];
  if (typeof request.instructions === 'string') messages.push({ role: 'system', content: request.instructions });
  if (history !== undefined) {
    const from = typeof request.previous_response_id === 'string' ? 'previous_response_id' : 'conversation';
    for (const [index, item] of history.entries()) appendItem(messages, item, `${from}[${index}]`, options);
  }
  if (typeof request.input === 'string') messages.push({ role: 'user', content: request.input });
  else if (request.input !== undefined) {
    for (const [index, item] of request.input.entries()) appendItem(messages, item, `input[${index}]`, options);
  }
  if (messages.length === 0) {
    throw new InvalidRequestError("'input' holds nothing a model can read.", { param: 'input', code: 'invalid_value' });
  }

  const chat: Record<string, unknown> = { model: request.model, messages };
  copyDefined(request, chat, ['temperature', 'top_p', 'user', 'safety_identifier']);
  copyDefined(request, chat, ['service_tier', 'prompt_cache_key'], { skipNull: true });
  if (typeof request.max_output_tokens === 'number') chat.max_completion_tokens = request.max_output_tokens;
  if (request.stream === true) {
    chat.stream = true;
    chat.stream_options = { include_usage: true };
  }
  // Chat completions refuse `tool_choice` and `parallel_tool_calls` without tools; the Responses API accepts them.
  if (request.tools !== undefined && request.tools.length > 0) {
    chat.tools = request.tools.map((tool, index) => chatTool(tool, `tools[${index}]`));
    if (request.tool_choice !== undefined) chat.tool_choice = chatToolChoice(request.tool_choice);
    copyDefined(request, chat, ['parallel_tool_calls'], { skipNull: true });
  } else if (request.tool_choice !== undefined && request.tool_choice !== 'none' && request.tool_choice !== 'auto') {
    throw new InvalidRequestError("'tool_choice' requires a tool, and 'tools' is empty.", {
      param: 'tool_choice',
      code: 'invalid_value',
    });
  }
  const format = request.text?.format;
  if (format !== undefined && format.type !== 'text') chat.response_format = chatResponseFormat(format);
  if (typeof request.text?.verbosity === 'string') chat.verbosity = request.text.verbosity;
  if (typeof request.reasoning?.effort === 'string') chat.reasoning_effort = request.reasoning.effort;
  return chat;
}

/** What the caller of `chatRequestOf` does with the request: see there. */
export interface ChatRequestOptions {
  truncates?: boolean;
  background?: boolean;
  /** The summary a compaction item's `encrypted_content` (named `param` in errors) holds. */
  openCompaction?: (sealed: string, param: string) => string;
}

function refuseStatefulFields(
  request: ResponsesRequest | InputTokensRequest,
  historyRead: boolean,
  options: ChatRequestOptions,
): void {
  if (typeof request.previous_response_id === 'string' && !historyRead) {
    throw unsupported('previous_response_id', 'Continuing a stored response (previous_response_id)');
  }
  refuseTwoHistories(request);
  const conversation = request.conversation !== undefined && request.conversation !== null;
  if (conversation && !historyRead) throw unsupported('conversation', 'A stored conversation');
  if (request.prompt !== undefined && request.prompt !== null) throw unsupported('prompt', 'A stored prompt template');
  if (request.background === true && options.background !== true) {
    throw unsupported('background', 'Running a batch line in the background');
  }
  if (request.truncation === 'auto' && options.truncates !== true) {
    throw unsupported('truncation', "Truncation 'auto' in a batch line");
  }
  if (typeof request.max_tool_calls === 'number') {
    throw unsupported('max_tool_calls', 'A limit on built-in tool calls (max_tool_calls)');
  }
  if (typeof request.top_logprobs === 'number' && request.top_logprobs > 0) {
    throw unsupported('top_logprobs', 'Log probabilities');
  }
  const logprobs = request.include?.indexOf('message.output_text.logprobs') ?? -1;
  if (logprobs >= 0) throw unsupported(`include[${logprobs}]`, 'Log probabilities');
  const inputImages = request.include?.indexOf('message.input_image.image_url') ?? -1;
  if (inputImages >= 0) throw unsupported(`include[${inputImages}]`, 'Echoing input image URLs');
}

/**
 * The 400 for a request that names both a `previous_response_id` and a `conversation`: checked before either is read
 * (`chatRequestOf` checks it again).
 */
export function refuseTwoHistories(request: Pick<ResponsesRequest, 'previous_response_id' | 'conversation'>): void {
  const conversation = request.conversation !== undefined && request.conversation !== null;
  if (conversation && typeof request.previous_response_id === 'string') {
    throw new InvalidRequestError("'previous_response_id' and 'conversation' cannot be used together.", {
      param: 'conversation',
      code: 'invalid_value',
    });
  }
}

/** Copies the `fields` of `from` that are present (and, with `skipNull`, not null) to `to`. */
function copyDefined(
  from: Readonly<Record<string, unknown>>,
  to: Record<string, unknown>,
  fields: readonly string[],
  options: { skipNull?: boolean } = {},
): void {
  for (const field of fields) {
    const value = from[field];
    if (value === undefined || (options.skipNull === true && value === null)) continue;
    to[field] = value;
  }
}

const MESSAGE_ROLES = new Set(['user', 'assistant', 'system', 'developer']);

/** Appends the chat message(s) one input item becomes; consecutive function calls share one assistant message. */
function appendItem(
  messages: ChatMessage[],
  item: Record<string, unknown>,
  param: string,
  options: ChatRequestOptions,
): void {
  const type = item.type ?? (item.role === undefined ? undefined : 'message');
  switch (type) {
    case 'message': {
      const role = item.role;
      if (typeof role !== 'string' || !MESSAGE_ROLES.has(role)) {
        throw new InvalidRequestError(
          `Invalid value for '${param}.role': expected 'user', 'assistant', 'system' or 'developer'.`,
          { param: `${param}.role`, code: 'invalid_value' },
        );
      }
      // Many OpenAI-compatible servers know no `developer` role; OpenAI treats the two alike.
      messages.push({ role: role === 'developer' ? 'system' : role, content: chatContent(item.content, role, param) });
      return;
    }
    case 'function_call': {
      const callId = requiredString(item, 'call_id', param);
      const name = requiredString(item, 'name', param);
      const argumentsText = requiredString(item, 'arguments', param, { allowEmpty: true });
      const call = { id: callId, type: 'function', function: { name, arguments: argumentsText } };
      const last = messages.at(-1);
      if (last?.role === 'assistant' && Array.isArray(last.tool_calls)) (last.tool_calls as unknown[]).push(call);
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
      return;
    }
    case 'function_call_output': {
      const callId = requiredString(item, 'call_id', param);
      const output = item.output;
      const content = typeof output === 'string' ? output : textOfParts(output, `${param}.output`);
      messages.push({ role: 'tool', tool_call_id: callId, content });
      return;
    }
    case 'reasoning':
      return;
    case 'compaction': {
      if (options.openCompaction === undefined) throw unsupported(`${param}.type`, 'A compaction item in this request');
      const sealed = requiredString(item, 'encrypted_content', param);
      messages.push({ role: 'assistant', content: options.openCompaction(sealed, `${param}.encrypted_content`) });
      return;
    }
    case 'item_reference':
      throw unsupported(`${param}.type`, 'A reference to a stored item (item_reference)');
    default:
      throw unsupported(`${param}.type`, `An input item of type ${JSON.stringify(type ?? null)}`);
  }
}

function requiredString(
  item: Record<string, unknown>,
  field: string,
  param: string,
  options: { allowEmpty?: boolean } = {},
): string {
  const value = item[field];
  if (typeof value === 'string' && (options.allowEmpty === true || value !== '')) return value;
  if (value === undefined) {
    throw new InvalidRequestError(`Missing required parameter: '${param}.${field}'.`, {
      param: `${param}.${field}`,
      code: 'missing_required_parameter',
    });
  }
  throw new InvalidRequestError(`Invalid value for '${param}.${field}': expected a non-empty string.`, {
    param: `${param}.${field}`,
    code: 'invalid_type',
  });
}

/**
 * A message's content for chat completions: a string stays one; parts become chat parts (text, image). The
 * assistant's own earlier turns become plain text, the form every chat server accepts for them.
 */
function chatContent(content: unknown, role: string, param: string): string | Record<string, unknown>[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) {
    throw new InvalidRequestError(`Invalid value for '${param}.content': expected a string or an array of parts.`, {
      param: `${param}.content`,
      code: 'invalid_type',
    });
  }
  if (role !== 'user') return textOfParts(content, `${param}.content`);
  return content.map((part, index) => chatPart(part, `${param}.content[${index}]`));
}

function chatPart(part: unknown, param: string): Record<string, unknown> {
  const { type, text, image_url: imageUrl, detail, file_id: fileId } = partFields(part, param);
  switch (type) {
    case 'input_text':
    case 'output_text':
      if (typeof text !== 'string') throw invalidText(param);
      return { type: 'text', text };
    case 'input_image':
      if (typeof imageUrl !== 'string') {
        if (fileId !== undefined) throw unsupported(`${param}.file_id`, 'An image given by file id');
        throw new InvalidRequestError(`Missing required parameter: '${param}.image_url'.`, {
          param: `${param}.image_url`,
          code: 'missing_required_parameter',
        });
      }
      return { type: 'image_url', image_url: { url: imageUrl, ...(typeof detail === 'string' ? { detail } : {}) } };
    default:
      throw unsupported(`${param}.type`, `A content part of type ${JSON.stringify(type ?? null)}`);
  }
}

/** The text of parts that may only hold text (`input_text`, `output_text`, `refusal`), joined. */
function textOfParts(parts: unknown, param: string): string {
  if (!Array.isArray(parts)) {
    throw new InvalidRequestError(`Invalid value for '${param}': expected a string or an array of text parts.`, {
      param,
      code: 'invalid_type',
    });
  }
  return parts
    .map((part, index) => {
      const fields = partFields(part, `${param}[${index}]`);
      const text = fields.type === 'refusal' ? fields.refusal : fields.text;
      if (fields.type !== 'input_text' && fields.type !== 'output_text' && fields.type !== 'refusal') {
        throw unsupported(`${param}[${index}].type`, `A part of type ${JSON.stringify(fields.type ?? null)} here`);
      }
      if (typeof text !== 'string') throw invalidText(`${param}[${index}]`);
      return text;
    })
    .join('');
}

function partFields(part: unknown, param: string): Record<string, unknown> {
  if (typeof part !== 'object' || part === null || Array.isArray(part)) {
    throw new InvalidRequestError(`Invalid value for '${param}': expected an object.`, { param, code: 'invalid_type' });
  }
  return part as Record<string, unknown>;
}

function invalidText(param: string): InvalidRequestError {
  return new InvalidRequestError(`Invalid value for '${param}.text': expected a string.`, {
    param: `${param}.text`,
    code: 'invalid_type',
  });
}

function chatTool(tool: Record<string, unknown>, param: string): Record<string, unknown> {
  if (tool.type !== 'function') throw unsupported(`${param}.type`, `The built-in tool ${JSON.stringify(tool.type)}`);
  const name = requiredString(tool, 'name', param);
  const definition: Record<string, unknown> = { name };
  copyDefined(tool, definition, ['description', 'parameters', 'strict'], { skipNull: true });
  return { type: 'function', function: definition };
}

function chatToolChoice(choice: NonNullable<ResponsesRequest['tool_choice']>): unknown {
  if (typeof choice === 'string') return choice;
  if (choice.type === 'function') {
    return { type: 'function', function: { name: requiredString(choice, 'name', 'tool_choice') } };
  }
  throw unsupported('tool_choice.type', `A tool choice of type ${JSON.stringify(choice.type)}`);
}

function chatResponseFormat(format: NonNullable<NonNullable<ResponsesRequest['text']>['format']>): unknown {
  if (format.type === 'json_object') return { type: 'json_object' };
  if (format.name === undefined) {
    throw new InvalidRequestError("Missing required parameter: 'text.format.name'.", {
      param: 'text.format.name',
      code: 'missing_required_parameter',
    });
  }
  const schema: Record<string, unknown> = { name: format.name };
  copyDefined(format, schema, ['description', 'schema', 'strict'], { skipNull: true });
  return { type: 'json_schema', json_schema: schema };
}

/** Chat request fields whose errors are about a Responses field of another name. */
const RESPONSES_PARAMS: Readonly<Record<string, string>> = {
  messages: 'input',
  max_completion_tokens: 'max_output_tokens',
  max_tokens: 'max_output_tokens',
  response_format: 'text.format',
  reasoning_effort: 'reasoning.effort',
};

/** Chat request paths nested one level deeper than the Responses fields they came from. */
const NESTED_PARAMS: ReadonlyArray<[RegExp, string]> = [
  [/^response_format\.json_schema(?=\.|$)/, 'text.format'],
  [/^tools(\[\d+\])\.function(?=\.|$)/, 'tools$1'],
  [/^tool_choice\.function(?=\.|$)/, 'tool_choice'],
];

/** The Responses field an error about chat field `param` is about (`messages[2]` → `input`). */
export function responsesParamOf(param: string): string {
  for (const [pattern, replacement] of NESTED_PARAMS) {
    if (pattern.test(param)) return param.replace(pattern, replacement);
  }
  const field = /^[a-z_]+/.exec(param)?.[0] ?? param;
  const renamed = RESPONSES_PARAMS[field];
  if (renamed === undefined) return param;
  // A position in `messages` is not one in `input` (instructions come first, calls merge): name the field alone.
  return field === 'messages' ? renamed : renamed + param.slice(field.length);
}

/**
 * A relay error as a Responses client sees it: about the Responses field (`max_output_tokens`, not the chat one).
 * Anything but a `GatewayError` with a param is returned as it is.
 */
export function asResponsesError<E>(error: E): E | GatewayError {
  if (!(error instanceof GatewayError) || error.param === null) return error;
  const param = responsesParamOf(error.param);
  if (param === error.param) return error;
  return new GatewayError(error.status, error.type, error.code, error.message, error.retryable, {
    param,
    headers: error.headers,
    cause: error,
  });
}

/** The conversation id a Responses request names (`"conv_…"` or `{id: "conv_…"}`), or undefined. */
export function conversationIdOf(conversation: unknown): string | undefined {
  if (typeof conversation === 'string') return conversation;
  if (typeof conversation === 'object' && conversation !== null) {
    const id = (conversation as { id?: unknown }).id;
    if (typeof id === 'string') return id;
  }
  if (conversation === undefined || conversation === null) return undefined;
  throw new InvalidRequestError("Invalid value for 'conversation': expected a conversation id or {id}.", {
    param: 'conversation',
    code: 'invalid_type',
  });
}
