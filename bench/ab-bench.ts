/**
 * A/B of two builds of the gateway at the same hour: this checkout against another built one (a `git worktree` of
 * the revision to compare, after `npx tsc -p tsconfig.build.json` in it). Pairs alternate the two, each run on a fresh
 * minimal upstream and a fresh gateway, so drift on a shared machine hits both alike; what is reported is each
 * pair's ratio and the ratio of the means. On a 2-core machine single pairs differ by up to ±20%: compare means
 * over several pairs, and prefer the CPU per request at a fixed rate, the steadiest figure.
 *
 *   git worktree add /tmp/base <rev> && ln -s "$PWD/node_modules" /tmp/base/node_modules
 *   (cd /tmp/base && npx tsc -p tsconfig.build.json)
 *   npm run build && node dist/bench/ab-bench.js --base /tmp/base [--pairs 4] [--connections 32 | --rate 1000]
 *     [--stream] [--duration 10] [--workers 2] [--metered] [--postgres postgres://127.0.0.1:5432/test]
 *     [--redis redis://127.0.0.1:6379]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import pg from 'pg';
import { BenchProcesses } from './bench-processes.js';
import { machineSummary, writeBenchResult } from './bench-results.js';
import { chatRequestBody, meteredConfig, repoRoot, startTollgate, startUpstream } from './bench-targets.js';
import { type LoadSpec, runLoadInChild } from './load.js';
import { cpuPerResponse, type GatewayCpu, gatewayCpu } from './process-tree-stats.js';

/** One run of one build. */
export interface AbRun {
  /** Responses per second over the measured window. */
  throughput: number;
  p50Ms: number;
  p99Ms: number;
  /** The gateway's CPU (all threads) per response over the measured window, µs. */
  cpuUs: number;
  /** Its serving threads' CPU per response, µs: the main thread, or with several workers theirs (not the primary's). */
  mainCpuUs: number;
}

/** A measure compared over the pairs: each pair's after ÷ before, and the ratio of the means. */
export interface AbComparison {
  measure: keyof AbRun;
  before: number[];
  after: number[];
  pairRatios: number[];
  ratioOfMeans: number;
}

const measures: ReadonlyArray<keyof AbRun> = ['throughput', 'p50Ms', 'p99Ms', 'cpuUs', 'mainCpuUs'];

/** Compares the runs of the base build (`before`) with this one's (`after`), pair by pair. */
export function compareRuns(before: readonly AbRun[], after: readonly AbRun[]): AbComparison[] {
  if (before.length !== after.length || before.length === 0) {
    throw new Error(`need as many runs of each build, at least one (got ${before.length} and ${after.length})`);
  }
  const mean = (values: readonly number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
  return measures.map((measure) => {
    const beforeValues = before.map((run) => run[measure]);
    const afterValues = after.map((run) => run[measure]);
    return {
      measure,
      before: beforeValues,
      after: afterValues,
      pairRatios: afterValues.map((value, index) => value / beforeValues[index]!),
      ratioOfMeans: mean(afterValues) / mean(beforeValues),
    };
  });
}

/** The comparison as a Markdown table. */
export function comparisonTable(comparisons: readonly AbComparison[]): string {
  const format = (value: number) => (value >= 100 ? value.toFixed(0) : value.toFixed(3));
  const lines = [
    '| measure | before | after | pair ratios | after ÷ before (means) |',
    '| --- | --- | --- | --- | ---: |',
  ];
  for (const comparison of comparisons) {
    lines.push(
      `| ${comparison.measure} | ${comparison.before.map(format).join(' / ')} | ${comparison.after.map(format).join(' / ')} | ` +
        `${comparison.pairRatios.map((ratio) => ratio.toFixed(2)).join(' ')} | ${comparison.ratioOfMeans.toFixed(2)} |`,
    );
  }
  return lines.join('\n');
}

/** The commit a checkout is at (with `+` when its tree has changes), or `unknown` outside git. */
function revisionOf(root: string): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const changes = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: root,
      encoding: 'utf8',
    });
    return changes.trim() === '' ? head : `${head}+`;
  } catch {
    return 'unknown';
  }
}

interface AbOptions {
  base: string;
  pairs: number;
  connections: number;
  rate: number | undefined;
  stream: boolean;
  duration: number;
  workers: number;
  metered: boolean;
  /** A PostgreSQL URL: the gateway runs on it (cluster mode's store), in a schema of its own per run. */
  postgres: string | undefined;
  /** A Redis URL: admission (and, with `postgres`, lease returns) go through it, as in cluster mode. */
  redis: string | undefined;
}

