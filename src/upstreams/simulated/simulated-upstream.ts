/**
 * The built-in simulated upstream: `replicas` continuous-batching engines behind one name, least-loaded dispatch,
 * exact OpenAI response shapes, deterministic text and vectors, and exact usage from the gateway's own tokenizer.
 *
 * Decisions:
 * - Any model id is served; the body's `model` is echoed back.
 * - Output length is `max_completion_tokens` ?? `max_tokens` (finish reason `length`), else 16–256 tokens derived
 *   from the prompt (finish reason `stop`). `n` other than 1 and completions with several prompts are rejected with
 *   `InvalidRequestError` (code `unsupported_value`); `stop`, `echo`, `logprobs`, tools and sampling are ignored.
 * - A prompt plus its output that can never fit one replica's KV cache is rejected with `InvalidRequestError`
 *   (code `context_length_exceeded`, like vLLM's 400): retrying cannot help.
 * - An aborted `signal` cancels the sequence and rejects (or ends the iteration) with `signal.reason`.
 * - `close()` aborts unfinished requests with `UpstreamError` (code `upstream_closed`).
 */
import { randomUUID } from 'node:crypto';
import { type Clock, RealClock } from '../../clock/clock.js';
import type { SimulatedUpstreamConfig } from '../../config/config-schema.js';
import { assertNever } from '../../errors/assert-never.js';
import { type GatewayError, InvalidRequestError, UpstreamError } from '../../errors/gateway-error.js';
import { countPromptTokensOffThread } from '../../metering/prompt-token-pool.js';
import type { CountedEndpoint } from '../../metering/token-counter.js';
import type {
  StreamEvent,
  Upstream,
  UpstreamLoad,
  UpstreamRequest,
  UpstreamResult,
  UpstreamStream,
} from '../upstream.js';
import { type OpenAIUsage, toOpenAIUsage, type Usage } from '../usage.js';
import { ReplicaEngine } from './replica-engine.js';
import {
  createEmbedding,
  defaultEmbeddingDimensions,
  encodeEmbeddingBase64,
  maxEmbeddingDimensions,
} from './simulated-embedding.js';
import { generateText, generateTokens, seedFromText } from './simulated-text.js';

/** The `system_fingerprint` of every simulated answer. */
export const simulatedSystemFingerprint = 'fp_tollgate_sim';
/** Bounds of the output length when a request sets no `max_tokens`, tokens. */
export const simulatedDefaultOutputTokens = { min: 16, max: 256 } as const;

/** Options of `createSimulatedUpstream`. */
export interface SimulatedUpstreamOptions {
  /** Time source of the replicas. Default: a `RealClock`. */
  clock?: Clock;
}

/** A simulated upstream: an `Upstream` whose replicas and load can be inspected. */
export interface SimulatedUpstream extends Upstream {
  /** The replicas, for metrics and capacity replays. */
  readonly engines: readonly ReplicaEngine[];
  /** Running and waiting sequences summed over the replicas. */
  load(): Promise<UpstreamLoad>;
  /** The same as `load()`, synchronously. */
  currentLoad(): UpstreamLoad;
}

type GeneratingEndpoint = 'chat' | 'completions';
type FinishReason = 'stop' | 'length';

/** What one chat or completions request will do, decided before it is queued. */
interface GenerationPlan {
  endpoint: GeneratingEndpoint;
  model: string;
  promptTokens: number;
  outputTokens: number;
  finishReason: FinishReason;
  seed: number;
  /** The client asked for `stream_options.include_usage`: OpenAI then adds `"usage": null` to every chunk. */
  usageInChunks: boolean;
}

