/**
 * The Response object (`object: "response"`) a chat completion becomes, whole or assembled from a stream: its
 * output items (a `reasoning` item when the server sent reasoning text, an assistant message with `output_text` and
 * `refusal` parts, then one `function_call` item per tool call), its status (`incomplete` when the answer was cut by `max_output_tokens` or a content filter), its usage in
 * the Responses shape, and the request's settings echoed as OpenAI echoes them (`store` as the gateway decided it:
 * see `StoredResponses`).
 */
import { randomBytes } from 'node:crypto';
import { emptyUsage, type Usage, usageFromOpenAI } from '../../upstreams/usage.js';
import { conversationIdOf, type ResponsesRequest } from './responses-request.js';

/** What every object of one response shares: its id, its creation time and the request it answers. */
export interface ResponseContext {
  /** `resp_…` */
  id: string;
  /** Unix seconds. */
  createdAt: number;
  request: ResponsesRequest;
  /** Whether the response is stored (it can be read again and continued from). */
  store: boolean;
}

/** A new context for `request`, received at `receivedAt` (epoch ms); stored only when `store` says so. */
export function newResponseContext(
  request: ResponsesRequest,
  receivedAt: number,
  options: { store?: boolean } = {},
): ResponseContext {
  return { id: newItemId('resp'), createdAt: Math.floor(receivedAt / 1000), request, store: options.store ?? false };
}

/** A fresh item id with OpenAI's prefix: `msg_…`, `fc_…`, `resp_…`. */
export function newItemId(prefix: string): string {
  return `${prefix}_${randomBytes(24).toString('hex')}`;
}

/** An output item of a response. */
export type OutputItem = Record<string, unknown>;

/** Why a response is incomplete, or undefined when it is not: from the chat `finish_reason`. */
export function incompleteReason(finishReason: unknown): 'max_output_tokens' | 'content_filter' | undefined {
  if (finishReason === 'length') return 'max_output_tokens';
  if (finishReason === 'content_filter') return 'content_filter';
  return undefined;
}

/**
 * Responses usage from the request's normalized usage: the tokens it was billed for, the gateway's own count when the
 * upstream reported none (`usage.estimated`). Zeros when there is none (a response that failed before any).
 */
export function responsesUsage(usage: Usage | undefined): Record<string, unknown> {
  const counted = usage ?? emptyUsage();
  return {
    input_tokens: counted.input.total,
    input_tokens_details: { cached_tokens: counted.input.cached, cache_write_tokens: 0 },
    output_tokens: counted.output.total,
    output_tokens_details: { reasoning_tokens: counted.output.reasoning },
    total_tokens: counted.input.total + counted.output.total,
  };
}

/** The assistant message item holding `text` and/or `refusal`. */
export function messageItem(id: string, text: string | undefined, refusal: string | undefined, status: string) {
  const content: Record<string, unknown>[] = [];
  if (text !== undefined) content.push(outputTextPart(text));
  if (refusal !== undefined) content.push({ type: 'refusal', refusal });
  return { id, type: 'message', status, role: 'assistant', content };
}

/** An `output_text` content part. */
export function outputTextPart(text: string): Record<string, unknown> {
  return { type: 'output_text', text, annotations: [], logprobs: [] };
}

/**
 * The reasoning text of a chat message or delta: `reasoning_content` (DeepSeek, Ark, vLLM) or `reasoning` (newer
 * vLLM, OpenRouter); undefined when there is none.
 */
export function reasoningTextOf(message: Record<string, unknown>): string | undefined {
  const text = typeof message.reasoning_content === 'string' ? message.reasoning_content : message.reasoning;
  return typeof text === 'string' && text !== '' ? text : undefined;
}

/** A `reasoning` output item holding the model's reasoning text (no summary: chat servers make none). */
export function reasoningItem(id: string, text: string | undefined, status: string): Record<string, unknown> {
  return {
    id,
    type: 'reasoning',
    summary: [],
    content: text === undefined ? [] : [{ type: 'reasoning_text', text }],
    status,
  };
}

/** A `function_call` output item. */
export function functionCallItem(
  id: string,
  call: { callId: string; name: string; arguments: string },
  status: string,
): Record<string, unknown> {
  return { id, type: 'function_call', status, call_id: call.callId, name: call.name, arguments: call.arguments };
}

/**
 * The Response object: `status` and `output` as given, every setting of the request echoed (OpenAI's defaults for
 * the ones not sent).
 */
