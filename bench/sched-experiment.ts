/**
 * The scheduler experiment of issue 4 (`npm run bench:sched`): a simulated fleet of 4 replicas on a virtual clock,
 * driven by the real arrival pattern of the Azure LLM 2023 conversation trace, with two tenants:
 *
 * - A, interactive: the trace itself in the `priority` class, its arrival rate scaled up `timeScale`× (the one-hour
 *   trace replays in ≈7.3 minutes), a load the fleet serves alone;
 * - B, a flood: `floodCopies` copies of the same trace, each rotated by a fraction of its span so their bursts do not
 *   line up, at the same scale, alternately `flex` and `batch`: ≈4× A's rate and, with A, ≈2× what the fleet can do.
 *
 * The gateway dispatches to the replicas only up to the pool's capacity (4 × 64 sequences, 4 × 262,144 KV tokens);
 * the rest waits in the gateway, in the `TieredScheduler` or in a plain `FifoScheduler` of the same capacity. A third
 * run, A alone on FIFO, is the reference for what the fleet gives A without the flood.
 *
 * The trace covers one hour of one afternoon: it has bursts but no day/night shape, and none is added here.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { VirtualClock } from '../src/clock/clock.js';
import { FifoScheduler } from '../src/scheduling/fifo-scheduler.js';
import type {
  PoolCapacity,
  RefusalReason,
  Scheduler,
  SchedulerJob,
  SchedulerTicket,
} from '../src/scheduling/scheduler.js';
import { createSeededRandom } from '../src/scheduling/seeded-random.js';
import type { ServiceClass } from '../src/scheduling/service-class.js';
import { TieredScheduler } from '../src/scheduling/tiered-scheduler.js';
import { defaultSimulatedProfile, ReplicaEngine } from '../src/upstreams/simulated/replica-engine.js';
import { loadAzureTrace, repositoryRoot, sharedTracePath, type TraceRequest } from './trace-replay.js';

const traceFile = 'azure-llm-2023-conv.csv';
/** Replicas in the fleet. */
const replicaCount = 4;
/** Arrival-rate multiplier applied to the trace (time compressed by this factor). */
const timeScale = 8;
/** Rotated copies of the trace that make tenant B's flood. */
const floodCopies = 4;
/** Output tokens the gateway reserves per request (`max_tokens` is not in the trace; the model's cap). */
const maxOutputTokens = 1_024;
/** Interactive SLO: time to first token, ms. */
const sloTtftMs = 1_000;
/** Start of the measurement window (the fleet fills up first), ms of virtual time. */
const warmupMs = 60_000;
/** Sampling period of the fleet's running sequences, ms. */
const samplePeriodMs = 100;

type Tenant = 'A' | 'B';

interface Arrival {
  atMs: number;
  tenant: Tenant;
  serviceClass: ServiceClass;
  promptTokens: number;
  outputTokens: number;
}

interface RequestRecord {
  arrival: Arrival;
  submittedAt: number;
  dispatchedAt?: number;
  firstTokenAt?: number;
  refusal?: RefusalReason;
}

/** The rows of the report: one per tenant and class. */
const streams = [
  { tenant: 'A', serviceClass: 'priority' },
  { tenant: 'B', serviceClass: 'flex' },
  { tenant: 'B', serviceClass: 'batch' },
] as const satisfies readonly { tenant: Tenant; serviceClass: ServiceClass }[];

function streamIndex(arrival: Arrival): number {
  return streams.findIndex(
    (stream) => stream.tenant === arrival.tenant && stream.serviceClass === arrival.serviceClass,
  );
}

function buildArrivals(trace: TraceRequest[], withFlood: boolean): Arrival[] {
  const span = trace[trace.length - 1]!.atMs + 1;
  const arrivals: Arrival[] = trace.map((request) => ({
    atMs: request.atMs / timeScale,
    tenant: 'A',
    serviceClass: 'priority',
    promptTokens: request.promptTokens,
    outputTokens: request.outputTokens,
  }));
  if (withFlood) {
    for (let copy = 0; copy < floodCopies; copy++) {
      const shift = (span * (copy + 0.5)) / floodCopies;
      trace.forEach((request, index) => {
        arrivals.push({
          atMs: ((request.atMs + shift) % span) / timeScale,
          tenant: 'B',
          serviceClass: (index + copy) % 2 === 0 ? 'flex' : 'batch',
          promptTokens: request.promptTokens,
          outputTokens: request.outputTokens,
        });
      });
    }
  }
  return arrivals.sort((a, b) => a.atMs - b.atMs);
}

interface Replica {
  engine: ReplicaEngine;
  running: number;
  kvTokens: number;
}

