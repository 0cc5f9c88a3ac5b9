/**
 * How long a write on the serving thread's own SQLite connection (a top-up, a key, a batch line) waits for the settle
 * thread's commits, and how much of that wait blocks the event loop, for each gathering delay of the settlement
 * writer (`journalCommitDelayMs`) and each way of waiting (`SqliteStoreOptions.busyWait`). better-sqlite3 is
 * synchronous: with `block`, a write that finds the settle thread's transaction holding the lock waits inside
 * SQLite's busy handler and nothing else runs meanwhile; with `yield` (the store's default) it retries on timers.
 * Longer gathering means fewer, larger transactions: less CPU, but a longer wait for a write that meets one.
 *
 * Settlements are fed at `--rate` per second through a `SettlementWriter` with a journal, as the embedded gateway
 * does; every `--probe-every` ms the serving thread writes one tenant row and the time it took is recorded, and a
 * 1 ms timer records how late the event loop ran it. Combinations are run in turn, `--rounds` times, each on a fresh
 * store.
 *
 *   npm run build && node dist/bench/sqlite-contention.js [--gather 5,20,50] [--busy-wait block,yield] [--rate 2500]
 *     [--seconds 15] [--rounds 2]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { SettlementJournal } from '../src/metering/settlement-journal.js';
import { SettlementWriter } from '../src/metering/settlement-writer.js';
import { settlementOf, usageEventFixture } from '../src/store/ledger-fixtures.js';
import { openSqliteStore } from '../src/store/sqlite-store.js';
import { machineSummary, writeBenchResult } from './bench-results.js';
import { summarizeSamples } from './load.js';

/** The serving thread's probe writes of one run, summarized. */
export interface BlockingSummary {
  probes: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Probe writes that took over 1 ms. */
  overOneMs: number;
}

