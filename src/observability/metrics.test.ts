import { describe, expect, it } from 'vitest';
import type { SettlementWriterStats } from '../metering/settlement-writer.js';
import { GatewayMetrics } from './metrics.js';

describe('GatewayMetrics.observeRequestLog', () => {
  it('exports every writer counter under its own name, and only its increase at each scrape', async () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    // Distinct values: a counter reading another stat shows the wrong number.
    const stats: SettlementWriterStats = {
      committed: 11,
      transactions: 2,
      dropped: 3,
      failedCommits: 4,
      spooled: 5,
      journaled: 6,
      journalFailures: 7,
    };
    metrics.observeRequestLog(() => stats);
    const expected = (current: SettlementWriterStats) => [
      `tollgate_request_log_committed_total ${current.committed}`,
      `tollgate_request_log_transactions_total ${current.transactions}`,
      `tollgate_request_log_dropped_total ${current.dropped}`,
      `tollgate_request_log_failed_commits_total ${current.failedCommits}`,
      `tollgate_request_log_spooled_total ${current.spooled}`,
      `tollgate_request_log_journaled_total ${current.journaled}`,
      `tollgate_request_log_journal_failures_total ${current.journalFailures}`,
    ];
    const exported = async () => (await metrics.registry.metrics()).split('\n');
    expect(await exported()).toEqual(expect.arrayContaining(expected(stats)));
    stats.committed = 20;
    stats.journaled = 9;
    expect(await exported()).toEqual(expect.arrayContaining(expected(stats)));
  });
});

describe('GatewayMetrics process metrics', () => {
  it('sees an event-loop stall longer than the lag sampling period', async () => {
    const metrics = new GatewayMetrics();
    await new Promise((resolve) => setTimeout(resolve, 120));
    const until = performance.now() + 150;
    while (performance.now() < until) {
      // The stall: nothing else runs on this thread meanwhile.
    }
    await new Promise((resolve) => setTimeout(resolve, 60));
    const text = await metrics.registry.metrics();
    const max = /^tollgate_process_nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)?.[1];
    expect(Number(max)).toBeGreaterThanOrEqual(0.1);
  });
});
