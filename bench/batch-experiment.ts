/**
 * The peak-shifting experiment of issue 5 (`npm run bench:batch`): one simulated day of online traffic on a fleet of
 * `ReplicaEngine` replicas, on a virtual clock, with and without a large batch submitted at the online peak.
 *
 * Online load: the arrival pattern of the Azure LLM 2023 conversation trace (one hour), time-compressed
 * `traceSpeedup`× and tiled over 24 hours (each tile rotated by a seeded offset so the bursts do not repeat in step),
 * then thinned by a day/night cycle: an arrival at time t is kept with probability
 * m(t) = 0.25 + 0.75 × (1 + cos(2π (t − peak) / 24 h)) / 2, peak at 07:00 UTC (15:00 in UTC+8, the afternoon of the
 * market the price book's off-peak window 16:30–00:30 UTC was made for: 00:30–08:30 there), trough at 19:00 UTC.
 * Online requests run at class `default` with the trace's prompt and output lengths.
 *
 * Batch: `batchLines` lines whose (prompt, output) lengths are drawn from the trace with a seeded generator, submitted
 * at the peak (07:00 UTC) with a 24 h window. Runs:
 * - online only: the `TieredScheduler`, no batch;
 * - Tollgate: the `TieredScheduler` with batch lines at class `batch` (a time-of-day ceiling, higher inside the
 *   off-peak window, lowered by a headroom that grows with the online load), fed by a runner that keeps a few lines
 *   queued and plans each line's class with `planBatchClass`;
 * - naive FIFO: one `FifoScheduler` queue, the whole batch enqueued at the peak, online requests behind it.
 *
 * The replicas run chunked prefill with priority scheduling and a background prefill budget (profile options of the
 * replica); the gateway passes each request's class as its engine priority. Every setting can be changed on the
 * command line (see `parseSettings`); the defaults are the configuration of the table in docs/benchmarks.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Command, Option } from 'commander';
import {
  type BatchLineClass,
  inOffPeakWindow,
  type OffPeakWindow,
  planBatchClass,
} from '../src/batch/batch-planner.js';
import { VirtualClock } from '../src/clock/clock.js';
import type { SimulatedProfile } from '../src/config/config-schema.js';
import { FifoScheduler } from '../src/scheduling/fifo-scheduler.js';
import type { PoolCapacity, RefusalReason, Scheduler, SchedulerTicket } from '../src/scheduling/scheduler.js';
import { createSeededRandom } from '../src/scheduling/seeded-random.js';
import { serviceClassRank } from '../src/scheduling/service-class.js';
import { TieredScheduler } from '../src/scheduling/tiered-scheduler.js';
import {
  type EngineRequest,
  ReplicaEngine,
  resolveSimulatedProfile,
  stepDurationMs,
} from '../src/upstreams/simulated/replica-engine.js';
import { nonNegativeNumber, share, wholeNumber } from './cli-numbers.js';
import { loadAzureTrace, repositoryRoot, sharedTracePath, type TraceRequest } from './trace-replay.js';

const traceFile = 'azure-llm-2023-conv.csv';
/**
 * Replicas in the fleet (default profile each). The simulation's cost is per decoded token, not per request: a
 * saturated replica-day is ≈6.6 M engine steps of ≈60 sequences, ≈40 s of CPU; two replicas keep the run near 2 min.
 */
const replicaCount = 2;
/** Trace time compression at the daily peak: the one-hour trace's arrival rate × this. */
const traceSpeedup = 5;
/** Simulated day, ms. */
const dayMs = 24 * 3_600_000;
/** Day of the run; the batch is submitted at the online peak. */
const startMs = Date.UTC(2024, 5, 3, 7, 0);
/** Hour (UTC) of the online peak. */
const peakHourUtc = 7;
/** The price book's off-peak window. */
const offPeakWindows: readonly OffPeakWindow[] = [{ start: '16:30', end: '00:30' }];
/** Output tokens reserved per request (`max_tokens` is not in the trace; the model's cap). */
const maxOutputTokens = 1_024;
/** Batch lines the runner keeps queued in the scheduler beyond the running ones. */
const runnerQueueDepth = 32;
/** Period of the runner's rate measurement, ms, and the weight of the newest period in its EWMA (≈ 2 h memory). */
const ratePeriodMs = 5 * 60_000;
const rateSmoothing = 1 / 24;
/** Planner options: safety factor 1.5 (default), projection only over the last 12 h, all-default the last 30 min. */
const plannerOptions = { safetyFactor: 1.5, projectWithinMs: 12 * 3_600_000, promoteToDefaultWithinMs: 30 * 60_000 };
/** Cost of one replica-hour, yuan (the price book's costs are derived from ~12 yuan/replica-hour). */
const replicaHourYuan = 12;
const seed = 20_240_603;

