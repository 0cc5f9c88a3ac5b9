/**
 * One replica of an inference engine with continuous batching (DESIGN.md, "The simulated replica").
 *
 * Requests wait in FIFO order and join the running batch at a step boundary while there is a batch slot and KV-cache
 * room for their prompt plus their whole output. A step advances every running sequence by one token and lasts
 * `t_fixed_ms + b × t_seq_ms` (b running sequences) plus the prefill (`prompt_tokens × t_prefill_us`) of the sequences
 * that joined at that step. A sequence's first token is emitted at the end of its first step, so
 * TTFT = queue wait + prefill + first step.
 *
 * Two profile options model what real engines (vLLM, SGLang) do under mixed load; both are off by default:
 * - `prefill_chunk_tokens` > 0 (chunked prefill): a step prefills at most that many prompt tokens. Sequences whose
 *   prompt is done decode one token each, as always; the budget then goes to the sequences still in prefill (in
 *   joining order) and to newly joining ones, each taking a chunk of its prompt. A sequence emits its first token at
 *   the end of the step that prefilled its last chunk, and only sequences that emit a token count in `b`. A long
 *   prompt therefore no longer stretches one step by its whole prefill; it is spread over several steps that the
 *   running decodes share.
 * - `scheduling_policy: priority`: waiting requests join in the order of their `priority` (lower first, then
 *   arrival), and the prefill budget goes to sequences in that order, so a high-priority request neither waits behind
 *   nor prefills behind lower-priority ones. Running sequences are never pre-empted. With
 *   `background_prefill_tokens` > 0, requests of priority > 0 (background: batch work) get at most that many prompt
 *   tokens per step, so a foreground request never finds a step stretched by more than that much background prefill.
 *
 * The engine holds one timer per step, never one per token or sequence, so a virtual clock replays hours of traffic
 * in seconds.
 */
import { Value } from '@sinclair/typebox/value';
import { type Clock, type ClockTimer, RealClock } from '../../clock/clock.js';
import { type SimulatedProfile, SimulatedProfileSchema } from '../../config/config-schema.js';

/** The profile of DESIGN.md: an 8B model on one H200-class GPU (17 µs, 3.4 ms, 0.055 ms, 64, 262144). */
export const defaultSimulatedProfile: Readonly<SimulatedProfile> = Object.freeze(resolveSimulatedProfile({}));

/** A full profile from a partial one, defaults from the config schema. Throws `RangeError` on an invalid value. */
export function resolveSimulatedProfile(partial: Partial<SimulatedProfile>): SimulatedProfile {
  const profile = Value.Default(SimulatedProfileSchema, { ...partial }) as SimulatedProfile;
  if (!Value.Check(SimulatedProfileSchema, profile)) {
    const first = Value.Errors(SimulatedProfileSchema, profile).First();
    throw new RangeError(`Invalid simulated profile${first ? ` at ${first.path}: ${first.message}` : ''}`);
  }
  return profile;
}

/** Duration of one decode step with `batchSize` running sequences and `prefillTokens` joining prompt tokens, ms. */
export function stepDurationMs(profile: SimulatedProfile, batchSize: number, prefillTokens = 0): number {
  return profile.t_fixed_ms + batchSize * profile.t_seq_ms + (prefillTokens * profile.t_prefill_us) / 1000;
}

/** One request handed to the engine. Callbacks run synchronously inside the engine's step timer. */
export interface EngineRequest {
  /** Prompt tokens (prefilled when the sequence joins the batch, in chunks under `prefill_chunk_tokens`). */
  promptTokens: number;
  /**
   * Output tokens to generate. 0 models a prefill-only request (embeddings): it takes one step and emits no token.
   */
  outputTokens: number;
  /**
   * Scheduling priority under the `priority` policy: lower joins and prefills first (vLLM's convention). An integer;
   * ignored under `fcfs`. Default 0.
   */
  priority?: number;
  /** The sequence joined the running batch (its queue wait ends now). */
  onAdmit?: () => void;
  /** Token `index` (0-based) was produced, at `clock.now()`. */
  onToken?: (index: number) => void;
  /** All output tokens were produced (called after the last `onToken`). */
  onDone?: () => void;
  /** The engine was closed before the sequence finished. Not called after `cancel()`. */
  onAbort?: () => void;
}

/** Lifecycle of a sequence. */
export type EngineSequenceState = 'waiting' | 'running' | 'done' | 'cancelled' | 'aborted';

/** The handle of a submitted request. */
export interface EngineSequence {
  readonly state: EngineSequenceState;
  /** Output tokens produced so far. */
  readonly generatedTokens: number;
  /**
   * Stops the sequence (the client went away): no callback fires after this. A waiting sequence leaves the queue at
   * once; a running one holds its batch slot and KV room until the current step ends.
   */
  cancel(): void;
}