interface StreamReport {
  tenant: Tenant;
  serviceClass: ServiceClass;
  requests: number;
  served: number;
  refused: Partial<Record<RefusalReason, number>>;
  queueWaitP99Ms: number | null;
  ttftP50Ms: number | null;
  ttftP99Ms: number | null;
  /** Requests with TTFT ≤ the SLO over all requests (refusals count as misses). */
  sloAttainment: number;
  /** Output tokens produced in the measurement window per second. */
  outputTokensPerSecond: number;
}

interface FleetReport {
  windowSeconds: number;
  /** Share of the window the replicas were decoding (mean over replicas). */
  busy: number;
  /** Mean running sequences / batch slots, over the window. */
  slotOccupancy: number;
  outputTokensPerSecond: number;
  promptTokensPerSecond: number;
  /** Virtual time until the last request finished, s. */
  drainedAtSeconds: number;
}

interface RunReport {
  name: string;
  streams: StreamReport[];
  fleet: FleetReport;
  wallSeconds: number;
}

function percentile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

function run(name: string, arrivals: Arrival[], createScheduler: (clock: VirtualClock) => Scheduler): RunReport {
  const started = performance.now();
  const clock = new VirtualClock();
  const scheduler = createScheduler(clock);
  const profile = defaultSimulatedProfile;
  const replicas: Replica[] = Array.from({ length: replicaCount }, () => ({
    engine: new ReplicaEngine(profile, { clock }),
    running: 0,
    kvTokens: 0,
  }));
  const windowEnd = arrivals[arrivals.length - 1]!.atMs;
  const records: RequestRecord[] = [];
  const windowTokens = new Float64Array(streams.length);
  let occupiedSlotSamples = 0;
  let samples = 0;
  const statsAt = (at: number, into: { busyMs: number; generated: number; prompt: number }) =>
    clock.setTimer(at, () => {
      for (const replica of replicas) {
        const stats = replica.engine.stats;
        into.busyMs += stats.busyMs;
        into.generated += stats.generatedTokens;
        into.prompt += stats.promptTokens;
      }
    });
  const atStart = { busyMs: 0, generated: 0, prompt: 0 };
  const atEnd = { busyMs: 0, generated: 0, prompt: 0 };
  statsAt(warmupMs, atStart);
  statsAt(windowEnd, atEnd);
  const sample = () => {
    if (clock.now() > windowEnd) return;
    occupiedSlotSamples += replicas.reduce((sum, replica) => sum + replica.engine.running, 0);
    samples++;
    clock.setTimer(samplePeriodMs, sample);
  };
  clock.setTimer(warmupMs, sample);

  const startOnReplica = (ticket: SchedulerTicket, record: RequestRecord) => {
    const { arrival } = record;
    record.dispatchedAt = clock.now();
    const reserved = arrival.promptTokens + arrival.outputTokens;
    // Least loaded replica with a free slot and KV room; the pool's capacity guarantees one has a slot.
    let chosen = replicas[0]!;
    let chosenFits = false;
    for (const replica of replicas) {
      const fits = replica.running < profile.max_batch && replica.kvTokens + reserved <= profile.kv_tokens;
      if ((fits && !chosenFits) || (fits === chosenFits && replica.running < chosen.running)) {
        chosen = replica;
        chosenFits = fits;
      }
    }
    const replica = chosen;
    replica.running++;
    replica.kvTokens += reserved;
    const stream = streamIndex(arrival);
    replica.engine.submit({
      promptTokens: arrival.promptTokens,
      outputTokens: arrival.outputTokens,
      onToken: (index) => {
        const now = clock.now();
        if (index === 0) record.firstTokenAt = now;
        if (now >= warmupMs && now <= windowEnd) windowTokens[stream]!++;
      },
      onDone: () => {
        replica.running--;
        replica.kvTokens -= reserved;
        scheduler.complete(ticket, { inputTokens: arrival.promptTokens, outputTokens: arrival.outputTokens });
      },
    });
  };

  let next = 0;
  const arrive = () => {
    while (next < arrivals.length && arrivals[next]!.atMs <= clock.now()) {
      const arrival = arrivals[next++]!;
      const record: RequestRecord = { arrival, submittedAt: clock.now() };
      records.push(record);
      const job: SchedulerJob = {
        id: String(records.length),
        tenantId: arrival.tenant,
        serviceClass: arrival.serviceClass,
        inputTokens: arrival.promptTokens,
        maxOutputTokens,
      };
      const result = scheduler.submit(job, {
        onDispatch: (ticket) => startOnReplica(ticket, record),
        onRefuse: (_ticket, refusal) => {
          record.refusal = refusal.reason;
        },
      });
      if (result.outcome === 'dispatched') startOnReplica(result.ticket, record);
      else if (result.outcome === 'refused') record.refusal = result.refusal.reason;
    }
    if (next < arrivals.length) clock.setTimer(arrivals[next]!.atMs - clock.now(), arrive);
  };
  clock.setTimer(arrivals[0]!.atMs, arrive);
  const drainedAt = clock.runUntilIdle();

  const windowSeconds = (windowEnd - warmupMs) / 1_000;
  const reports = streams.map((stream, index): StreamReport => {
    const mine = records.filter(
      (record) => record.arrival.tenant === stream.tenant && record.arrival.serviceClass === stream.serviceClass,
    );
    const served = mine.filter((record) => record.firstTokenAt !== undefined);
    const ttfts = served.map((record) => record.firstTokenAt! - record.submittedAt).sort((a, b) => a - b);
    const waits = served.map((record) => record.dispatchedAt! - record.submittedAt).sort((a, b) => a - b);
    const refused: Partial<Record<RefusalReason, number>> = {};
    for (const record of mine) {
      if (record.refusal !== undefined) refused[record.refusal] = (refused[record.refusal] ?? 0) + 1;
    }
    return {
      tenant: stream.tenant,
      serviceClass: stream.serviceClass,
      requests: mine.length,
      served: served.length,
      refused,
      queueWaitP99Ms: percentile(waits, 0.99),
      ttftP50Ms: percentile(ttfts, 0.5),
      ttftP99Ms: percentile(ttfts, 0.99),
      sloAttainment: mine.length === 0 ? 0 : ttfts.filter((ttft) => ttft <= sloTtftMs).length / mine.length,
      outputTokensPerSecond: windowTokens[index]! / windowSeconds,
    };
  });
  return {
    name,
    streams: reports.filter((report) => report.requests > 0),
    fleet: {
      windowSeconds,
      busy: (atEnd.busyMs - atStart.busyMs) / (replicaCount * (windowEnd - warmupMs)),
      slotOccupancy: samples === 0 ? 0 : occupiedSlotSamples / samples / (replicaCount * profile.max_batch),
      outputTokensPerSecond: (atEnd.generated - atStart.generated) / windowSeconds,
      promptTokensPerSecond: (atEnd.prompt - atStart.prompt) / windowSeconds,
      drainedAtSeconds: drainedAt / 1_000,
    },
    wallSeconds: (performance.now() - started) / 1_000,
  };
}