const runKinds = ['online only', 'online + batch, Tollgate', 'online + batch, naive FIFO'] as const;
type RunKind = (typeof runKinds)[number];

/** What the command line may change (defaults: the configuration of the table in docs/benchmarks.md). */
interface ExperimentSettings {
  /** Lines of the batch. */
  batchLines: number;
  /** The replicas' profile: the DESIGN.md defaults plus chunked prefill and priority scheduling. */
  profile: SimulatedProfile;
  /** Batch admission ceiling outside / inside the off-peak window (the `default` class keeps 0.95). */
  batchCeiling: { peak: number; offPeak: number };
  /** The flex class's admission ceiling (where deadline-promoted lines go first). */
  flexCeiling: number;
  /** Load-aware online headroom (`TieredSchedulerOptions.onlineHeadroom`); none when both are 0. */
  onlineHeadroom: { minimumSequences: number; perOnlineSequence: number };
  /** Runs to make. */
  kinds: RunKind[];
}

/** The command line; `--help` lists every setting with its default (the configuration of docs/benchmarks.md). */
function parseSettings(argv: string[]): ExperimentSettings & { out: string | undefined } {
  const values = new Command('batch-experiment')
    .description(
      'Issue 5: one simulated day of online traffic (Azure 2023 trace, day/night cycle) on simulated replicas, with ' +
        'and without a large batch submitted at the online peak; writes bench/results/batch-<date>.json.',
    )
    .option('--batch-lines <n>', 'lines of the batch', wholeNumber, 2_350_000)
    .option('--prefill-chunk-tokens <n>', "the replicas' prefill chunk (0: whole prompts)", wholeNumber, 8192)
    .option('--background-prefill-tokens <n>', "the replicas' background prefill budget per step", wholeNumber, 512)
    .addOption(
      new Option('--scheduling-policy <policy>', "the replicas' scheduling")
        .choices(['priority', 'fcfs'])
        .default('priority'),
    )
    .option('--batch-ceiling <share>', "class batch's share of the fleet at the peak", share, 0.92)
    .option('--off-peak-ceiling <share>', "class batch's share inside the off-peak window", share, 0.94)
    .option('--flex-ceiling <share>', "class flex's share of the fleet", share, 0.94)
    .option('--headroom-min <n>', 'sequences kept free for online requests, at least', nonNegativeNumber, 1)
    .option('--headroom-per-online <n>', 'sequences kept free per online sequence running', nonNegativeNumber, 0.3)
    .option('--runs <list>', 'runs, comma-separated: online, tollgate, fifo', 'online,tollgate,fifo')
    .option('--out <path>', 'JSON output path')
    .parse(argv, { from: 'user' })
    .opts<{
      batchLines: number;
      prefillChunkTokens: number;
      backgroundPrefillTokens: number;
      schedulingPolicy: SimulatedProfile['scheduling_policy'];
      batchCeiling: number;
      offPeakCeiling: number;
      flexCeiling: number;
      headroomMin: number;
      headroomPerOnline: number;
      runs: string;
      out: string | undefined;
    }>();
  const byName: Record<string, RunKind> = {
    online: 'online only',
    tollgate: 'online + batch, Tollgate',
    fifo: 'online + batch, naive FIFO',
  };
  const kinds = values.runs.split(',').map((name) => {
    const kind = byName[name];
    if (kind === undefined) throw new Error(`--runs: unknown run ${name} (online, tollgate, fifo)`);
    return kind;
  });
  return {
    out: values.out,
    batchLines: values.batchLines,
    profile: resolveSimulatedProfile({
      prefill_chunk_tokens: values.prefillChunkTokens,
      background_prefill_tokens: values.backgroundPrefillTokens,
      scheduling_policy: values.schedulingPolicy,
    }),
    batchCeiling: { peak: values.batchCeiling, offPeak: values.offPeakCeiling },
    flexCeiling: values.flexCeiling,
    onlineHeadroom: {
      minimumSequences: values.headroomMin,
      perOnlineSequence: values.headroomPerOnline,
    },
    kinds: runKinds.filter((kind) => kinds.includes(kind)),
  };
}

interface Line {
  promptTokens: number;
  outputTokens: number;
}

/** m(t): the share of the peak arrival rate at time t. */
function dayNightRate(atMs: number): number {
  const hours = (atMs - Date.UTC(2024, 5, 3)) / 3_600_000;
  return 0.25 + 0.75 * ((1 + Math.cos((2 * Math.PI * (hours - peakHourUtc)) / 24)) / 2);
}