/** Cumulative counters, for metrics and capacity replays. */
export interface EngineStats {
  /** Decode steps run. */
  steps: number;
  /** Prompt tokens prefilled. */
  promptTokens: number;
  /** Output tokens produced. */
  generatedTokens: number;
  /** Sequences that produced all their tokens. */
  completed: number;
  /** Sequences cancelled by their caller. */
  cancelled: number;
  /** Time at least one sequence was running, ms. */
  busyMs: number;
}

/** Options of a `ReplicaEngine`. */
export interface ReplicaEngineOptions {
  /** Time source. Default: a `RealClock`. */
  clock?: Clock;
  /**
   * On a real clock, when the timer fires this far behind the model's time (an overloaded process), the model skips
   * ahead instead of replaying the backlog in a burst, ms. Default 20. Never applies on a virtual clock.
   */
  maxLagMs?: number;
}

class Sequence implements EngineSequence {
  state: EngineSequenceState = 'waiting';
  generatedTokens = 0;
  /** Prompt tokens not yet prefilled (after the step in progress: minus `stepPrefill`). */
  prefillRemaining: number;
  /** Prompt tokens prefilled by the step in progress. */
  stepPrefill = 0;

  constructor(
    readonly request: EngineRequest,
    private readonly engine: ReplicaEngine,
    /** Scheduling priority (0 under `fcfs`), lower first. */
    readonly priority: number,
    /** Submission order, for ties. */
    readonly order: number,
  ) {
    this.prefillRemaining = request.promptTokens;
  }

  get reservedTokens(): number {
    return this.request.promptTokens + this.request.outputTokens;
  }

  cancel(): void {
    if (this.state === 'waiting' || this.state === 'running') this.engine.cancelSequence(this);
  }
}

// Steps handled in one timer callback before yielding to the event loop (zero-duration profiles, lagging clocks).
const maxStepsPerCallback = 256;

/** The waiting requests of one priority, FIFO (a head index instead of `shift`, compacted now and then). */
interface WaitingLevel {
  priority: number;
  items: Sequence[];
  head: number;
}

/** Whether `a` is served before `b`: lower priority value first, then submission order. */
function servedBefore(a: Sequence, b: Sequence): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.order < b.order);
}

/** A continuous-batching replica on a `Clock`. */
export class ReplicaEngine {
  readonly profile: Readonly<SimulatedProfile>;
  private readonly clock: Clock;
  private readonly maxLagMs: number;
  /** Waiting requests by priority, lowest value first (one level under `fcfs`). */
  private levels: WaitingLevel[] = [];
  private waitingCount = 0;
  private submitted = 0;
  private batch: Sequence[] = [];
  /** Running sequences whose prompt is not fully prefilled (chunked prefill only), in serving order. */
  private prefilling: Sequence[] = [];
  private cancelledInBatch = 0;
  private kvInUse = 0;
  private outputPending = 0;
  private timer: ClockTimer | undefined;
  /** True while the step timer's callback runs (callbacks may submit; the running loop picks them up). */
  private inTimer = false;
  /** End of the step in progress (model time), or undefined between steps. */
  private stepEnd: number | undefined;
  /** Model time at which the next step starts. */
  private cursor = 0;
  private closed = false;
  private readonly counters: EngineStats = {
    steps: 0,
    promptTokens: 0,
    generatedTokens: 0,
    completed: 0,
    cancelled: 0,
    busyMs: 0,
  };

  constructor(profile: Partial<SimulatedProfile> = {}, options: ReplicaEngineOptions = {}) {
    this.profile = Object.freeze(resolveSimulatedProfile(profile));
    this.clock = options.clock ?? new RealClock();
    this.maxLagMs = options.maxLagMs ?? 20;
  }

  /** Sequences in the running batch (cancelled ones excluded). */
  get running(): number {
    return this.batch.length - this.cancelledInBatch;
  }

  /** Requests waiting for a batch slot or KV room. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** KV-cache tokens reserved by running sequences (prompt + whole output each). */
  get kvTokensInUse(): number {
    return this.kvInUse;
  }

  /** Output tokens still to produce, running and waiting sequences together. */
  get pendingOutputTokens(): number {
    return this.outputPending;
  }

  /** A snapshot of the cumulative counters. */
  get stats(): EngineStats {
    return { ...this.counters };
  }

  /** Whether a request of this size can ever run (it fits the KV cache alone). */
  canFit(promptTokens: number, outputTokens: number): boolean {
    return promptTokens + outputTokens <= this.profile.kv_tokens;
  }