/** Runs one build once: a fresh upstream and gateway, one load, the gateway's CPU over it. */
async function runOnce(root: string, options: AbOptions): Promise<AbRun> {
  const processes = new BenchProcesses();
  const schema = options.postgres === undefined ? undefined : `tg_ab_${randomBytes(6).toString('hex')}`;
  try {
    const upstream = await startUpstream(processes);
    const store = schema === undefined ? {} : { store: { url: `${options.postgres}?schema=${schema}` } };
    const admission = options.redis === undefined ? {} : { admission: { store: 'redis', redis_url: options.redis } };
    const gateway = await startTollgate(processes, upstream.baseUrl, {
      root,
      workers: options.workers,
      ...(options.metered ? meteredConfig : {}),
      extraConfig: { ...(options.metered ? meteredConfig.extraConfig : {}), ...store, ...admission },
    });
    const pid = gateway.process!.pid;
    const load: LoadSpec = {
      ...(options.rate === undefined
        ? { mode: 'max' as const, connections: options.connections }
        : { mode: 'rate' as const, rate: options.rate, connections: 256 }),
      url: gateway.chatUrl,
      headers: gateway.headers,
      body: chatRequestBody(options.stream),
      durationSeconds: options.duration,
      warmupSeconds: 2,
    };
    // CPU is read over the measured window only: the warm-up's JIT compilation would dilute the difference. The
    // load generator starts measuring `warmupSeconds` after it starts (its own start-up, ~0.2 s, comes first).
    let atWindowStart: GatewayCpu | undefined;
    const windowStart = setTimeout(
      () => {
        atWindowStart = gatewayCpu(pid);
      },
      (load.warmupSeconds + 0.2) * 1000,
    );
    const result = await runLoadInChild(load);
    clearTimeout(windowStart);
    if (atWindowStart === undefined) throw new Error(`${root}: the load ended before its measured window began`);
    if (result.non2xx > 0 || result.errors > 0) {
      throw new Error(`${root}: ${result.non2xx} non-2xx answers, ${result.errors} errors`);
    }
    return {
      throughput: result.throughput,
      p50Ms: result.latency.p50,
      p99Ms: result.latency.p99,
      ...cpuPerResponse(atWindowStart, gatewayCpu(pid), result.ok),
    };
  } finally {
    await processes.stopAll();
    if (schema !== undefined) await dropSchema(options.postgres!, schema);
  }
}

async function main(): Promise<void> {
  const flags = new Command('ab-bench')
    .description('A/B of this build against another built checkout, alternating pairs at the same hour.')
    .requiredOption('--base <dir>', 'the other built checkout (e.g. a git worktree after tsc)')
    .option('--pairs <n>', 'pairs of runs', '4')
    .option('--connections <n>', 'keep-alive connections of a maximum-throughput run', '32')
    .option('--rate <n>', 'a constant offered rate instead, requests per second')
    .option('--stream', 'streamed requests (20 chunks) instead of whole ones', false)
    .option('--duration <s>', 'measured seconds per run (after 2 s of warm-up)', '10')
    .option('--workers <n>', "the gateway's worker processes (server.workers)", '1')
    .option('--metered', 'price every request and reserve it on a prepaid wallet (bench:metering\'s "on")', false)
    .option('--postgres <url>', 'run the gateway on this PostgreSQL database (a new schema per run) instead of SQLite')
    .option('--redis <url>', 'admission through this Redis (cluster mode); with --postgres, wallet leases too')
    .option('--out <path>', 'JSON output path')
    .parse()
    .opts<{
      base: string;
      pairs: string;
      connections: string;
      rate?: string;
      stream: boolean;
      duration: string;
      workers: string;
      metered: boolean;
      postgres?: string;
      redis?: string;
      out?: string;
    }>();
  const base = resolve(flags.base);
  if (!existsSync(join(base, 'dist/src/cli/main.js'))) {
    throw new Error(`${base} has no dist/src/cli/main.js: build it first (npx tsc -p tsconfig.build.json)`);
  }
  const options: AbOptions = {
    base,
    pairs: Number(flags.pairs),
    connections: Number(flags.connections),
    rate: flags.rate === undefined ? undefined : Number(flags.rate),
    stream: flags.stream,
    duration: Number(flags.duration),
    workers: Number(flags.workers),
    metered: flags.metered,
    postgres: flags.postgres,
    redis: flags.redis,
  };
  const counts = { pairs: options.pairs, connections: options.connections, workers: options.workers };
  for (const [name, value] of Object.entries(counts)) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  }
  const before: AbRun[] = [];
  const after: AbRun[] = [];
  for (let pair = 1; pair <= options.pairs; pair++) {
    // Alternate which build goes first, so neither always runs on the warmer machine.
    const order = pair % 2 === 1 ? ([base, repoRoot] as const) : ([repoRoot, base] as const);
    for (const root of order) {
      const run = await runOnce(root, options);
      (root === base ? before : after).push(run);
      process.stdout.write(
        `pair ${pair}/${options.pairs} ${root === base ? 'before' : 'after '}: ${run.throughput.toFixed(0)} req/s, ` +
          `p50 ${run.p50Ms.toFixed(3)} ms, p99 ${run.p99Ms.toFixed(3)} ms, ${run.cpuUs.toFixed(0)} µs CPU/req ` +
          `(${run.mainCpuUs.toFixed(0)} serving thread)\n`,
      );
    }
  }
  const comparisons = compareRuns(before, after);
  process.stdout.write(`\n${comparisonTable(comparisons)}\n\n`);
  await writeBenchResult('ab', flags.out, {
    benchmark: 'A/B of two builds',
    machine: machineSummary(),
    options: { ...options, after: repoRoot },
    revisions: { before: revisionOf(base), after: revisionOf(repoRoot) },
    before,
    after,
    comparisons,
  });
}

/** Drops a run's schema (`--postgres`). */
async function dropSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await client.end();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`ab-bench: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