/** The online arrivals of the day, in time order (see the header). Deterministic. */
function* onlineArrivals(trace: TraceRequest[]): Generator<{ atMs: number; line: TraceRequest }> {
  const random = createSeededRandom(seed);
  const span = trace[trace.length - 1]!.atMs + 1;
  const tileMs = span / traceSpeedup;
  for (let tileStart = 0; tileStart < dayMs; tileStart += tileMs) {
    const shift = Math.floor(random() * span);
    // Rotating by `shift`: the requests at or after span − shift come first.
    const split = trace.findIndex((request) => request.atMs >= span - shift);
    const order = split < 0 ? trace : [...trace.slice(split), ...trace.slice(0, split)];
    for (const request of order) {
      const rotated = (request.atMs + shift) % span;
      const atMs = startMs + tileStart + rotated / traceSpeedup;
      if (atMs >= startMs + dayMs) break;
      if (random() < dayNightRate(atMs)) yield { atMs, line: request };
    }
  }
}

/** The batch's lines as two columns (millions of lines: no object per line until it is submitted). */
interface BatchLines {
  length: number;
  promptTokens: Int32Array;
  outputTokens: Int32Array;
}

function sampleBatch(trace: TraceRequest[], batchLines: number): BatchLines {
  const random = createSeededRandom(seed + 1);
  const promptTokens = new Int32Array(batchLines);
  const outputTokens = new Int32Array(batchLines);
  for (let index = 0; index < batchLines; index++) {
    const request = trace[Math.floor(random() * trace.length)]!;
    promptTokens[index] = request.promptTokens;
    outputTokens[index] = request.outputTokens;
  }
  return { length: batchLines, promptTokens, outputTokens };
}

function lineAt(batch: BatchLines, index: number): Line {
  return { promptTokens: batch.promptTokens[index]!, outputTokens: batch.outputTokens[index]! };
}

interface HourReport {
  /** Hour of day, UTC. */
  hourUtc: number;
  /** Mean running sequences / batch slots. */
  slotShare: number;
  /** Output tokens/s ÷ the fleet's saturated output tokens/s. */
  tokenShare: number;
  onlineRequests: number;
  onlineTtftP99Ms: number | null;
  batchLinesDone: number;
}

interface RunReport {
  kind: RunKind;
  onlineRequests: number;
  onlineRefused: Partial<Record<RefusalReason, number>>;
  onlineTtftP50Ms: number | null;
  onlineTtftP99Ms: number | null;
  /** p99 of the online requests' wait in the gateway's scheduler queue (part of their TTFT). */
  onlineQueueWaitP99Ms: number | null;
  /** Hours from submission to the last batch line done; null when it did not finish. */
  batchCompletionHours: number | null;
  batchLinesByDeadline: number;
  batchLinesByClass: Record<BatchLineClass, number>;
  batchRefusals: number;
  slotShare: number;
  tokenShare: number;
  outputTokens: number;
  promptTokens: number;
  /** Fleet cost of the day ÷ output tokens of the day, yuan per million. */
  costPerMillionOutputYuan: number;
  /** Fleet cost of the day ÷ (prompt + output) tokens of the day, yuan per million. */
  costPerMillionTokensYuan: number;
  hours: HourReport[];
  wallSeconds: number;
}

