/**
 * Batch metrics, read at scrape time: lines by state, and the share of the fleet's capacity batch work holds.
 */
import { Gauge } from 'prom-client';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { Scheduler } from '../scheduling/scheduler.js';
import type { BatchRunner } from './batch-runner.js';

/** Where the capacity share is read from. */
export interface BatchCapacitySource {
  /** The schedulers by model (`AdmissionGate.modelSchedulers`). */
  readonly modelSchedulers: ReadonlyMap<string, Scheduler>;
}

/**
 * The share of fleet capacity batch work uses, 0–1 (may exceed 1 after a capacity cut): the larger of batch-class
 * running sequences over all sequences, and the estimated tokens of the runner's in-flight lines over all tokens.
 */
export function batchCapacityShare(runner: BatchRunner, gate: BatchCapacitySource): number {
  let sequences = 0;
  let batchSequences = 0;
  let tokens = 0;
  for (const scheduler of gate.modelSchedulers.values()) {
    const stats = scheduler.stats();
    sequences += stats.capacity.sequences;
    tokens += stats.capacity.tokens;
    batchSequences += stats.classes.batch.running;
  }
  const bySequences = sequences === 0 ? 0 : batchSequences / sequences;
  const byTokens = tokens === 0 ? 0 : runner.stats().runningTokens / tokens;
  return Math.max(bySequences, byTokens);
}

/** Registers `tollgate_batch_lines{state}` and `tollgate_batch_capacity_share` on the gateway's registry. */
export function registerBatchMetrics(metrics: GatewayMetrics, runner: BatchRunner, gate: BatchCapacitySource): void {
  const registers = [metrics.registry];
  new Gauge({
    name: 'tollgate_batch_lines',
    help: 'Batch lines by state: queued (not yet handed to the gateway), running (handed over), done and failed (since start).',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const stats = runner.stats();
      this.labels('queued').set(stats.queued);
      this.labels('running').set(stats.running);
      this.labels('done').set(stats.done);
      this.labels('failed').set(stats.failed);
    },
  });
  new Gauge({
    name: 'tollgate_batch_capacity_share',
    help: "Share of the fleet's capacity used by batch work (running batch sequences or tokens over capacity).",
    registers,
    collect() {
      this.set(batchCapacityShare(runner, gate));
    },
  });
}
