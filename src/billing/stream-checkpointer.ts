/**
 * Checkpoints of in-flight streams, so a crash bills at least what was delivered by the last checkpoint and never
 * more than was delivered: every `intervalMs` each stream whose delivered text grew is rated at the tokens
 * delivered so far (the gateway's tokenizer, flagged estimated) and saved. A stream that finishes deletes its
 * checkpoint in the same transaction as its final usage event.
 *
 * Recovery turns checkpoints nobody updated for `staleAfterMs` into final usage events — at start in embedded mode
 * (every checkpoint belongs to the dead process), and periodically where several processes share the store (after
 * `CHECKPOINT_STALE_INTERVALS` intervals). A live stream whose text stopped growing is saved again, unchanged, every
 * `CHECKPOINT_REFRESH_INTERVALS` intervals, so it never looks stale. The usage event is idempotent by request id: if
 * a live process finishes a stream whose checkpoint was recovered, its event is skipped, so the request is never
 * billed twice.
 *
 * Tokenizing is incremental and bounded: each stream keeps a `GrowingTextCounter`, so a tick tokenizes only what a
 * stream delivered since its last checkpoint (and the last two pieces again), not its whole output; at most
 * `maxCharactersPerTick` characters are tokenized per tick, and streams not reached keep their previous checkpoint
 * (still a valid lower bound).
 */
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import { rateRequestFor } from '../metering/request-recorder.js';
import { GrowingTextCounter } from '../metering/token-counter.js';
import type { Logger } from '../observability/logger.js';
import type { InFlightStream } from '../relay/relay-service.js';
import { type LedgerStore, ratingOf, type Settlement, type StreamCheckpoint } from '../store/ledger-store.js';
import { type BillingService, usageEventOf } from './billing-service.js';

/** Intervals after which a checkpoint whose stream delivered nothing new is saved again, unchanged. */
export const CHECKPOINT_REFRESH_INTERVALS = 10;

/**
 * Intervals after which a checkpoint nobody saved belongs to a dead process (`recoverCheckpoints`' `staleAfterMs`
 * where several processes share the store): three refreshes missed.
 */
export const CHECKPOINT_STALE_INTERVALS = 3 * CHECKPOINT_REFRESH_INTERVALS;

/** Options of `StreamCheckpointer`. */
export interface StreamCheckpointerOptions {
  /** Checkpoint period, ms. Default 1000. */
  intervalMs?: number;
  /** Most characters tokenized per tick. Default 4,000,000. */
  maxCharactersPerTick?: number;
  clock?: Clock;
}

/** Periodically saves delivered-token checkpoints of in-flight streams. */
export class StreamCheckpointer {
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly maxCharactersPerTick: number;
  /**
   * Per stream: the delivered length last checkpointed, the counter that has seen the text so far, and the checkpoint
   * last saved (saved again unchanged, with a new time, when the stream stalls: see `CHECKPOINT_REFRESH_INTERVALS`).
   */
  private readonly checkpointed = new Map<
    string,
    { length: number; counter: GrowingTextCounter; checkpoint: StreamCheckpoint }
  >();
  /** Streams found unpriced (their model has no price): never tokenized again. */
  private readonly unpriced = new Set<string>();
  private timer: ClockTimer | undefined;
  private running = false;
  private cursor = 0;

  constructor(
    private readonly streams: ReadonlyMap<string, InFlightStream>,
    private readonly billing: BillingService,
    private readonly ledger: LedgerStore,
    private readonly logger: Logger,
    options: StreamCheckpointerOptions = {},
  ) {
    this.clock = options.clock ?? new RealClock();
    this.intervalMs = options.intervalMs ?? 1000;
    this.maxCharactersPerTick = options.maxCharactersPerTick ?? 4_000_000;
  }