function formatMs(ms: number | null): string {
  if (ms === null) return '–';
  return ms >= 10_000
    ? `${(ms / 1_000).toFixed(0)} s`
    : ms >= 1_000
      ? `${(ms / 1_000).toFixed(2)} s`
      : `${ms.toFixed(0)} ms`;
}

function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

/** `saturated`: output tokens/s of the fleet with every slot busy (the flooded FIFO run), the "max" of utilisation. */
function markdownTable(runs: RunReport[], saturated: number): string {
  const lines = [
    '| run | tenant / class | requests | refused (reason) | TTFT p50 | TTFT p99 | queue wait p99 | TTFT ≤ 1 s | output tok/s |',
    '|---|---|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const report of runs) {
    for (const stream of report.streams) {
      const refused = Object.entries(stream.refused)
        .map(([reason, count]) => `${count} ${reason}`)
        .join(', ');
      lines.push(
        `| ${report.name} | ${stream.tenant} / ${stream.serviceClass} | ${stream.requests} | ${refused || '0'} | ` +
          `${formatMs(stream.ttftP50Ms)} | ${formatMs(stream.ttftP99Ms)} | ${formatMs(stream.queueWaitP99Ms)} | ` +
          `${stream.serviceClass === 'priority' ? formatPercent(stream.sloAttainment) : '–'} | ` +
          `${stream.outputTokensPerSecond.toFixed(0)} |`,
      );
    }
  }
  lines.push(
    '',
    '| run | fleet busy | slot occupancy | output tok/s | vs saturated fleet | prompt tok/s | last request done | wall time |',
  );
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const report of runs) {
    const { fleet } = report;
    lines.push(
      `| ${report.name} | ${formatPercent(fleet.busy)} | ${formatPercent(fleet.slotOccupancy)} | ` +
        `${fleet.outputTokensPerSecond.toFixed(0)} | ${formatPercent(fleet.outputTokensPerSecond / saturated)} | ` +
        `${fleet.promptTokensPerSecond.toFixed(0)} | ` +
        `${fleet.drainedAtSeconds.toFixed(0)} s | ${report.wallSeconds.toFixed(1)} s |`,
    );
  }
  return lines.join('\n');
}

