/**
 * A streamed Response: an `SseSink` that the relay writes chat completion chunks to (`data: {…}`, then `data:
 * [DONE]`), and that writes the Responses API's semantic events to the client's sink instead:
 *
 *   response.created → response.in_progress →
 *     response.output_item.added (reasoning) → response.content_part.added → response.reasoning_text.delta … → ….done
 *     response.output_item.added (message) → response.content_part.added → response.output_text.delta … →
 *     response.output_text.done → response.content_part.done → response.output_item.done
 *     response.output_item.added (function_call) → response.function_call_arguments.delta … → ….done → ….done
 *   → response.completed (or response.incomplete; response.failed when the stream broke)
 *
 * Each event is `event: <type>` and `data: <json>` with a `sequence_number` counted from 0. The chat request asks
 * for usage, so the last chunk before `[DONE]` carries it and `response.completed` reports it.
 */
import type { SseSink } from '../../relay/sse-sink.js';
import { usageFromOpenAI } from '../../upstreams/usage.js';
import {
  functionCallItem,
  incompleteReason,
  messageItem,
  newItemId,
  type OutputItem,
  outputTextPart,
  type ResponseContext,
  reasoningItem,
  reasoningTextOf,
  responseObject,
  responsesUsage,
} from './responses-object.js';

/** The assistant message being streamed: its text and refusal parts, in the order they began. */
interface OpenMessage {
  id: string;
  outputIndex: number;
  parts: Array<{ kind: 'text' | 'refusal'; value: string }>;
}

/** The reasoning being streamed (`reasoning_content` deltas). */
interface OpenReasoning {
  id: string;
  outputIndex: number;
  text: string;
}

/** A function call being streamed, by the chat `tool_calls[].index` it came with. */
interface OpenCall {
  id: string;
  outputIndex: number;
  callId: string;
  name: string;
  arguments: string;
}

const ERROR_CODES = new Set(['server_error', 'rate_limit_exceeded', 'invalid_prompt']);

/** Translates the relay's chat completion chunks into Responses events on `target`. */
export class ResponsesStreamSink implements SseSink {
  private sequence = 0;
  /** Output items done, by output index. */
  private readonly output: OutputItem[] = [];
  private message: OpenMessage | undefined;
  /** Whether a message item was opened: an answer with none gets an empty one at the end. */
  private hadMessage = false;
  private reasoning: OpenReasoning | undefined;
  private readonly calls = new Map<number, OpenCall>();
  /** Calls replaced at their index by a later call (see `callDelta`), still to be closed. */
  private readonly doneCalls: OpenCall[] = [];
  private finishReason: unknown;
  private usage: unknown;
  private serviceTier: unknown;
  private finished = false;
  /** The final Response object, once `finish` or `fail` made it. */
  private final: Record<string, unknown> | undefined;

  /**
   * `onFinal` gets the final Response object (completed, incomplete or failed) before its event is written, and the
   * event waits for it: a stored response is readable once its client learns it is done. With `afterCreated`, the
   * stream goes on from a `response.created` sent already (sequence number 0: a background response's, sent when it
   * was queued), so it starts with `response.in_progress` at 1.
   */
  constructor(
    private readonly target: SseSink,
    private readonly context: ResponseContext,
    private readonly onFinal?: (response: Record<string, unknown>) => Promise<void>,
    private readonly options: { afterCreated?: boolean } = {},
  ) {
    if (options.afterCreated === true) this.sequence = 1;
  }

  get closed(): boolean {
    return this.target.closed;
  }

  open(headers: Record<string, string>): void {
    this.target.open(headers);
    const response = responseObject(this.context, { status: 'in_progress', output: [] });
    const created = this.options.afterCreated === true ? '' : this.event('response.created', { response });
    void this.target.write(created + this.event('response.in_progress', { response }));
  }

  write(text: string): Promise<void> | undefined {
    if (this.finished) return undefined;
    let events = '';
    for (const line of text.split('\n')) {
      if (!line.startsWith('data: ')) continue;
      const data = line.slice('data: '.length);
      events += data === '[DONE]' ? this.finish() : this.chunk(data);
    }
    if (events === '') return undefined;
    const final = this.final;
    if (final === undefined || this.onFinal === undefined) return this.target.write(events);
    this.final = undefined;
    return this.onFinal(final).then(() => this.target.write(events));
  }

  holdForEnd(): void {
    this.target.holdForEnd();
  }

  end(): void {
    this.target.end();
  }

  onClose(listener: () => void): void {
    this.target.onClose(listener);
  }