function percentile(sorted: Float64Array | number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** The batch ceiling by time of day; the window is looked up once per minute, not at every dispatch decision. */
function batchCeilingSchedule(batchCeiling: ExperimentSettings['batchCeiling']): (now: number) => number {
  let minute = Number.NaN;
  let ceiling = batchCeiling.peak;
  return (now) => {
    const current = Math.floor(now / 60_000);
    if (current !== minute) {
      minute = current;
      ceiling = inOffPeakWindow(now, offPeakWindows) ? batchCeiling.offPeak : batchCeiling.peak;
    }
    return ceiling;
  };
}

interface Replica {
  engine: ReplicaEngine;
  running: number;
  kvTokens: number;
}

function run(
  kind: RunKind,
  settings: ExperimentSettings,
  trace: TraceRequest[],
  batch: BatchLines,
  saturatedTokensPerSecond: number,
): RunReport {
  const started = performance.now();
  const clock = new VirtualClock(startMs);
  const profile = settings.profile;
  const capacity: PoolCapacity = {
    sequences: replicaCount * profile.max_batch,
    tokens: replicaCount * profile.kv_tokens,
  };
  const scheduler: Scheduler =
    kind === 'online + batch, naive FIFO'
      ? new FifoScheduler({ clock, capacity })
      : new TieredScheduler({
          clock,
          capacity,
          random: createSeededRandom(seed + 2),
          classes: {
            flex: { admissionCeiling: settings.flexCeiling },
            batch: { admissionCeiling: settings.batchCeiling.peak },
          },
          batchCeilingAt: batchCeilingSchedule(settings.batchCeiling),
          ...(settings.onlineHeadroom.minimumSequences + settings.onlineHeadroom.perOnlineSequence > 0
            ? { onlineHeadroom: settings.onlineHeadroom }
            : {}),
        });
  const replicas: Replica[] = Array.from({ length: replicaCount }, () => ({
    engine: new ReplicaEngine(profile, { clock }),
    running: 0,
    kvTokens: 0,
  }));
  const endMs = startMs + dayMs;
  const hourCount = Math.ceil(dayMs / 3_600_000);
  const hourOf = (atMs: number) => Math.min(hourCount - 1, Math.floor((atMs - startMs) / 3_600_000));

  // Online bookkeeping.
  const ttfts: number[] = [];
  const hourTtfts: number[][] = Array.from({ length: hourCount }, () => []);
  const onlineRefused: Partial<Record<RefusalReason, number>> = {};
  const onlineQueueWaits: number[] = [];
  let onlineRequests = 0;

  // The gateway tells a priority-scheduling engine the request's class (vLLM's `priority`: lower first): default 0,
  // priority −1, flex 1, batch 2; classes below default are the engine's background work.
  const startOnReplica = (
    ticket: SchedulerTicket,
    line: Line,
    onFirstToken: (() => void) | undefined,
    onDone: () => void,
  ) => {
    const priority = serviceClassRank(ticket.job.serviceClass) - serviceClassRank('default');
    const reserved = line.promptTokens + line.outputTokens;
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
    const request: EngineRequest = {
      promptTokens: line.promptTokens,
      outputTokens: line.outputTokens,
      priority,
      onDone: () => {
        replica.running--;
        replica.kvTokens -= reserved;
        scheduler.complete(ticket, { inputTokens: line.promptTokens, outputTokens: line.outputTokens });
        onDone();
      },
    };
    if (onFirstToken !== undefined) {
      // The engine reads `onToken` at every token: drop it after the first so a day of tokens costs no calls.
      request.onToken = () => {
        request.onToken = undefined;
        onFirstToken();
      };
    }
    replica.engine.submit(request);
  };

  // Naive FIFO: one queue for everything, in arrival order, fed to a `FifoScheduler` one request at a time (the same
  // order as enqueuing all at once, without millions of queued tickets).
  const fifo: { line: Line; onFirstToken: (() => void) | undefined; onDone: () => void }[] = [];
  let fifoHead = 0;
  let fifoWaiting = false;
  const pumpFifo = () => {
    while (!fifoWaiting && fifoHead < fifo.length) {
      const entry = fifo[fifoHead]!;
      fifo[fifoHead++] = undefined as never;
      if (fifoHead > 65_536 && fifoHead * 2 > fifo.length) {
        fifo.splice(0, fifoHead);
        fifoHead = 0;
      }
      const { line, onFirstToken, onDone } = entry;
      const result = scheduler.submit(
        { id: 'fifo', tenantId: 'any', serviceClass: 'default', inputTokens: line.promptTokens, maxOutputTokens },
        {
          onDispatch: (ticket) => {
            fifoWaiting = false;
            startOnReplica(ticket, line, onFirstToken, onDone);
            pumpFifo();
          },
        },
      );
      if (result.outcome === 'dispatched') startOnReplica(result.ticket, line, onFirstToken, onDone);
      else if (result.outcome === 'queued') fifoWaiting = true;
      else throw new Error(`FIFO refused a request: ${result.refusal.reason}`);
    }
  };

  const submitOnline = (line: Line) => {
    onlineRequests++;
    const submittedAt = clock.now();
    const hour = hourOf(submittedAt);
    const onFirstToken = () => {
      const ttft = clock.now() - submittedAt;
      ttfts.push(ttft);
      hourTtfts[hour]!.push(ttft);
    };
    if (kind === 'online + batch, naive FIFO') {
      fifo.push({ line, onFirstToken, onDone: () => {} });
      pumpFifo();
      return;
    }
    const result = scheduler.submit(
      { id: 'online', tenantId: 'online', serviceClass: 'default', inputTokens: line.promptTokens, maxOutputTokens },
      {
        onDispatch: (ticket) => {
          onlineQueueWaits.push(clock.now() - submittedAt);
          startOnReplica(ticket, line, onFirstToken, () => {});
        },
        onRefuse: (_ticket, refusal) => {
          onlineRefused[refusal.reason] = (onlineRefused[refusal.reason] ?? 0) + 1;
        },
      },
    );
    if (result.outcome === 'dispatched') {
      onlineQueueWaits.push(0);
      startOnReplica(result.ticket, line, onFirstToken, () => {});
    } else if (result.outcome === 'refused') {
      onlineRefused[result.refusal.reason] = (onlineRefused[result.refusal.reason] ?? 0) + 1;
    }
  };

  const arrivals = onlineArrivals(trace);
  let pending = arrivals.next();
  const arrive = () => {
    while (!pending.done && pending.value.atMs <= clock.now()) {
      submitOnline(pending.value.line);
      pending = arrivals.next();
    }
    if (!pending.done) clock.setTimer(pending.value.atMs - clock.now(), arrive);
  };
  if (!pending.done) clock.setTimer(pending.value.atMs - clock.now(), arrive);

  // Batch bookkeeping.
  const deadline = startMs + 24 * 3_600_000;
  const batchLinesByClass: Record<BatchLineClass, number> = { batch: 0, flex: 0, default: 0 };
  const hourBatchDone = new Array<number>(hourCount).fill(0);
  let batchDone = 0;
  let batchDoneByDeadline = 0;
  let batchFinishedAt: number | undefined;
  let batchRefusals = 0;
  let remainingOutputTokens = batch.outputTokens.reduce((sum, tokens) => sum + tokens, 0);
  let tokensThisPeriod = 0;
  let rate = 0;
  const lineDone = (line: Line) => () => {
    batchDone++;
    if (clock.now() <= deadline) batchDoneByDeadline++;
    if (clock.now() < endMs) hourBatchDone[hourOf(clock.now())]!++;
    remainingOutputTokens -= line.outputTokens;
    tokensThisPeriod += line.outputTokens;
    if (batchDone === batch.length) batchFinishedAt = clock.now();
  };

  if (kind === 'online + batch, naive FIFO') {
    for (let index = 0; index < batch.length; index++) {
      const line = lineAt(batch, index);
      fifo.push({ line, onFirstToken: undefined, onDone: lineDone(line) });
    }
    batchLinesByClass.batch = batch.length;
    pumpFifo();
  } else if (kind === 'online + batch, Tollgate') {
    // The batch runner: a few lines waiting in the scheduler at a time, each planned when submitted; a refused line
    // goes back to the front of the list and the runner pauses until the refusal's retry time.
    const retry: Line[] = [];
    let next = 0;
    let queued = 0;
    let pausedUntil = 0;
    const topUp = () => {
      while (queued < runnerQueueDepth && clock.now() >= pausedUntil) {
        const line = retry.pop() ?? (next < batch.length ? lineAt(batch, next++) : undefined);
        if (line === undefined) return;
        const remainingLines = batch.length - batchDone;
        const serviceClass = planBatchClass(
          {
            remainingLines,
            remainingTokens: remainingOutputTokens,
            now: clock.now(),
            deadline,
            recentTokensPerSecond: rate,
          },
          plannerOptions,
        );
        const done = lineDone(line);
        queued++;
        const result = scheduler.submit(
          { id: 'line', tenantId: 'batch', serviceClass, inputTokens: line.promptTokens, maxOutputTokens },
          {
            onDispatch: (ticket) => {
              queued--;
              batchLinesByClass[serviceClass]++;
              startOnReplica(ticket, line, undefined, done);
              topUp();
            },
            onRefuse: () => {
              queued--;
              batchRefusals++;
              retry.push(line);
            },
          },
        );
        if (result.outcome === 'dispatched') {
          queued--;
          batchLinesByClass[serviceClass]++;
          startOnReplica(result.ticket, line, undefined, done);
        } else if (result.outcome === 'refused') {
          queued--;
          batchRefusals++;
          retry.push(line);
          pausedUntil = clock.now() + result.refusal.retryAfterMs;
          clock.setTimer(result.refusal.retryAfterMs, topUp);
        }
      }
    };
    const measure = () => {
      const sample = tokensThisPeriod / (ratePeriodMs / 1_000);
      rate = rate === 0 ? sample : rate + rateSmoothing * (sample - rate);
      tokensThisPeriod = 0;
      topUp();
      if (batchFinishedAt === undefined) clock.setTimer(ratePeriodMs, measure);
    };
    clock.setTimer(ratePeriodMs, measure);
    topUp();
  }

  // Utilisation: running sequences sampled every second; output tokens per hour from the engines' counters.
  const hourSlotSamples = new Array<number>(hourCount).fill(0);
  const hourSampleCount = new Array<number>(hourCount).fill(0);
  const sample = () => {
    const now = clock.now();
    if (now >= endMs) return;
    const hour = hourOf(now);
    hourSlotSamples[hour]! += replicas.reduce((sum, replica) => sum + replica.engine.running, 0);
    hourSampleCount[hour]!++;
    clock.setTimer(1_000, sample);
  };
  clock.setTimer(0, sample);
  const hourOutput = new Array<number>(hourCount + 1).fill(0);
  const hourPrompt = new Array<number>(hourCount + 1).fill(0);
  for (let hour = 0; hour <= hourCount; hour++) {
    clock.setTimer(Math.min(hour * 3_600_000, dayMs), () => {
      hourOutput[hour] = replicas.reduce((sum, replica) => sum + replica.engine.stats.generatedTokens, 0);
      hourPrompt[hour] = replicas.reduce((sum, replica) => sum + replica.engine.stats.promptTokens, 0);
    });
  }

  clock.runUntilIdle(48 * 3_600_000);

  const slots = replicaCount * profile.max_batch;
  const hours = Array.from({ length: hourCount }, (_, hour): HourReport => {
    const seconds = Math.min(3_600, (dayMs - hour * 3_600_000) / 1_000);
    const sortedTtfts = hourTtfts[hour]!.sort((a, b) => a - b);
    return {
      hourUtc: (peakHourUtc + hour) % 24,
      slotShare: hourSampleCount[hour]! === 0 ? 0 : hourSlotSamples[hour]! / hourSampleCount[hour]! / slots,
      tokenShare: (hourOutput[hour + 1]! - hourOutput[hour]!) / seconds / saturatedTokensPerSecond,
      onlineRequests: sortedTtfts.length,
      onlineTtftP99Ms: percentile(sortedTtfts, 0.99),
      batchLinesDone: hourBatchDone[hour]!,
    };
  });
  const sorted = Float64Array.from(ttfts).sort();
  const outputTokens = hourOutput[hourCount]!;
  const promptTokens = hourPrompt[hourCount]!;
  const fleetCost = replicaCount * replicaHourYuan * (dayMs / 3_600_000);
  const totalSamples = hourSampleCount.reduce((a, b) => a + b, 0);
  return {
    kind,
    onlineRequests,
    onlineRefused,
    onlineTtftP50Ms: percentile(sorted, 0.5),
    onlineTtftP99Ms: percentile(sorted, 0.99),
    onlineQueueWaitP99Ms:
      kind === 'online + batch, naive FIFO'
        ? null
        : percentile(
            onlineQueueWaits.sort((a, b) => a - b),
            0.99,
          ),
    batchCompletionHours: batchFinishedAt === undefined ? null : (batchFinishedAt - startMs) / 3_600_000,
    batchLinesByDeadline: batchDoneByDeadline,
    batchLinesByClass,
    batchRefusals,
    slotShare: hourSlotSamples.reduce((a, b) => a + b, 0) / totalSamples / slots,
    tokenShare: outputTokens / (dayMs / 1_000) / saturatedTokensPerSecond,
    outputTokens,
    promptTokens,
    costPerMillionOutputYuan: fleetCost / (outputTokens / 1e6),
    costPerMillionTokensYuan: fleetCost / ((outputTokens + promptTokens) / 1e6),
    hours,
    wallSeconds: (performance.now() - started) / 1_000,
  };
}

/**
 * Output tokens/s of one replica with every slot busy on lines of the batch's length mix: a FIFO flood of 20 virtual
 * minutes, measured after the first 5 (the "100%" of the token-based utilisation).
 */
function measureSaturatedRate(batch: BatchLines, profile: SimulatedProfile): number {
  const clock = new VirtualClock(0);
  const engine = new ReplicaEngine(profile, { clock });
  let index = 0;
  const feed = () => {
    const line = lineAt(batch, index++ % batch.length);
    engine.submit({ ...line, onDone: feed });
  };
  for (let slot = 0; slot < profile.max_batch * 2; slot++) feed();
  clock.advanceTo(5 * 60_000);
  const before = engine.stats.generatedTokens;
  clock.advanceTo(20 * 60_000);
  const rate = (engine.stats.generatedTokens - before) / (15 * 60);
  engine.close();
  return rate;
}

const sparkBlocks = '▁▂▃▄▅▆▇█';
function sparkline(values: number[]): string {
  return values.map((value) => sparkBlocks[Math.max(0, Math.min(7, Math.round(value * 8 - 0.5)))]).join('');
}

function formatMs(ms: number | null): string {
  if (ms === null) return '–';
  if (ms >= 3_600_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  if (ms >= 10_000) return `${(ms / 1_000).toFixed(0)} s`;
  return ms >= 1_000 ? `${(ms / 1_000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

function markdownTables(runs: RunReport[]): string {
  const lines = [
    '| run | online requests | online refused | online TTFT p50 | online TTFT p99 | batch done (h after submit) | batch lines by deadline | batch lines batch / flex / default | busy slot share | output tok/s ÷ saturated | cost / M output tokens | cost / M tokens (in + out) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const report of runs) {
    const refused = Object.values(report.onlineRefused).reduce((a, b) => a + b, 0);
    const hasBatch = report.kind !== 'online only';
    const classes = report.batchLinesByClass;
    lines.push(
      `| ${report.kind} | ${report.onlineRequests} | ${refused} | ${formatMs(report.onlineTtftP50Ms)} | ` +
        `${formatMs(report.onlineTtftP99Ms)} | ` +
        `${hasBatch ? (report.batchCompletionHours === null ? 'not done' : report.batchCompletionHours.toFixed(1)) : '–'} | ` +
        `${hasBatch ? report.batchLinesByDeadline : '–'} | ` +
        `${hasBatch ? `${classes.batch} / ${classes.flex} / ${classes.default}` : '–'} | ` +
        `${percent(report.slotShare)} | ${percent(report.tokenShare)} | ` +
        `${report.costPerMillionOutputYuan.toFixed(3)} ¥ | ${report.costPerMillionTokensYuan.toFixed(4)} ¥ |`,
    );
  }
  lines.push(
    '',
    `Hourly profile (hours from the submission at ${peakHourUtc}:00 UTC; ▁ = 0–12.5% … █ = 87.5–100%):`,
    '',
  );
  lines.push(
    '| run | busy slot share, hour by hour | output tok/s ÷ saturated, hour by hour | online TTFT p99, worst hour |',
  );
  lines.push('|---|---|---|---:|');
  for (const report of runs) {
    const worst = Math.max(...report.hours.map((hour) => hour.onlineTtftP99Ms ?? 0));
    lines.push(
      `| ${report.kind} | \`${sparkline(report.hours.map((hour) => hour.slotShare))}\` | ` +
        `\`${sparkline(report.hours.map((hour) => hour.tokenShare))}\` | ${formatMs(worst)} |`,
    );
  }
  lines.push(
    '',
    '| hour (UTC) | online m(t) | ' +
      runs.map((report) => `${report.kind}: slots / tokens / TTFT p99`).join(' | ') +
      ' |',
  );
  lines.push(`|---:|---:|${runs.map(() => '---:').join('|')}|`);
  for (let hour = 0; hour < runs[0]!.hours.length; hour++) {
    const hourUtc = runs[0]!.hours[hour]!.hourUtc;
    const m = dayNightRate(startMs + (hour + 0.5) * 3_600_000);
    lines.push(
      `| ${String(hourUtc).padStart(2, '0')}:00 | ${m.toFixed(2)} | ` +
        runs
          .map((report) => {
            const row = report.hours[hour]!;
            return `${percent(row.slotShare)} / ${percent(row.tokenShare)} / ${formatMs(row.onlineTtftP99Ms)}`;
          })
          .join(' | ') +
        ' |',
    );
  }
  return lines.join('\n');
}