  /**
   * Queues a request. Throws `RangeError` when it can never fit (`canFit` is false), has a negative or fractional
   * token count, or the engine is closed.
   */
  submit(request: EngineRequest): EngineSequence {
    if (this.closed) throw new RangeError('The replica engine is closed');
    for (const count of [request.promptTokens, request.outputTokens]) {
      if (!Number.isInteger(count) || count < 0)
        throw new RangeError(`Token counts must be integers ≥ 0, got ${count}`);
    }
    if (!this.canFit(request.promptTokens, request.outputTokens)) {
      throw new RangeError(
        `A sequence of ${request.promptTokens + request.outputTokens} tokens exceeds the KV cache (${this.profile.kv_tokens})`,
      );
    }
    const priority = this.profile.scheduling_policy === 'priority' ? (request.priority ?? 0) : 0;
    if (!Number.isInteger(priority)) throw new RangeError(`priority must be an integer, got ${priority}`);
    const sequence = new Sequence(request, this, priority, this.submitted++);
    this.levelOf(priority).items.push(sequence);
    this.waitingCount++;
    this.outputPending += request.outputTokens;
    if (this.timer === undefined && this.stepEnd === undefined && !this.inTimer) {
      // Start on a zero-delay timer rather than now, so every request submitted at this instant joins the same step.
      this.cursor = this.clock.now();
      this.timer = this.clock.setTimer(0, () => this.onTimer());
    }
    return sequence;
  }

  /** Stops the engine: cancels its timer and aborts every unfinished sequence (`onAbort`). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
    this.stepEnd = undefined;
    const unfinished = [...this.batch, ...this.levels.flatMap((level) => level.items.slice(level.head))];
    this.batch = [];
    this.prefilling = [];
    this.levels = [];
    this.waitingCount = 0;
    this.cancelledInBatch = 0;
    this.kvInUse = 0;
    this.outputPending = 0;
    for (const sequence of unfinished) {
      if (sequence.state !== 'waiting' && sequence.state !== 'running') continue;
      sequence.state = 'aborted';
      sequence.request.onAbort?.();
    }
  }

  /** @internal Called by `EngineSequence.cancel`. */
  cancelSequence(sequence: Sequence): void {
    const remaining = sequence.request.outputTokens - sequence.generatedTokens;
    this.outputPending -= remaining;
    this.counters.cancelled++;
    // A waiting sequence stays in the queue as a hole that admission skips.
    if (sequence.state === 'waiting') {
      this.waitingCount--;
    } else {
      this.cancelledInBatch++;
    }
    sequence.state = 'cancelled';
  }

  private onTimer(): void {
    this.timer = undefined;
    this.inTimer = true;
    try {
      this.runDueSteps();
    } finally {
      this.inTimer = false;
    }
  }

  private runDueSteps(): void {
    const now = this.clock.now();
    for (let steps = 0; steps < maxStepsPerCallback; steps++) {
      if (this.stepEnd !== undefined) {
        if (this.stepEnd > now) break;
        const ended = this.stepEnd;
        this.stepEnd = undefined;
        this.finishStep();
        if (this.closed) return;
        this.cursor = now - ended > this.maxLagMs ? now : ended;
      }
      if (!this.startStep()) return;
    }
    if (this.stepEnd !== undefined)
      this.timer = this.clock.setTimer(Math.max(0, this.stepEnd - now), () => this.onTimer());
  }