  private chunk(data: string): string {
    let chunk: Record<string, unknown>;
    try {
      chunk = JSON.parse(data) as Record<string, unknown>;
    } catch {
      // The relay only writes JSON it was given or made; a line that is not cannot be shown as an event.
      return '';
    }
    if (typeof chunk.error === 'object' && chunk.error !== null)
      return this.fail(chunk.error as Record<string, unknown>);
    if (chunk.usage !== undefined && chunk.usage !== null) this.usage = chunk.usage;
    if (chunk.service_tier !== undefined) this.serviceTier = chunk.service_tier;
    const choice = (Array.isArray(chunk.choices) ? chunk.choices[0] : undefined) as Record<string, unknown> | undefined;
    if (choice === undefined) return '';
    if (choice.finish_reason !== undefined && choice.finish_reason !== null) this.finishReason = choice.finish_reason;
    const delta = (choice.delta ?? {}) as Record<string, unknown>;
    let events = '';
    const reasoning = reasoningTextOf(delta);
    if (reasoning !== undefined) events += this.reasoningDelta(reasoning);
    if (typeof delta.content === 'string' && delta.content !== '') events += this.textDelta('text', delta.content);
    if (typeof delta.refusal === 'string' && delta.refusal !== '') events += this.textDelta('refusal', delta.refusal);
    if (Array.isArray(delta.tool_calls)) {
      for (const call of delta.tool_calls as Record<string, unknown>[]) events += this.callDelta(call);
    }
    return events;
  }

  private reasoningDelta(value: string): string {
    let events = this.closeMessage();
    if (this.reasoning === undefined) {
      const id = newItemId('rs');
      this.reasoning = { id, outputIndex: this.output.length, text: '' };
      const item = reasoningItem(id, undefined, 'in_progress');
      this.output.push(item);
      events += this.event('response.output_item.added', { output_index: this.reasoning.outputIndex, item });
      events += this.event('response.content_part.added', {
        item_id: id,
        output_index: this.reasoning.outputIndex,
        content_index: 0,
        part: { type: 'reasoning_text', text: '' },
      });
    }
    this.reasoning.text += value;
    return (
      events +
      this.event('response.reasoning_text.delta', {
        item_id: this.reasoning.id,
        output_index: this.reasoning.outputIndex,
        content_index: 0,
        delta: value,
      })
    );
  }

  /** The done events of the open reasoning item, if any. */
  private closeReasoning(): string {
    const reasoning = this.reasoning;
    if (reasoning === undefined) return '';
    this.reasoning = undefined;
    const where = { item_id: reasoning.id, output_index: reasoning.outputIndex, content_index: 0 };
    const item = reasoningItem(reasoning.id, reasoning.text, this.itemStatus());
    this.output[reasoning.outputIndex] = item;
    return (
      this.event('response.reasoning_text.done', { ...where, text: reasoning.text }) +
      this.event('response.content_part.done', { ...where, part: { type: 'reasoning_text', text: reasoning.text } }) +
      this.event('response.output_item.done', { output_index: reasoning.outputIndex, item })
    );
  }

  private textDelta(kind: 'text' | 'refusal', value: string): string {
    let events = this.closeReasoning();
    if (this.message === undefined) {
      this.hadMessage = true;
      const id = newItemId('msg');
      this.message = { id, outputIndex: this.output.length, parts: [] };
      this.output.push(messageItem(id, undefined, undefined, 'in_progress'));
      events += this.event('response.output_item.added', {
        output_index: this.message.outputIndex,
        item: messageItem(id, undefined, undefined, 'in_progress'),
      });
    }
    const message = this.message;
    let part = message.parts.at(-1);
    if (part?.kind !== kind) {
      part = { kind, value: '' };
      message.parts.push(part);
      events += this.event('response.content_part.added', {
        item_id: message.id,
        output_index: message.outputIndex,
        content_index: message.parts.length - 1,
        part: kind === 'text' ? outputTextPart('') : { type: 'refusal', refusal: '' },
      });
    }
    part.value += value;
    const where = { item_id: message.id, output_index: message.outputIndex, content_index: message.parts.length - 1 };
    return (
      events +
      (kind === 'text'
        ? this.event('response.output_text.delta', { ...where, delta: value, logprobs: [] })
        : this.event('response.refusal.delta', { ...where, delta: value }))
    );
  }

  private callDelta(delta: Record<string, unknown>): string {
    const index = typeof delta.index === 'number' ? delta.index : 0;
    const fn = (delta.function ?? {}) as Record<string, unknown>;
    let events = '';
    let call = this.calls.get(index);
    // Some servers (Gemini's OpenAI-compatible endpoint) send every call whole at index 0: a new id is a new call.
    const newId = typeof delta.id === 'string' && call !== undefined && delta.id !== call.callId;
    if (call === undefined || newId) {
      events += this.closeReasoning();
      if (call !== undefined) this.doneCalls.push(call);
      events += this.closeMessage();
      call = {
        id: newItemId('fc'),
        outputIndex: this.output.length,
        callId: typeof delta.id === 'string' ? delta.id : newItemId('call'),
        name: typeof fn.name === 'string' ? fn.name : '',
        arguments: '',
      };
      this.calls.set(index, call);
      const item = functionCallItem(call.id, call, 'in_progress');
      this.output.push(item);
      events += this.event('response.output_item.added', { output_index: call.outputIndex, item });
    } else if (typeof fn.name === 'string' && call.name === '') {
      call.name = fn.name;
    }
    if (typeof fn.arguments === 'string' && fn.arguments !== '') {
      call.arguments += fn.arguments;
      events += this.event('response.function_call_arguments.delta', {
        item_id: call.id,
        output_index: call.outputIndex,
        delta: fn.arguments,
      });
    }
    return events;
  }