  start(): void {
    if (!this.billing.enabled || this.timer !== undefined) return;
    const tick = () => {
      this.timer = this.clock.setTimer(this.intervalMs, tick);
      void this.checkpoint();
    };
    this.timer = this.clock.setTimer(this.intervalMs, tick);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Saves one round of checkpoints. Exposed for tests. */
  async checkpoint(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const now = this.clock.now();
      const checkpoints: StreamCheckpoint[] = [];
      let budget = this.maxCharactersPerTick;
      const entries = [...this.streams.values()];
      for (let index = 0; index < entries.length && budget > 0; index++) {
        const stream = entries[(this.cursor + index) % entries.length]!;
        const { trace } = stream;
        const delivered = stream.delivered;
        const previous = this.checkpointed.get(trace.requestId);
        if (delivered.length === 0 || this.unpriced.has(trace.requestId)) continue;
        if (previous?.length === delivered.length) {
          // Nothing new: saved again as it is only when it would soon look like a dead process's.
          if (now - previous.checkpoint.updatedAt >= CHECKPOINT_REFRESH_INTERVALS * this.intervalMs) {
            previous.checkpoint = { ...previous.checkpoint, updatedAt: now };
            checkpoints.push(previous.checkpoint);
          }
          continue;
        }
        const input = { total: stream.estimatedPromptTokens, cached: 0 };
        // Whether the stream is priced at all is known without its output: rate it at none first, once, rather
        // than tokenize every second what would never be charged.
        if (previous === undefined) {
          const probe = rateRequestFor(trace, { input, output: { total: 0, reasoning: 0 }, estimated: true });
          if (probe === undefined || this.billing.rate(probe) === undefined) {
            this.unpriced.add(trace.requestId);
            continue;
          }
        }
        const counter = previous?.counter ?? new GrowingTextCounter();
        const text = delivered.text;
        budget -= counter.unsettledLength(text);
        const request = rateRequestFor(trace, {
          input,
          output: { total: counter.count(text), reasoning: 0 },
          estimated: true,
        });
        const rating = request === undefined ? undefined : this.billing.rate(request);
        if (request === undefined || rating === undefined) continue;
        const checkpoint: StreamCheckpoint = {
          requestId: trace.requestId,
          event: usageEventOf(request, rating),
          reservation: trace.reservation?.amount ?? 0n,
          updatedAt: now,
        };
        if (trace.reservation?.owner !== undefined) checkpoint.reservationOwner = trace.reservation.owner;
        this.checkpointed.set(trace.requestId, { length: text.length, counter, checkpoint });
        checkpoints.push(checkpoint);
      }
      this.cursor = entries.length === 0 ? 0 : (this.cursor + 1) % entries.length;
      for (const requestId of this.checkpointed.keys()) {
        if (!this.streams.has(requestId)) this.checkpointed.delete(requestId);
      }
      for (const requestId of this.unpriced) {
        if (!this.streams.has(requestId)) this.unpriced.delete(requestId);
      }
      if (checkpoints.length > 0) await this.ledger.saveCheckpoints(checkpoints);
      return checkpoints.length;
    } catch (error: unknown) {
      this.logger.error({ err: error }, 'stream checkpoint failed');
      return 0;
    } finally {
      this.running = false;
    }
  }
}

/**
 * Bills the checkpoints left by a process that died: each becomes a final (estimated) usage event and a
 * request-log record with error code `interrupted`, and its reservation is released. Returns how many.
 */
export async function recoverCheckpoints(
  ledger: LedgerStore,
  options: { staleAfterMs: number; now: number; logger: Logger },
): Promise<number> {
  const stale = (await ledger.listCheckpoints()).filter(
    (checkpoint) => checkpoint.updatedAt <= options.now - options.staleAfterMs,
  );
  if (stale.length === 0) return 0;
  const settlements: Settlement[] = stale.map(({ event, reservation, reservationOwner, requestId }) => ({
    log: {
      requestId,
      tenantId: event.tenantId,
      keyId: event.keyId,
      endpoint: 'chat',
      model: event.model,
      deployment: event.deployment,
      status: 200,
      errorCode: 'interrupted',
      stream: true,
      promptTokens: event.inputTokens + event.cachedTokens,
      cachedTokens: event.cachedTokens,
      completionTokens: event.outputTokens,
      reasoningTokens: event.reasoningTokens,
      usageEstimated: true,
      latencyMs: 0,
      ttftMs: null,
      attempts: 1,
      createdAt: event.receivedAt,
    },
    rating: ratingOf(event),
    reservation:
      reservationOwner === undefined
        ? { tenantId: event.tenantId, amount: reservation }
        : { tenantId: event.tenantId, amount: reservation, owner: reservationOwner },
    checkpointRequestId: requestId,
  }));
  await ledger.settle(settlements);
  options.logger.warn({ count: settlements.length }, 'billed the delivered tokens of streams interrupted by a crash');
  return settlements.length;
}