/** Creates the simulated upstream of `config` (one engine per replica). */
export function createSimulatedUpstream(
  config: SimulatedUpstreamConfig,
  options: SimulatedUpstreamOptions = {},
): SimulatedUpstream {
  const clock = options.clock ?? new RealClock();
  const engines = Array.from({ length: config.replicas }, () => new ReplicaEngine(config.profile, { clock }));
  // Every replica has the same profile, so one answers "can this ever fit".
  const kvTokens = engines[0]!.profile.kv_tokens;
  let closed = false;

  const pickEngine = (): ReplicaEngine => {
    let best = engines[0]!;
    for (const engine of engines) {
      const load = engine.running + engine.waiting;
      const bestLoad = best.running + best.waiting;
      if (load < bestLoad || (load === bestLoad && engine.pendingOutputTokens < best.pendingOutputTokens))
        best = engine;
    }
    return best;
  };

  const ensureOpen = () => {
    if (closed) throw closedError();
  };

  const currentLoad = (): UpstreamLoad => {
    let running = 0;
    let waiting = 0;
    for (const engine of engines) {
      running += engine.running;
      waiting += engine.waiting;
    }
    return { running, waiting };
  };

  /** Queues a request on the least-loaded replica; resolves when its last token is out. */
  const runToCompletion = (
    promptTokens: number,
    outputTokens: number,
    signal: AbortSignal,
    priority: number | undefined,
  ): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(abortReason(signal));
        return;
      }
      const onAbort = () => {
        sequence.cancel();
        reject(abortReason(signal));
      };
      const sequence = pickEngine().submit({
        promptTokens,
        outputTokens,
        ...(priority === undefined ? {} : { priority }),
        onDone: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        onAbort: () => {
          signal.removeEventListener('abort', onAbort);
          reject(closedError());
        },
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });

  const completeGeneration = async (
    endpoint: GeneratingEndpoint,
    request: UpstreamRequest,
  ): Promise<UpstreamResult> => {
    const counted = promptTokensOf(endpoint, request);
    const promptTokens = typeof counted === 'number' ? counted : await counted;
    const plan = planGeneration(endpoint, request.body, promptTokens, kvTokens);
    await runToCompletion(plan.promptTokens, plan.outputTokens, request.signal, request.priority);
    const text = generateText(plan.seed, plan.outputTokens);
    const usage = exactUsage(plan.promptTokens, plan.outputTokens);
    const created = Math.floor(clock.now() / 1000);
    const body: Record<string, unknown> =
      plan.endpoint === 'chat'
        ? {
            id: `chatcmpl-${newId()}`,
            object: 'chat.completion',
            created,
            model: plan.model,
            choices: [
              {
                index: 0,
                message: { role: 'assistant', content: text, refusal: null, annotations: [] },
                logprobs: null,
                finish_reason: plan.finishReason,
              },
            ],
            usage: chatUsage(usage),
            system_fingerprint: simulatedSystemFingerprint,
          }
        : {
            id: `cmpl-${newId()}`,
            object: 'text_completion',
            created,
            model: plan.model,
            choices: [{ text, index: 0, logprobs: null, finish_reason: plan.finishReason }],
            usage: completionsUsage(usage),
            system_fingerprint: simulatedSystemFingerprint,
          };
    return { body, usage };
  };

  const completeEmbeddings = async (request: UpstreamRequest): Promise<UpstreamResult> => {
    const body = request.body;
    const model = requireModel(body);
    const inputs = embeddingInputs(body.input);
    const dimensions = embeddingDimensions(body.dimensions);
    const format = body.encoding_format ?? 'float';
    if (format !== 'float' && format !== 'base64') {
      throw new InvalidRequestError(`Invalid 'encoding_format': expected 'float' or 'base64'.`, {
        param: 'encoding_format',
        code: 'invalid_value',
      });
    }
    const counted = promptTokensOf('embeddings', request);
    const promptTokens = typeof counted === 'number' ? counted : await counted;
    if (promptTokens > kvTokens) throw contextLengthError(kvTokens, promptTokens, 0, 'input');
    // An embedding is a prefill-only sequence: it occupies the replica for one step.
    await runToCompletion(promptTokens, 0, request.signal, request.priority);
    const data = inputs.map((input, index) => {
      const vector = createEmbedding(seedFromText(input), dimensions);
      return {
        object: 'embedding',
        index,
        embedding: format === 'base64' ? encodeEmbeddingBase64(vector) : Array.from(vector),
      };
    });
    return {
      body: { object: 'list', data, model, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } },
      usage: exactUsage(promptTokens, 0),
    };
  };

  const streamGeneration = async (request: UpstreamRequest): Promise<UpstreamStream> => {
    if (request.endpoint === 'embeddings') {
      throw new InvalidRequestError('Embeddings cannot be streamed.', { param: 'stream', code: 'unsupported_value' });
    }
    const counted = promptTokensOf(request.endpoint, request);
    const promptTokens = typeof counted === 'number' ? counted : await counted;
    const plan = planGeneration(request.endpoint, request.body, promptTokens, kvTokens);
    const signal = request.signal;
    if (signal.aborted) throw abortReason(signal);
    const pieces = generateTokens(plan.seed, plan.outputTokens);
    const chunks = new ChunkWriter(plan, Math.floor(clock.now() / 1000));
    const channel = new EventChannel();
    const onAbort = () => {
      sequence.cancel();
      channel.fail(abortReason(signal));
    };
    const sequence = pickEngine().submit({
      promptTokens: plan.promptTokens,
      outputTokens: plan.outputTokens,
      ...(request.priority === undefined ? {} : { priority: request.priority }),
      onToken: (index) => {
        if (index === 0 && plan.endpoint === 'chat') channel.push(chunks.roleChunk());
        channel.push(chunks.tokenChunk(pieces[index]!));
      },
      onDone: () => {
        signal.removeEventListener('abort', onAbort);
        channel.push(chunks.finishChunk());
        channel.push(chunks.usageEvent(exactUsage(plan.promptTokens, plan.outputTokens)));
        channel.end();
      },
      onAbort: () => {
        signal.removeEventListener('abort', onAbort);
        channel.fail(closedError());
      },
    });
    signal.addEventListener('abort', onAbort, { once: true });
    return {
      events: channel.iterate(() => {
        signal.removeEventListener('abort', onAbort);
        sequence.cancel();
      }),
    };
  };

  return {
    name: config.name,
    engines,
    async complete(request: UpstreamRequest): Promise<UpstreamResult> {
      ensureOpen();
      switch (request.endpoint) {
        case 'chat':
        case 'completions':
          return completeGeneration(request.endpoint, request);
        case 'embeddings':
          return completeEmbeddings(request);
        default:
          return assertNever(request.endpoint);
      }
    },
    async stream(request: UpstreamRequest): Promise<UpstreamStream> {
      ensureOpen();
      return streamGeneration(request);
    },
    async load(): Promise<UpstreamLoad> {
      return currentLoad();
    },
    currentLoad,
    async close(): Promise<void> {
      closed = true;
      for (const engine of engines) engine.close();
    },
  };
}