  /** The done events of the open message, if any: each part's, then the item's. */
  private closeMessage(): string {
    const message = this.message;
    if (message === undefined) return '';
    this.message = undefined;
    const status = this.itemStatus();
    let events = '';
    message.parts.forEach((part, contentIndex) => {
      const where = { item_id: message.id, output_index: message.outputIndex, content_index: contentIndex };
      events +=
        part.kind === 'text'
          ? this.event('response.output_text.done', { ...where, text: part.value, logprobs: [] })
          : this.event('response.refusal.done', { ...where, refusal: part.value });
      events += this.event('response.content_part.done', {
        ...where,
        part: part.kind === 'text' ? outputTextPart(part.value) : { type: 'refusal', refusal: part.value },
      });
    });
    const item = this.messageOf(message, status);
    this.output[message.outputIndex] = item;
    return events + this.event('response.output_item.done', { output_index: message.outputIndex, item });
  }

  /** The message item with the parts streamed so far. */
  private messageOf(message: OpenMessage, status: string): OutputItem {
    return {
      ...messageItem(message.id, undefined, undefined, status),
      content: message.parts.map((part) =>
        part.kind === 'text' ? outputTextPart(part.value) : { type: 'refusal', refusal: part.value },
      ),
    };
  }

  private closeCalls(): string {
    let events = '';
    const calls = [...this.doneCalls, ...this.calls.values()].sort((a, b) => a.outputIndex - b.outputIndex);
    for (const call of calls) {
      events += this.event('response.function_call_arguments.done', {
        item_id: call.id,
        output_index: call.outputIndex,
        name: call.name,
        arguments: call.arguments,
      });
      const item = functionCallItem(call.id, call, this.itemStatus());
      this.output[call.outputIndex] = item;
      events += this.event('response.output_item.done', { output_index: call.outputIndex, item });
    }
    this.calls.clear();
    this.doneCalls.length = 0;
    return events;
  }

  private itemStatus(): string {
    return incompleteReason(this.finishReason) === undefined ? 'completed' : 'incomplete';
  }

  /** The end of a stream that ended well: open items done, then `response.completed` or `response.incomplete`. */
  private finish(): string {
    // An answer with neither text nor calls is still an (empty) message, as a whole response has.
    let events = this.closeReasoning();
    const empty = !this.hadMessage && this.calls.size === 0 && this.doneCalls.length === 0;
    if (empty) events += this.textDeltaless();
    events += this.closeMessage() + this.closeCalls();
    this.finished = true;
    const reason = incompleteReason(this.finishReason);
    const response = responseObject(this.context, {
      status: reason === undefined ? 'completed' : 'incomplete',
      output: this.output,
      usage: responsesUsage(usageFromOpenAI(this.usage)),
      ...(reason === undefined ? {} : { incompleteReason: reason }),
      serviceTier: this.serviceTier,
    });
    this.final = response;
    return events + this.event(reason === undefined ? 'response.completed' : 'response.incomplete', { response });
  }

  /** Opens an empty message with one empty text part, for an answer that had no content at all. */
  private textDeltaless(): string {
    const id = newItemId('msg');
    this.message = { id, outputIndex: this.output.length, parts: [{ kind: 'text', value: '' }] };
    const item = messageItem(id, undefined, undefined, 'in_progress');
    this.output.push(item);
    const where = { item_id: id, output_index: this.message.outputIndex, content_index: 0 };
    return (
      this.event('response.output_item.added', { output_index: this.message.outputIndex, item }) +
      this.event('response.content_part.added', { ...where, part: outputTextPart('') })
    );
  }

  /** A stream that broke after it opened: `response.failed` with the error; nothing follows it. */
  private fail(error: Record<string, unknown>): string {
    this.finished = true;
    const code = typeof error.code === 'string' && ERROR_CODES.has(error.code) ? error.code : 'server_error';
    const message = typeof error.message === 'string' ? error.message : 'The upstream stream failed.';
    // What was streamed before the failure stays in the response, its items marked incomplete.
    const output = [...this.output];
    if (this.reasoning !== undefined) {
      output[this.reasoning.outputIndex] = reasoningItem(this.reasoning.id, this.reasoning.text, 'incomplete');
    }
    if (this.message !== undefined) output[this.message.outputIndex] = this.messageOf(this.message, 'incomplete');
    for (const call of [...this.doneCalls, ...this.calls.values()]) {
      output[call.outputIndex] = functionCallItem(call.id, call, 'incomplete');
    }
    const response = responseObject(this.context, { status: 'failed', output, error: { code, message } });
    this.final = response;
    return this.event('response.failed', { response });
  }

  private event(type: string, fields: Record<string, unknown>): string {
    return responsesEvent(type, fields, this.sequence++);
  }
}

/** One event of a Responses stream, as an SSE frame: `event: <type>` and `data: <json>` with its sequence number. */
export function responsesEvent(type: string, fields: Record<string, unknown>, sequence: number): string {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...fields, sequence_number: sequence })}\n\n`;
}