export function responseObject(
  context: ResponseContext,
  state: {
    status: 'queued' | 'in_progress' | 'completed' | 'incomplete' | 'failed' | 'cancelled';
    output: OutputItem[];
    usage?: Record<string, unknown>;
    incompleteReason?: string;
    error?: { code: string; message: string };
    serviceTier?: unknown;
    completedAt?: number;
  },
): Record<string, unknown> {
  const request = context.request;
  const format = request.text?.format ?? { type: 'text' };
  return {
    id: context.id,
    object: 'response',
    created_at: context.createdAt,
    status: state.status,
    ...(state.status === 'completed' ? { completed_at: state.completedAt ?? Math.floor(Date.now() / 1000) } : {}),
    background: request.background === true,
    error: state.error ?? null,
    incomplete_details: state.incompleteReason === undefined ? null : { reason: state.incompleteReason },
    instructions: request.instructions ?? null,
    max_output_tokens: request.max_output_tokens ?? null,
    max_tool_calls: request.max_tool_calls ?? null,
    model: request.model,
    output: state.output,
    parallel_tool_calls: request.parallel_tool_calls ?? true,
    conversation: conversationOf(request.conversation),
    previous_response_id: request.previous_response_id ?? null,
    reasoning: { effort: request.reasoning?.effort ?? null, summary: null },
    service_tier: typeof state.serviceTier === 'string' ? state.serviceTier : (request.service_tier ?? 'auto'),
    store: context.store,
    temperature: request.temperature ?? 1,
    text: { format, verbosity: request.text?.verbosity ?? 'medium' },
    tool_choice: request.tool_choice ?? 'auto',
    tools: (request.tools ?? []).map(echoedTool),
    top_logprobs: request.top_logprobs ?? 0,
    top_p: request.top_p ?? 1,
    truncation: request.truncation ?? 'disabled',
    ...(state.usage === undefined ? {} : { usage: state.usage }),
    ...(request.user === undefined ? {} : { user: request.user }),
    metadata: request.metadata ?? {},
    ...(request.safety_identifier === undefined ? {} : { safety_identifier: request.safety_identifier }),
    ...(request.prompt_cache_key === undefined ? {} : { prompt_cache_key: request.prompt_cache_key }),
  };
}

/** The `conversation` a response echoes: `{id}` of the one its request named, or null. */
function conversationOf(conversation: unknown): { id: string } | null {
  const id = conversationIdOf(conversation);
  return id === undefined ? null : { id };
}

/** A function tool as OpenAI echoes it: `strict` and `parameters` always present. */
function echoedTool(tool: Record<string, unknown>): Record<string, unknown> {
  return { ...tool, parameters: tool.parameters ?? null, strict: tool.strict ?? true };
}

/**
 * The Response a whole chat completion becomes. `usage` is the request's normalized usage, as billed (the relay's
 * `trace.usage`: the gateway's own count when the upstream sent none); the completion's own usage without it.
 */
export function responseFromChat(
  context: ResponseContext,
  completion: Record<string, unknown>,
  usage: Usage | undefined = usageFromOpenAI(completion.usage),
): Record<string, unknown> {
  const choice = (Array.isArray(completion.choices) ? completion.choices[0] : undefined) as
    | Record<string, unknown>
    | undefined;
  const message = (choice?.message ?? {}) as Record<string, unknown>;
  const output: OutputItem[] = [];
  const text = typeof message.content === 'string' && message.content !== '' ? message.content : undefined;
  const refusal = typeof message.refusal === 'string' && message.refusal !== '' ? message.refusal : undefined;
  const toolCalls = Array.isArray(message.tool_calls) ? (message.tool_calls as Record<string, unknown>[]) : [];
  const reason = incompleteReason(choice?.finish_reason);
  const itemStatus = reason === undefined ? 'completed' : 'incomplete';
  const reasoning = reasoningTextOf(message);
  if (reasoning !== undefined) output.push(reasoningItem(newItemId('rs'), reasoning, itemStatus));
  if (text !== undefined || refusal !== undefined || toolCalls.length === 0) {
    output.push(messageItem(newItemId('msg'), text ?? (refusal === undefined ? '' : undefined), refusal, itemStatus));
  }
  for (const call of toolCalls) {
    const fn = (call.function ?? {}) as Record<string, unknown>;
    output.push(
      functionCallItem(
        newItemId('fc'),
        {
          callId: typeof call.id === 'string' ? call.id : newItemId('call'),
          name: typeof fn.name === 'string' ? fn.name : '',
          arguments: typeof fn.arguments === 'string' ? fn.arguments : '',
        },
        itemStatus,
      ),
    );
  }
  return responseObject(context, {
    status: reason === undefined ? 'completed' : 'incomplete',
    output,
    usage: responsesUsage(usage),
    ...(reason === undefined ? {} : { incompleteReason: reason }),
    serviceTier: completion.service_tier,
  });
}

/** The id prefix OpenAI gives an input item of each type. */
const ITEM_ID_PREFIXES: Readonly<Record<string, string>> = {
  message: 'msg',
  function_call: 'fc',
  function_call_output: 'fco',
  reasoning: 'rs',
  compaction: 'cmp',
};

/**
 * A request's input as the items `GET /v1/responses/{id}/input_items` lists: a string becomes one user message;
 * every item gets an `id` (its own when it came with one) and a `status`; a message's string content becomes one
 * text part (`input_text`, or `output_text` for the assistant's own turns). Call it on a request `chatRequestOf`
 * accepted: the items' shapes are checked there.
 */
export function inputItemsOf(request: Pick<ResponsesRequest, 'input'>): Record<string, unknown>[] {
  const items: Record<string, unknown>[] =
    typeof request.input === 'string' ? [{ type: 'message', role: 'user', content: request.input }] : request.input;
  return items.map((item) => {
    const type = typeof item.type === 'string' ? item.type : 'message';
    const stored: Record<string, unknown> = {
      ...item,
      id: typeof item.id === 'string' && item.id !== '' ? item.id : newItemId(ITEM_ID_PREFIXES[type] ?? 'item'),
      type,
    };
    if (type === 'message' && typeof item.content === 'string') {
      stored.content = [
        item.role === 'assistant' ? outputTextPart(item.content) : { type: 'input_text', text: item.content },
      ];
    }
    if (type !== 'reasoning' && type !== 'compaction' && stored.status === undefined) stored.status = 'completed';
    return stored;
  });
}