/** Validates a chat or completions body and decides its token counts, seed and finish reason. */
function planGeneration(
  endpoint: GeneratingEndpoint,
  body: Readonly<Record<string, unknown>>,
  promptTokens: number,
  kvTokens: number,
): GenerationPlan {
  const model = requireModel(body);
  let promptSource: unknown;
  if (endpoint === 'chat') {
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      throw new InvalidRequestError("'messages' must be a non-empty array.", { param: 'messages' });
    }
    promptSource = body.messages;
  } else {
    promptSource = singlePrompt(body.prompt);
  }
  if (body.n !== undefined && body.n !== null && body.n !== 1) {
    throw new InvalidRequestError('The simulated upstream supports only n = 1.', {
      param: 'n',
      code: 'unsupported_value',
    });
  }
  const seedField = typeof body.seed === 'number' ? String(body.seed) : '';
  const seed = seedFromText(`${seedField}\n${JSON.stringify(promptSource)}`);
  const requested = outputLimit(body, 'max_completion_tokens') ?? outputLimit(body, 'max_tokens');
  const promptParam = endpoint === 'chat' ? 'messages' : 'prompt';
  let outputTokens: number;
  let finishReason: FinishReason;
  if (requested !== undefined) {
    if (promptTokens + requested > kvTokens) {
      throw contextLengthError(kvTokens, promptTokens, requested, 'max_tokens');
    }
    outputTokens = requested;
    finishReason = 'length';
  } else {
    if (promptTokens >= kvTokens) throw contextLengthError(kvTokens, promptTokens, 1, promptParam);
    const { min, max } = simulatedDefaultOutputTokens;
    const natural = min + (seed % (max - min + 1));
    outputTokens = Math.min(natural, kvTokens - promptTokens);
    finishReason = outputTokens < natural ? 'length' : 'stop';
  }
  const streamOptions = body.stream_options;
  const usageInChunks =
    typeof streamOptions === 'object' &&
    streamOptions !== null &&
    (streamOptions as Record<string, unknown>).include_usage === true;
  return { endpoint, model, promptTokens, outputTokens, finishReason, seed, usageInChunks };
}