  /** Admits waiting sequences and schedules the step's end. Returns false when there is nothing to run. */
  private startStep(): boolean {
    this.dropCancelledFromBatch();
    const chunk = this.profile.prefill_chunk_tokens;
    let budget = chunk > 0 ? chunk : Number.POSITIVE_INFINITY;
    const background = this.profile.scheduling_policy === 'priority' ? this.profile.background_prefill_tokens : 0;
    let backgroundBudget = background > 0 ? background : Number.POSITIVE_INFINITY;
    let prefillTokens = 0;
    // Sequences that emit a token (or, with no output, finish) at the end of this step: every one whose prompt is done.
    let emitting = this.batch.length - this.prefilling.length;
    const prefill = (sequence: Sequence) => {
      const isBackground = sequence.priority > 0;
      const take = Math.min(sequence.prefillRemaining, budget, isBackground ? backgroundBudget : budget);
      sequence.stepPrefill = take;
      budget -= take;
      // Foreground prefill counts against the background budget too: background work only fills a step's prefill up
      // to that size, never on top of a long foreground prompt.
      backgroundBudget = Math.max(0, backgroundBudget - take);
      prefillTokens += take;
      if (take === sequence.prefillRemaining) emitting++;
    };
    // The budget goes in serving order: the sequences in prefill and the waiting ones of a priority before those of
    // the next (under `fcfs` everything is priority 0: sequences in prefill first, then the queue).
    const prefilling = this.prefilling;
    const joined: Sequence[] = [];
    let served = 0;
    const maxBatch = this.profile.max_batch;
    const kvTokens = this.profile.kv_tokens;
    admit: for (const level of this.levels) {
      while (served < prefilling.length && prefilling[served]!.priority <= level.priority)
        prefill(prefilling[served++]!);
      while (level.head < level.items.length && this.batch.length < maxBatch) {
        const next = level.items[level.head]!;
        if (next.state !== 'waiting') {
          level.head++;
          continue;
        }
        // Strict order: a head that does not fit blocks the ones behind it (no starvation of long prompts), and with
        // the prefill budget spent nothing more joins this step.
        const room = next.priority > 0 ? Math.min(budget, backgroundBudget) : budget;
        if (this.kvInUse + next.reservedTokens > kvTokens || (room === 0 && next.prefillRemaining > 0)) break admit;
        level.head++;
        this.waitingCount--;
        this.kvInUse += next.reservedTokens;
        prefill(next);
        if (next.stepPrefill < next.prefillRemaining) joined.push(next);
        next.state = 'running';
        this.batch.push(next);
        next.request.onAdmit?.();
      }
    }
    while (served < prefilling.length) prefill(prefilling[served++]!);
    for (const sequence of joined) this.insertPrefilling(sequence);
    this.compactLevels();
    if (this.batch.length === 0) return false;
    const duration = stepDurationMs(this.profile, emitting, prefillTokens);
    this.counters.promptTokens += prefillTokens;
    this.counters.busyMs += duration;
    this.stepEnd = this.cursor + duration;
    return true;
  }

  /** Advances every running sequence by one token and retires the finished ones. */
  private finishStep(): void {
    this.counters.steps++;
    const batch = this.batch;
    let kept = 0;
    for (let index = 0; index < batch.length; index++) {
      const sequence = batch[index]!;
      if (sequence.state === 'running' && sequence.prefillRemaining > 0) {
        sequence.prefillRemaining -= sequence.stepPrefill;
        sequence.stepPrefill = 0;
      }
      if (sequence.state === 'running' && sequence.prefillRemaining === 0) {
        const request = sequence.request;
        if (sequence.generatedTokens < request.outputTokens) {
          const tokenIndex = sequence.generatedTokens++;
          this.outputPending--;
          this.counters.generatedTokens++;
          request.onToken?.(tokenIndex);
          if (this.closed) return;
        }
        // A callback may have cancelled the sequence.
        if (sequence.state === 'running' && sequence.generatedTokens >= request.outputTokens) {
          sequence.state = 'done';
          this.kvInUse -= sequence.reservedTokens;
          this.counters.completed++;
          request.onDone?.();
          if (this.closed) return;
          continue;
        }
      }
      batch[kept++] = sequence;
    }
    batch.length = kept;
    if (this.prefilling.length > 0) {
      this.prefilling = this.prefilling.filter(
        (sequence) => sequence.state === 'running' && sequence.prefillRemaining > 0,
      );
    }
  }

  private dropCancelledFromBatch(): void {
    if (this.cancelledInBatch === 0) return;
    this.batch = this.batch.filter((sequence) => {
      if (sequence.state !== 'cancelled') return true;
      this.kvInUse -= sequence.reservedTokens;
      return false;
    });
    this.prefilling = this.prefilling.filter((sequence) => sequence.state === 'running');
    this.cancelledInBatch = 0;
  }

  /** Adds a sequence whose prefill goes on after this step, keeping the serving order. */
  private insertPrefilling(sequence: Sequence): void {
    const prefilling = this.prefilling;
    let index = prefilling.length;
    while (index > 0 && servedBefore(sequence, prefilling[index - 1]!)) index--;
    prefilling.splice(index, 0, sequence);
  }

  /** The waiting level of `priority`, created in order if new. */
  private levelOf(priority: number): WaitingLevel {
    let index = 0;
    while (index < this.levels.length && this.levels[index]!.priority < priority) index++;
    let level = this.levels[index];
    if (level === undefined || level.priority !== priority) {
      level = { priority, items: [], head: 0 };
      this.levels.splice(index, 0, level);
    }
    return level;
  }

  private compactLevels(): void {
    for (const level of this.levels) {
      if (level.head > 1024 && level.head * 2 > level.items.length) {
        level.items.splice(0, level.head);
        level.head = 0;
      }
    }
  }
}