/** One run: a gathering delay and way of waiting, what the writer committed, how the probe writes fared. */
export interface ContentionRun extends BlockingSummary {
  gatherMs: number;
  busyWait: BusyWait;
  settlements: number;
  commits: number;
  /** How late a 1 ms timer ran, ms: the 99th percentile and the worst (the longest the event loop was blocked). */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

/** How the serving thread's connection waits for the lock (`SqliteStoreOptions.busyWait`). */
export type BusyWait = 'block' | 'yield';

/** Options of one run. */
export interface ContentionOptions {
  gatherMs: number;
  /** Settlements per second. */
  rate: number;
  seconds: number;
  /** Interval between the serving thread's probe writes, ms. */
  probeEveryMs: number;
  /** Default `yield`. */
  busyWait?: BusyWait;
}

/** Summarizes probe durations (ms): the load generator's nearest-rank percentiles, and the writes over 1 ms. */
export function blockingSummary(durations: readonly number[]): BlockingSummary {
  if (durations.length === 0) throw new Error('no probe writes to summarize');
  const summary = summarizeSamples(Float64Array.from(durations));
  return {
    probes: summary.count,
    p50Ms: summary.p50,
    p90Ms: summary.p90,
    p99Ms: summary.p99,
    maxMs: summary.max,
    overOneMs: durations.filter((duration) => duration > 1).length,
  };
}

/** Runs one gathering delay on a fresh store with a settle thread (needs the built worker script in `dist/`). */
export async function contentionRun(options: ContentionOptions): Promise<ContentionRun> {
  const directory = mkdtempSync(path.join(tmpdir(), 'tollgate-contention-'));
  const busyWait = options.busyWait ?? 'yield';
  const store = openSqliteStore(path.join(directory, 'store.db'), { busyWait });
  try {
    await store.migrate();
    store.useProcessReservations();
    if (!store.settleOnThread()) throw new Error('no settle thread: run `npm run build` first');
    const tenantId = (await store.createTenant('contention')).id;
    const writer = new SettlementWriter(store, {
      journal: new SettlementJournal(path.join(directory, 'journal')),
      journalCommitDelayMs: options.gatherMs,
    });
    const started = performance.now();
    let written = 0;
    const feed = setInterval(() => {
      const due = Math.floor(((performance.now() - started) * options.rate) / 1000);
      for (; written < due; written++) {
        const event = usageEventFixture({
          requestId: `req-${written}`,
          tenantId,
          keyId: 'key-contention',
          receivedAt: 1_700_000_000_000 + written,
          inputTokens: 10,
          outputTokens: 5,
          inputListAmount: 1n,
        });
        void writer.write(settlementOf(event));
      }
    }, 1);
    const durations: number[] = [];
    // The first second warms up the statements and the settle thread.
    const warmUntil = started + 1000;
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    const measuring = setTimeout(() => loopDelay.enable(), 1000);
    let probing: Promise<void> = Promise.resolve();
    const probe = setInterval(() => {
      probing = probing.then(async () => {
        const at = performance.now();
        await store.createTenant('probe');
        if (at >= warmUntil) durations.push(performance.now() - at);
      });
    }, options.probeEveryMs);
    await new Promise((resolve) => setTimeout(resolve, options.seconds * 1000));
    loopDelay.disable();
    clearTimeout(measuring);
    clearInterval(feed);
    clearInterval(probe);
    await probing;
    await writer.close();
    // The histogram holds whole intervals between the timer's runs (ns): lateness is what exceeds its 1 ms.
    const lateMs = (nanoseconds: number) => Math.max(0, nanoseconds / 1e6 - 1);
    return {
      gatherMs: options.gatherMs,
      busyWait,
      settlements: writer.stats.committed,
      commits: writer.stats.transactions,
      ...blockingSummary(durations),
      loopDelayP99Ms: lateMs(loopDelay.percentile(99)),
      loopDelayMaxMs: lateMs(loopDelay.max),
    };
  } finally {
    await store.close();
    rmSync(directory, { recursive: true, force: true });
  }
}

/** A comma-separated list of delays, ms (0 allowed: commit on the next turn). */
export function parseDelays(text: string): number[] {
  const parts = text.split(',').map((part) => part.trim());
  if (parts.some((part) => !/^\d+(\.\d+)?$/.test(part))) {
    throw new Error(`--gather: expected a comma-separated list of numbers ≥ 0, got '${text}'`);
  }
  return parts.map(Number);
}

/** A comma-separated list of ways of waiting (`block`, `yield`). */
export function parseBusyWaits(text: string): BusyWait[] {
  const parts = text.split(',').map((part) => part.trim());
  if (parts.some((part) => part !== 'block' && part !== 'yield')) {
    throw new Error(`--busy-wait: expected a comma-separated list of block and yield, got '${text}'`);
  }
  return parts as BusyWait[];
}

async function main(): Promise<void> {
  const flags = new Command('sqlite-contention')
    .description(
      "How long the serving thread's own SQLite writes wait for the settle thread, and block its event loop, per " +
        'gathering delay and way of waiting.',
    )
    .option('--gather <list>', 'gathering delays of the settlement writer, ms', '5,20,50')
    .option('--busy-wait <list>', 'how the serving connection waits for the lock: block, yield', 'block,yield')
    .option('--rate <n>', 'settlements per second', '2500')
    .option('--seconds <s>', 'seconds per run (the first is warm-up)', '15')
    .option('--rounds <n>', 'runs of each delay, interleaved', '2')
    .option('--probe-every <ms>', "interval of the serving thread's probe writes", '10')
    .option('--out <path>', 'JSON output path')
    .parse()
    .opts<{
      gather: string;
      busyWait: string;
      rate: string;
      seconds: string;
      rounds: string;
      probeEvery: string;
      out?: string;
    }>();
  const delays = parseDelays(flags.gather);
  const waits = parseBusyWaits(flags.busyWait);
  const [rate, seconds, rounds, probeEveryMs] = [flags.rate, flags.seconds, flags.rounds, flags.probeEvery].map(
    Number,
  ) as [number, number, number, number];
  for (const [name, value] of Object.entries({ rate, seconds, rounds, 'probe-every': probeEveryMs })) {
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  }
  const runs: ContentionRun[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const busyWait of waits) {
      for (const gatherMs of delays) {
        const run = await contentionRun({ gatherMs, busyWait, rate, seconds, probeEveryMs });
        runs.push(run);
        process.stdout.write(
          `round ${round}, ${busyWait}, gather ${gatherMs} ms: ${run.settlements} settlements in ${run.commits} ` +
            `commits; probe writes p50 ${run.p50Ms.toFixed(3)}, p99 ${run.p99Ms.toFixed(3)}, ` +
            `max ${run.maxMs.toFixed(3)} ms, ${run.overOneMs} of ${run.probes} over 1 ms; event loop late ` +
            `p99 ${run.loopDelayP99Ms.toFixed(3)}, max ${run.loopDelayMaxMs.toFixed(3)} ms\n`,
        );
      }
    }
  }
  const rows = runs.map(
    (run) =>
      `| ${run.busyWait} | ${run.gatherMs} | ${run.settlements} | ${run.commits} | ${run.p50Ms.toFixed(3)} | ` +
      `${run.p90Ms.toFixed(3)} | ${run.p99Ms.toFixed(3)} | ${run.maxMs.toFixed(3)} | ${run.overOneMs} / ${run.probes} | ` +
      `${run.loopDelayP99Ms.toFixed(3)} | ${run.loopDelayMaxMs.toFixed(3)} |`,
  );
  process.stdout.write(
    '\n| busy wait | gather ms | settlements | commits | probe p50 ms | p90 | p99 | max | over 1 ms | ' +
      'loop late p99 ms | loop late max ms |\n' +
      `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n${rows.join('\n')}\n\n`,
  );
  await writeBenchResult('contention', flags.out, {
    benchmark: "serving-thread SQLite writes against the settle thread's commits",
    machine: machineSummary(),
    options: { delays, waits, rate, seconds, rounds, probeEveryMs },
    runs,
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`sqlite-contention: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