/**
 * The request's prompt tokens: the gateway's count when it passed one (this replica runs in the gateway's process and
 * would count the same body with the same tokenizer), else counted here (the standalone server, tests).
 */
function promptTokensOf(endpoint: CountedEndpoint, request: UpstreamRequest): number | Promise<number> {
  return request.promptTokens ?? countPromptTokensOffThread(endpoint, request.body);
}

function requireModel(body: Readonly<Record<string, unknown>>): string {
  if (typeof body.model !== 'string' || body.model.length === 0) {
    throw new InvalidRequestError("'model' must be a non-empty string.", { param: 'model' });
  }
  return body.model;
}

/** The one prompt of a completions request (a string, `[string]`, token ids or `[token ids]`). */
function singlePrompt(prompt: unknown): unknown {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every((item) => typeof item === 'number')) return prompt;
    if (prompt.length === 1 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]))) return prompt[0];
    if (prompt.length > 1) {
      throw new InvalidRequestError('The simulated upstream accepts one prompt per request.', {
        param: 'prompt',
        code: 'unsupported_value',
      });
    }
  }
  throw new InvalidRequestError("'prompt' must be a string, an array of token ids or a one-item array.", {
    param: 'prompt',
  });
}

/** `max_tokens` / `max_completion_tokens`: absent or null → undefined; otherwise an integer ≥ 1. */
function outputLimit(body: Readonly<Record<string, unknown>>, field: string): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new InvalidRequestError(`Invalid '${field}': expected an integer ≥ 1.`, {
      param: field,
      code: 'invalid_value',
    });
  }
  return value;
}

/** The texts to embed, one per vector. Token-id arrays are keyed by their ids. */
function embeddingInputs(input: unknown): string[] {
  const invalid = () =>
    new InvalidRequestError("'input' must be a non-empty string, array of strings or array of token ids.", {
      param: 'input',
    });
  if (typeof input === 'string') {
    if (input.length === 0) throw invalid();
    return [input];
  }
  if (!Array.isArray(input) || input.length === 0) throw invalid();
  if (input.every((item) => typeof item === 'number')) return [`ids:${input.join(',')}`];
  return input.map((item: unknown) => {
    if (typeof item === 'string' && item.length > 0) return item;
    if (Array.isArray(item) && item.length > 0 && item.every((id) => typeof id === 'number')) {
      return `ids:${item.join(',')}`;
    }
    throw invalid();
  });
}

function embeddingDimensions(value: unknown): number {
  if (value === undefined || value === null) return defaultEmbeddingDimensions;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > maxEmbeddingDimensions) {
    throw new InvalidRequestError(`Invalid 'dimensions': expected an integer from 1 to ${maxEmbeddingDimensions}.`, {
      param: 'dimensions',
      code: 'invalid_value',
    });
  }
  return value;
}

function contextLengthError(kvTokens: number, promptTokens: number, outputTokens: number, param: string) {
  return new InvalidRequestError(
    `This model's maximum context length is ${kvTokens} tokens. However, you requested ${promptTokens + outputTokens} ` +
      `tokens (${promptTokens} in the prompt, ${outputTokens} in the completion).`,
    { param, code: 'context_length_exceeded' },
  );
}