function main(): void {
  const tracePath = sharedTracePath(traceFile);
  const trace = loadAzureTrace(tracePath);
  const traceSeconds = trace[trace.length - 1]!.atMs / 1_000;
  const capacity: PoolCapacity = {
    sequences: replicaCount * defaultSimulatedProfile.max_batch,
    tokens: replicaCount * defaultSimulatedProfile.kv_tokens,
  };
  const alone = buildArrivals(trace, false);
  const flooded = buildArrivals(trace, true);
  const replaySeconds = alone[alone.length - 1]!.atMs / 1_000;
  console.log(
    `Scheduler experiment: ${replicaCount} simulated replicas (default profile), pool capacity ` +
      `${capacity.sequences} sequences / ${capacity.tokens} tokens.\n` +
      `Trace ${traceFile}: ${trace.length} requests over ${(traceSeconds / 60).toFixed(1)} min (one hour of one day: ` +
      'bursts, no day/night shape; none added).\n' +
      `Scaled ${timeScale}× (replayed in ${(replaySeconds / 60).toFixed(1)} min): tenant A (priority) ` +
      `${(trace.length / replaySeconds).toFixed(1)} req/s; tenant B (flex/batch) ${floodCopies} rotated copies, ` +
      `${((floodCopies * trace.length) / replaySeconds).toFixed(1)} req/s. Measured after a ${warmupMs / 1_000} s warm-up ` +
      'until the last arrival.\n',
  );
  const runs = [
    run('A alone, FIFO', alone, (clock) => new FifoScheduler({ clock, capacity })),
    run('A + flood, FIFO', flooded, (clock) => new FifoScheduler({ clock, capacity })),
    run(
      'A + flood, scheduler',
      flooded,
      (clock) => new TieredScheduler({ clock, capacity, random: createSeededRandom(2024) }),
    ),
  ];
  const saturated = runs[1]!.fleet.outputTokensPerSecond;
  console.log(markdownTable(runs, saturated));

  const tiered = runs[2]!;
  const throughputShare = tiered.fleet.outputTokensPerSecond / saturated;
  const interactive = tiered.streams.find((stream) => stream.tenant === 'A')!;
  const fifoInteractive = runs[1]!.streams.find((stream) => stream.tenant === 'A')!;
  const verdict = {
    interactiveSloMet: interactive.sloAttainment >= 0.99,
    utilisationMet: throughputShare >= 0.85 && tiered.fleet.busy >= 0.85,
    fifoMissesSlo: fifoInteractive.sloAttainment < 0.99,
  };
  console.log(
    `\nTarget (scheduler): interactive SLO attainment ${formatPercent(interactive.sloAttainment)} (≥ 99%: ` +
      `${verdict.interactiveSloMet ? 'met' : 'MISSED'}); fleet busy ${formatPercent(tiered.fleet.busy)}, output ` +
      `${formatPercent(throughputShare)} of the saturated fleet's (≥ 85%: ${verdict.utilisationMet ? 'met' : 'MISSED'}), ` +
      `slot occupancy ${formatPercent(tiered.fleet.slotOccupancy)} (flex/batch stop at 85%: the headroom); ` +
      `FIFO: ${formatPercent(fifoInteractive.sloAttainment)} (${verdict.fifoMissesSlo ? 'misses' : 'meets'} the SLO).`,
  );

  const date = new Date().toISOString().slice(0, 10);
  const folder = join(repositoryRoot(), 'bench', 'results');
  mkdirSync(folder, { recursive: true });
  const file = join(folder, `sched-${date}.json`);
  const setup = {
    trace: traceFile,
    traceRequests: trace.length,
    traceSeconds,
    timeScale,
    floodCopies,
    replicas: replicaCount,
    profile: defaultSimulatedProfile,
    capacity,
    maxOutputTokens,
    sloTtftMs,
    warmupMs,
    note: 'The trace covers one hour of one day: no day/night shape; arrival rate scaled by compressing time.',
  };
  writeFileSync(
    file,
    `${JSON.stringify({ date, setup, runs, saturatedOutputTokensPerSecond: saturated, verdict }, null, 2)}\n`,
  );
  console.log(`\nWrote ${file}`);
}

new Command('sched-experiment')
  .description(
    'Issue 4: tiered scheduling against FIFO on a simulated fleet of 4 replicas, driven by the Azure 2023 trace with an ' +
      'interactive tenant and a flood; writes bench/results/sched-<date>.json. No options: the setup is fixed (see the ' +
      "file's header and docs/benchmarks.md).",
  )
  .parse();
main();
