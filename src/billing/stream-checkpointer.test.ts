import { describe, expect, it, vi } from 'vitest';
import { newRequestTrace } from '../metering/request-recorder.js';
import { createLogger } from '../observability/logger.js';
import type { InFlightStream } from '../relay/relay-service.js';
import { usageEventFixture } from '../store/ledger-fixtures.js';
import { type LedgerStore, ratingOf, type StreamCheckpoint } from '../store/ledger-store.js';
import type { BillingService } from './billing-service.js';
import { StreamCheckpointer } from './stream-checkpointer.js';

const tokenized = vi.hoisted(() => ({ texts: [] as string[] }));
vi.mock('../metering/token-counter.js', async (original) => {
  const actual = await original<typeof import('../metering/token-counter.js')>();
  return {
    ...actual,
    countTextTokens: (text: string) => {
      tokenized.texts.push(text);
      return actual.countTextTokens(text);
    },
  };
});

function stream(requestId: string, model: string, deliveredText: string): InFlightStream {
  const trace = newRequestTrace(requestId, 'chat', 1_800_000_000_000, 0);
  trace.tenantId = 'ten_a';
  trace.model = model;
  trace.stream = true;
  return { trace, estimatedPromptTokens: 10, deliveredText };
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
    streams.get('req_priced')!.deliveredText += ' seven';
    streams.get('req_free')!.deliveredText += ' eight';
    expect(await checkpointer.checkpoint()).toBe(1);
    expect(saved.map((checkpoint) => checkpoint.requestId)).toEqual(['req_priced', 'req_priced']);
    expect(tokenized.texts).toEqual(['one two three', 'one two three seven']);
  });
});
