import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import type { BillingService } from '../billing/billing-service.js';
import { createLogger } from '../observability/logger.js';
import { GatewayMetrics } from '../observability/metrics.js';
import type { Settlement } from '../store/ledger-store.js';
import { newRequestTrace, RequestRecorder, type SettlementSink } from './request-recorder.js';

/** A sink that keeps what it is given and makes each settlement durable only when told to (or never). */
function heldSink(): SettlementSink & { written: Settlement[]; makeDurable(): void } {
  const written: Settlement[] = [];
  const waiting: Array<(durable: boolean) => void> = [];
  return {
    written,
    write(settlement) {
      written.push(settlement);
      return new Promise((resolve) => waiting.push(resolve));
    },
    makeDurable() {
      for (const resolve of waiting.splice(0)) resolve(true);
    },
  };
}

/** A finished request that never reached a tenant's model: nothing to rate, so billing is never called. */
function finishedTrace(requestId: string) {
  const trace = newRequestTrace(requestId, 'chat', Date.now(), performance.now());
  trace.status = 404;
  trace.errorCode = 'model_not_found';
  return trace;
}

function recorderWith(
  sink: SettlementSink,
  commitWaitMs: number,
  metrics = new GatewayMetrics({ defaultMetrics: false }),
) {
  return new RequestRecorder(sink, {} as BillingService, metrics, createLogger({ level: 'silent', sync: true }), {
    commitWaitMs,
  });
}

describe('RequestRecorder', () => {
  it('answers after commitWaitMs when the settlement does not become durable, and has counted the request', async () => {
    const sink = heldSink();
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const recorder = recorderWith(sink, 60, metrics);
    const started = performance.now();
    await recorder.finish(finishedTrace('req_wait'));
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(sink.written.map((settlement) => settlement.log.requestId)).toEqual(['req_wait']);
    const counted = await metrics.requests.get();
    expect(counted.values).toEqual([
      expect.objectContaining({ labels: { endpoint: 'chat', model: 'unknown', status: '404' }, value: 1 }),
    ]);
  });

  it('answers as soon as the settlement is durable, without waiting for commitWaitMs', async () => {
    const sink = heldSink();
    const recorder = recorderWith(sink, 60_000);
    const finished = recorder.finish(finishedTrace('req_fast'));
    let answered = false;
    void finished.then(() => {
      answered = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(answered).toBe(false);
    sink.makeDurable();
    await finished;
    expect(answered).toBe(true);
  });

  it('records a trace once, however often it is finished', async () => {
    const sink = heldSink();
    const recorder = recorderWith(sink, 10);
    const trace = finishedTrace('req_once');
    await Promise.all([recorder.finish(trace), recorder.finish(trace)]);
    await recorder.finish(trace);
    expect(sink.written).toHaveLength(1);
  });
});
