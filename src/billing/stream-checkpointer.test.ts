import { describe, expect, it, vi } from 'vitest';
import type { Clock } from '../clock/clock.js';
import { newRequestTrace } from '../metering/request-recorder.js';
import { countTextTokens } from '../metering/token-counter.js';
import { createLogger } from '../observability/logger.js';
import { DeliveredText } from '../relay/delivered-text.js';
import type { InFlightStream } from '../relay/relay-service.js';
import { usageEventFixture } from '../store/ledger-fixtures.js';
import { type LedgerStore, ratingOf, type StreamCheckpoint } from '../store/ledger-store.js';
import type { BillingService } from './billing-service.js';
import { CHECKPOINT_REFRESH_INTERVALS, CHECKPOINT_STALE_INTERVALS, StreamCheckpointer } from './stream-checkpointer.js';

const tokenized = vi.hoisted(() => ({ texts: [] as string[] }));
vi.mock('../metering/token-counter.js', async (original) => {
  const actual = await original<typeof import('../metering/token-counter.js')>();
  class RecordingCounter extends actual.GrowingTextCounter {
    override count(text: string): number {
      tokenized.texts.push(text);
      return super.count(text);
    }
  }
  return { ...actual, GrowingTextCounter: RecordingCounter };
});

function stream(requestId: string, model: string, deliveredText: string): InFlightStream {
  const trace = newRequestTrace(requestId, 'chat', 1_800_000_000_000, 0);
  trace.tenantId = 'ten_a';
  trace.model = model;
  trace.stream = true;
  const delivered = new DeliveredText();
  delivered.append(deliveredText);
  return { trace, estimatedPromptTokens: 10, delivered };
}

describe('StreamCheckpointer', () => {
  it('checkpoints priced streams and never tokenizes a stream whose model has no price', async () => {
    const streams = new Map<string, InFlightStream>();
    streams.set('req_priced', stream('req_priced', 'priced', 'one two three'));
    streams.set('req_free', stream('req_free', 'free', 'four five six'));
    // Rates only the model "priced", as a price book without a price for "free" does.
    const billing = {
      enabled: true,
      rate: (request: { model: string }) =>
        request.model === 'priced' ? ratingOf(usageEventFixture({ requestId: 'r', tenantId: 'ten_a' })) : undefined,
    } as unknown as BillingService;
    const saved: StreamCheckpoint[] = [];
    const ledger = { saveCheckpoints: async (batch: StreamCheckpoint[]) => void saved.push(...batch) };
    const checkpointer = new StreamCheckpointer(streams, billing, ledger as unknown as LedgerStore, createLogger());

    expect(await checkpointer.checkpoint()).toBe(1);
    streams.get('req_priced')!.delivered.append(' seven');
    streams.get('req_free')!.delivered.append(' eight');
    expect(await checkpointer.checkpoint()).toBe(1);
    expect(saved.map((checkpoint) => checkpoint.requestId)).toEqual(['req_priced', 'req_priced']);
    expect(tokenized.texts).toEqual(['one two three', 'one two three seven']);
  });

  it('tokenizes only what each stream delivered since its last checkpoint, so long streams share a tick', async () => {
    const sentence = 'The gateway meters every token it relays. ';
    const streams = new Map<string, InFlightStream>();
    streams.set('req_a', stream('req_a', 'priced', sentence.repeat(2000)));
    streams.set('req_b', stream('req_b', 'priced', sentence.repeat(2000)));
    const counted: Array<{ requestId: string; output: number }> = [];
    const billing = {
      enabled: true,
      rate: (request: { requestId: string; usage: { output: { total: number } } }) => {
        counted.push({ requestId: request.requestId, output: request.usage.output.total });
        return ratingOf(usageEventFixture({ requestId: request.requestId, tenantId: 'ten_a' }));
      },
    } as unknown as BillingService;
    const ledger = { saveCheckpoints: async () => undefined };
    // A tick may tokenize 10,000 characters; each stream holds 84,000 and grows by one sentence a tick.
    const checkpointer = new StreamCheckpointer(streams, billing, ledger as unknown as LedgerStore, createLogger(), {
      maxCharactersPerTick: 10_000,
    });
    const grow = () => {
      for (const inFlight of streams.values()) inFlight.delivered.append(sentence);
    };

    // The first tick reaches one stream's whole text, the second the other's; from then on both fit every tick.
    expect(await checkpointer.checkpoint()).toBe(1);
    grow();
    expect(await checkpointer.checkpoint()).toBe(1);
    grow();
    expect(await checkpointer.checkpoint()).toBe(2);
    grow();
    expect(await checkpointer.checkpoint()).toBe(2);
    const last = counted.slice(-2);
    expect(last.map((entry) => entry.requestId).sort()).toEqual(['req_a', 'req_b']);
    for (const entry of last) {
      expect(entry.output).toBe(countTextTokens(streams.get(entry.requestId)!.delivered.text));
    }
  });

  it('saves a stalled stream again, unchanged, before recovery elsewhere could take it for a dead one', async () => {
    let time = 1_000_000;
    const clock = { now: () => time, setTimer: () => ({ cancel: () => undefined }) } as unknown as Clock;
    const streams = new Map<string, InFlightStream>([['req_slow', stream('req_slow', 'priced', 'one two')]]);
    const billing = {
      enabled: true,
      rate: () => ratingOf(usageEventFixture({ requestId: 'req_slow', tenantId: 'ten_a' })),
    } as unknown as BillingService;
    const saved: StreamCheckpoint[] = [];
    const ledger = { saveCheckpoints: async (batch: StreamCheckpoint[]) => void saved.push(...batch) };
    const checkpointer = new StreamCheckpointer(streams, billing, ledger as unknown as LedgerStore, createLogger(), {
      intervalMs: 100,
      clock,
    });
    expect(await checkpointer.checkpoint()).toBe(1);
    const first = saved[0]!;
    // Nothing new for just under the refresh period: nothing saved.
    for (let tick = 1; tick < CHECKPOINT_REFRESH_INTERVALS; tick++) {
      time += 100;
      expect(await checkpointer.checkpoint()).toBe(0);
    }
    time += 100;
    expect(await checkpointer.checkpoint()).toBe(1);
    expect(saved[1]).toEqual({ ...first, updatedAt: first.updatedAt + CHECKPOINT_REFRESH_INTERVALS * 100 });
    // So a stalled stream's checkpoint is never older than a refresh period, well inside the stale limit.
    expect(CHECKPOINT_REFRESH_INTERVALS).toBeLessThan(CHECKPOINT_STALE_INTERVALS);
    // Growing again, it is tokenized and saved as before.
    time += 100;
    streams.get('req_slow')!.delivered.append(' three');
    expect(await checkpointer.checkpoint()).toBe(1);
    expect(tokenized.texts.at(-1)).toBe('one two three');
  });
});