/** What a worker thread is asked to run. */
interface RunOrder {
  kind: RunKind;
  settings: ExperimentSettings;
  saturated: number;
}

/** Runs the simulations on two worker threads (the longest first), in the order of `settings.kinds`. */
async function runAll(settings: ExperimentSettings, saturated: number): Promise<RunReport[]> {
  const reports = new Map<RunKind, RunReport>();
  const queue = [...settings.kinds].sort((a, b) => Number(a === 'online only') - Number(b === 'online only'));
  const next = async (): Promise<void> => {
    const kind = queue.shift();
    if (kind === undefined) return;
    const order: RunOrder = { kind, settings, saturated };
    const report = await new Promise<RunReport>((resolve, reject) => {
      const worker = new Worker(new URL(import.meta.url), { workerData: order });
      worker.once('message', (message: RunReport) => resolve(message));
      worker.once('error', reject);
    });
    console.log(`${kind}: ${report.wallSeconds.toFixed(1)} s of wall time`);
    reports.set(kind, report);
    await next();
  };
  await Promise.all([next(), next()]);
  return settings.kinds.map((kind) => reports.get(kind)!);
}

function runInWorker(order: RunOrder): void {
  const trace = loadAzureTrace(sharedTracePath(traceFile));
  const batch = sampleBatch(trace, order.settings.batchLines);
  parentPort!.postMessage(run(order.kind, order.settings, trace, batch, order.saturated));
}

