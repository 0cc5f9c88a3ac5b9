/**
 * The small spec at the centre: every kind of upstream (any OpenAI-compatible server, the simulated replica, later
 * others) implements `Upstream`. The gateway core depends on this file only, never on an adapter.
 */
import type { Usage } from './usage.js';

/** The OpenAI endpoints an upstream may serve. */
export const upstreamEndpoints = ['chat', 'completions', 'embeddings'] as const;
/** One of `upstreamEndpoints`: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`. */
export type UpstreamEndpoint = (typeof upstreamEndpoints)[number];

/** One call to an upstream. */
export interface UpstreamRequest {
  /** Which endpoint to call. */
  endpoint: UpstreamEndpoint;
  /**
   * The client's JSON body, unknown fields kept, with `model` already replaced by the deployment's upstream model id.
   * Adapters must not mutate it; they may send a copy with `stream`/`stream_options` set as they need.
   */
  body: Readonly<Record<string, unknown>>;
  /** The gateway's request id, forwarded to the upstream as `x-request-id`. */
  requestId: string;
  /** Aborted when the client disconnects or the gateway gives up; the adapter must cancel the upstream call. */
  signal: AbortSignal;
  /**
   * Scheduling priority for engines that order their queue by it (vLLM's `priority`: lower first): the request's
   * service class relative to `default` (priority −1, default 0, flex 1, batch 2). Adapters whose engine cannot
   * use it ignore it. Undefined when the request was not classed.
   */
  priority?: number;
  /**
   * The gateway's count of the body's prompt tokens (`countPromptTokens`, which counts only the messages, prompt or
   * input, so the same for the body sent here). An upstream in this process that would count the same body with the
   * same tokenizer (the simulated replica) uses it instead of counting again; a remote engine counts on its own.
   */
  promptTokens?: number;
}

/** A whole (non-streamed) answer. */
export interface UpstreamResult {
  /** The upstream's response object (chat completion, completion or embedding list), parsed. */
  body: Record<string, unknown>;
  /** Normalized usage, or `undefined` when the upstream reported none (the gateway then counts it itself). */
  usage: Usage | undefined;
}

/**
 * One event of a streamed answer, in arrival order. `data` is the exact JSON text of one SSE `data:` line, so the
 * relay can forward bytes without re-serializing.
 */
export type StreamEvent =
  | {
      type: 'chunk';
      /** Raw JSON text of the chunk. */
      data: string;
      /** Text this chunk adds (all choices' content, refusal and reasoning deltas), used to count delivered tokens. */
      text: string;
      /** Usage, when the upstream attached it to a chunk that also carries choices. */
      usage?: Usage;
    }
  | {
      /** The usage-only chunk (`choices: []`) that `stream_options.include_usage` adds at the end. */
      type: 'usage';
      data: string;
      usage: Usage;
    };

/** A stream whose response headers have arrived (status 2xx). */
export interface UpstreamStream {
  /**
   * The events. Iteration throws `UpstreamError` or `UpstreamTimeoutError` when the upstream fails, goes idle or ends
   * without `[DONE]`; it ends normally after `[DONE]`. Breaking out of the loop cancels the upstream request.
   */
  events: AsyncIterable<StreamEvent>;
}

/** An upstream's own view of its load, when it reports one (simulated replica, vLLM `/metrics`). */
export interface UpstreamLoad {
  /** Sequences being decoded. */
  running: number;
  /** Requests waiting for a batch slot. */
  waiting: number;
}

/** A model server (or a fleet of replicas behind one name). */
export interface Upstream {
  /** The name from the configuration. */
  readonly name: string;
  /**
   * A whole answer for `chat`, `completions` or `embeddings`. Rejects with `UpstreamError` (connect failure, non-2xx,
   * malformed body) or `UpstreamTimeoutError`.
   */
  complete(request: UpstreamRequest): Promise<UpstreamResult>;
  /**
   * A streamed answer for `chat` or `completions`. Always asks the upstream for usage; the caller decides whether the
   * client sees the usage chunk. Resolves once the upstream accepted the request (before any event); rejects like
   * `complete` when it did not — which is the last moment a retry on another deployment is safe.
   */
  stream(request: UpstreamRequest): Promise<UpstreamStream>;
  /** Current load, if the upstream reports it. */
  load?(): Promise<UpstreamLoad | undefined>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}