function exactUsage(promptTokens: number, outputTokens: number): Usage {
  return { input: { total: promptTokens, cached: 0 }, output: { total: outputTokens, reasoning: 0 }, estimated: false };
}

/** Chat usage with every detail field OpenAI sends. */
function chatUsage(usage: Usage): Record<string, unknown> {
  const { prompt_tokens, completion_tokens, total_tokens } = toOpenAIUsage(usage);
  return {
    prompt_tokens,
    completion_tokens,
    total_tokens,
    prompt_tokens_details: { cached_tokens: usage.input.cached, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: usage.output.reasoning,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

/** The legacy completions endpoint reports the three totals only. */
function completionsUsage(usage: Usage): Record<string, unknown> {
  const { prompt_tokens, completion_tokens, total_tokens }: OpenAIUsage = toOpenAIUsage(usage);
  return { prompt_tokens, completion_tokens, total_tokens };
}

/** Builds the JSON text of each chunk of one streamed answer, in OpenAI's field order. */
class ChunkWriter {
  private readonly id: string;
  private readonly object: string;

  constructor(
    private readonly plan: GenerationPlan,
    private readonly created: number,
  ) {
    this.id = plan.endpoint === 'chat' ? `chatcmpl-${newId()}` : `cmpl-${newId()}`;
    this.object = plan.endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  }

  roleChunk(): StreamEvent {
    return this.chunk({ role: 'assistant', content: '', refusal: null }, null, '');
  }

  tokenChunk(text: string): StreamEvent {
    return this.chunk({ content: text }, null, text);
  }

  finishChunk(): StreamEvent {
    return this.chunk({}, this.plan.finishReason, '');
  }

  usageEvent(usage: Usage): StreamEvent {
    const openAIUsage = this.plan.endpoint === 'chat' ? chatUsage(usage) : completionsUsage(usage);
    return { type: 'usage', data: JSON.stringify(this.envelope([], openAIUsage)), usage };
  }

  private chunk(delta: Record<string, unknown>, finishReason: FinishReason | null, text: string): StreamEvent {
    const choice =
      this.plan.endpoint === 'chat'
        ? { index: 0, delta, logprobs: null, finish_reason: finishReason }
        : { text, index: 0, logprobs: null, finish_reason: finishReason };
    return { type: 'chunk', data: JSON.stringify(this.envelope([choice], null)), text };
  }

  private envelope(choices: unknown[], usage: Record<string, unknown> | null): Record<string, unknown> {
    const envelope: Record<string, unknown> = {
      id: this.id,
      object: this.object,
      created: this.created,
      model: this.plan.model,
      system_fingerprint: simulatedSystemFingerprint,
      choices,
    };
    if (usage !== null || this.plan.usageInChunks) envelope.usage = usage;
    return envelope;
  }
}

/**
 * A single-consumer queue of stream events fed by engine callbacks. The engine never waits for the consumer (a
 * real engine does not either); `stop` runs when the consumer leaves early, to cancel the sequence.
 */
class EventChannel {
  private readonly buffer: StreamEvent[] = [];
  private ended = false;
  private failure: { error: unknown } | undefined;
  private wake: (() => void) | undefined;

  push(event: StreamEvent): void {
    this.buffer.push(event);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: unknown): void {
    if (this.ended || this.failure !== undefined) return;
    this.failure = { error };
    this.notify();
  }

  async *iterate(stop: () => void): AsyncGenerator<StreamEvent, void, undefined> {
    try {
      for (;;) {
        if (this.failure !== undefined) throw this.failure.error;
        const event = this.buffer.shift();
        if (event !== undefined) {
          yield event;
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      if (!this.ended) stop();
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new UpstreamError('The request was aborted.', { code: 'request_aborted', retryable: false });
}

function closedError(): GatewayError {
  return new UpstreamError('The simulated upstream is closed.', { code: 'upstream_closed' });
}

function newId(): string {
  return randomUUID().replaceAll('-', '');
}