async function main(): Promise<void> {
  const { out, ...settings } = parseSettings(process.argv.slice(2));
  const { profile, batchLines, batchCeiling } = settings;
  const trace = loadAzureTrace(sharedTracePath(traceFile));
  const traceSeconds = trace[trace.length - 1]!.atMs / 1_000;
  const batch = sampleBatch(trace, batchLines);
  const saturatedPerReplica = measureSaturatedRate(batch, profile);
  const saturated = saturatedPerReplica * replicaCount;
  const pureDecode = (replicaCount * profile.max_batch * 1_000) / stepDurationMs(profile, profile.max_batch);
  const peakRate = (trace.length / traceSeconds) * traceSpeedup;
  console.log(
    `Batch peak-shifting experiment: ${replicaCount} simulated replicas (DESIGN.md profile, prefill chunks of ` +
      `${profile.prefill_chunk_tokens || 'whole prompts'}, ${profile.scheduling_policy} scheduling), ` +
      `${(dayMs / 3_600_000).toFixed(0)} h from ${new Date(startMs).toISOString()} on a virtual clock.\n` +
      `Online: ${traceFile} (${trace.length} requests, ${(traceSeconds / 60).toFixed(0)} min) sped up ${traceSpeedup}× and ` +
      `tiled, thinned by m(t) = 0.25 + 0.75 × (1 + cos(2π (t − ${peakHourUtc}:00 UTC)/24 h))/2: ` +
      `${peakRate.toFixed(1)} req/s at the peak, ${(peakRate * 0.25).toFixed(1)} req/s at the trough.\n` +
      `Batch: ${batchLines} lines (lengths drawn from the trace, seed ${seed}) at ${peakHourUtc}:00 UTC, 24 h window. ` +
      `Off-peak window ${offPeakWindows.map((window) => `${window.start}–${window.end}`).join(', ')} UTC: batch ceiling ` +
      `${batchCeiling.peak} → ${batchCeiling.offPeak}; flex ceiling ${settings.flexCeiling}; online headroom ` +
      `${settings.onlineHeadroom.minimumSequences} + ${settings.onlineHeadroom.perOnlineSequence} × online sequences.\n` +
      `Saturated fleet (every slot busy on the batch's length mix): ${saturated.toFixed(0)} output tok/s ` +
      `(pure decode at 64: ${pureDecode.toFixed(0)}). Cost: ${replicaHourYuan} yuan per replica-hour.\n`,
  );
  const started = performance.now();
  const runs = await runAll(settings, saturated);
  console.log(`All runs: ${((performance.now() - started) / 1_000).toFixed(1)} s of wall time (two worker threads)`);
  console.log(`\n${markdownTables(runs)}`);

  const reference = runs.find((report) => report.kind === 'online only');
  const tollgate = runs.find((report) => report.kind === 'online + batch, Tollgate');
  if (reference !== undefined && tollgate !== undefined) {
    const ttftRatio = (tollgate.onlineTtftP99Ms ?? 0) / (reference.onlineTtftP99Ms ?? 1);
    console.log(
      `\nTargets (Tollgate): online TTFT p99 ${ttftRatio.toFixed(3)}× online-only (≤ 1.10: ${ttftRatio <= 1.1 ? 'met' : 'MISSED'}; ` +
        `gateway queue wait p99 ${formatMs(tollgate.onlineQueueWaitP99Ms)} vs ${formatMs(reference.onlineQueueWaitP99Ms)}); ` +
        `utilisation ${percent(tollgate.slotShare)} slots / ${percent(tollgate.tokenShare)} tokens (≥ 85%: ` +
        `${tollgate.slotShare >= 0.85 && tollgate.tokenShare >= 0.85 ? 'met' : tollgate.slotShare >= 0.85 || tollgate.tokenShare >= 0.85 ? 'met on one measure' : 'MISSED'}); ` +
        `batch ${tollgate.batchCompletionHours === null ? 'NOT finished' : `finished after ${tollgate.batchCompletionHours.toFixed(1)} h`} (window 24 h).`,
    );
  }

  const date = new Date().toISOString().slice(0, 10);
  const folder = join(repositoryRoot(), 'bench', 'results');
  mkdirSync(folder, { recursive: true });
  const file = out ?? join(folder, `batch-${date}.json`);
  const setup = {
    trace: traceFile,
    traceSpeedup,
    peakOnlineRequestsPerSecond: peakRate,
    dayNight: `m(t) = 0.25 + 0.75 × (1 + cos(2π (t − ${peakHourUtc}:00 UTC) / 24 h)) / 2, arrivals thinned by m(t)`,
    replicas: replicaCount,
    profile,
    startUtc: new Date(startMs).toISOString(),
    dayHours: dayMs / 3_600_000,
    batchLines,
    offPeakWindows,
    batchCeiling,
    flexCeiling: settings.flexCeiling,
    onlineHeadroom: settings.onlineHeadroom,
    maxOutputTokens,
    runnerQueueDepth,
    plannerOptions,
    saturatedOutputTokensPerSecond: saturated,
    pureDecodeOutputTokensPerSecond: pureDecode,
    replicaHourYuan,
    seed,
  };
  writeFileSync(file, `${JSON.stringify({ date, setup, runs }, null, 2)}\n`);
  console.log(`\nWrote ${file}`);
}

if (isMainThread) {
  await main();
} else {
  runInWorker(workerData as RunOrder);
}
