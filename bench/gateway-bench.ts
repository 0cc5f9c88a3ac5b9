/**
 * The gateway benchmark (`npm run bench`): direct-to-upstream, a bare forward-only proxy (the floor of any Node
 * gateway: `bare-proxy.ts`), Tollgate and Portkey's gateway side by side in one run, against the minimal upstream with
 * 0 ms latency. Scenarios, each run for every target in turn (interleaved, so that
 * drift of the shared machine hits all targets alike):
 * - maximum throughput at each `--connections`, whole and streamed (20 chunks);
 * - a fixed offered load of `--rate` requests/s, whole and streamed, for latency;
 * - RSS while holding `--rss-streams` slow streams open (see `rss-streams.ts`).
 * Prints a Markdown table and writes `bench/results/gateway-<date>.json`. See docs/benchmarks.md.
 */
import { cpus, loadavg, release, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { BenchProcesses } from './bench-processes.js';
import { writeBenchResult } from './bench-results.js';
import {
  type BenchTarget,
  chatRequestBody,
  checkTarget,
  startBareProxyTarget,
  startPortkey,
  startTollgate,
  startUpstream,
  tollgateTargetName,
} from './bench-targets.js';
import { positiveIntegerList, positiveNumber, spaceSeparatedFlags } from './cli-numbers.js';
import { type LoadResult, type LoadSpec, runLoadInChild } from './load.js';
import { processTreeCpuMs } from './process-tree-stats.js';
import {
  defaultStreamRssOptions,
  formatStreamRssTable,
  runStreamRssScenario,
  type StreamRssResult,
} from './rss-streams.js';

/** Options of one benchmark run (CLI flags). */
export interface GatewayBenchOptions {
  /** Measured time of each run, s. Default 10. */
  duration: number;
  /** Warm-up before each run, s. Default 2. */
  warmup: number;
  /** Connection counts of the maximum-throughput scenarios. Default [32, 256]. */
  connections: number[];
  /** Offered load of the fixed-rate latency scenarios, requests/s. Default 1000. */
  rate: number;
  /** Tollgate `server.workers` settings, one Tollgate target each. Default [1]. */
  workers: number[];
  /** Leave Portkey out. Default false. */
  skipPortkey: boolean;
  /** Leave the bare proxy (the floor of a Node gateway, `bare-proxy.ts`) out. Default false. */
  skipBareProxy: boolean;
  /** Leave the stream-memory scenario out. Default false. */
  skipRss: boolean;
  /** Concurrent streams of the memory scenario. Default 2000. */
  rssStreams: number;
  /** Times every scenario is repeated (interleaved); the round with the median throughput is reported. Default 1. */
  rounds: number;
  /** Write CPU profiles of the Tollgate processes to this directory (`node --cpu-prof`). Default none. */
  cpuProfDir?: string;
  /** Extra `node` flags of the Tollgate processes (e.g. `--max-semi-space-size=32`), for experiments. Default none. */
  nodeArgs?: string[];
  /** Run only the scenarios whose id starts with one of these (`max`, `rate`, `max-c32-whole` …). Default all. */
  scenarios?: string[];
  /** Where the JSON goes. Default `bench/results/gateway-<date>.json`. */
  out?: string;
}

/** A scenario: how the load is shaped. */
interface Scenario {
  id: string;
  kind: 'max' | 'rate';
  stream: boolean;
  /** Client connections (max: all busy; rate: the most the client opens). */
  connections: number;
  /** Offered load for `rate`, requests/s. */
  rate?: number;
}

/** A load result with the CPU time the servers spent on it (warm-up included), µs per response. */
interface MeasuredResult extends LoadResult {
  /** CPU of the gateway's process tree per response, µs (undefined for direct). */
  gatewayCpuUsPerRequest?: number;
  /** CPU of the minimal upstream per response, µs. */
  upstreamCpuUsPerRequest: number;
}

/** One target's outcome in one scenario: the median round, and every round when there were several. */
type Outcome = { result: MeasuredResult; rounds?: MeasuredResult[] } | { skipped: string };

/** Tollgate compared with direct and Portkey in one scenario. */
interface Comparison {
  target: string;
  /** Gateway p50 minus direct p50, ms. */
  addedP50Ms: number;
  /** Gateway p99 minus direct p99, ms. */
  addedP99Ms: number;
  /** Gateway throughput / direct throughput. */
  throughputVsDirect: number;
  /** Gateway throughput / Portkey throughput, when Portkey ran. */
  throughputVsPortkey?: number;
  /** Gateway throughput / bare-proxy throughput, when the bare proxy ran (not for the bare proxy itself). */
  throughputVsBareProxy?: number;
}

interface ScenarioReport {
  scenario: Scenario;
  outcomes: Record<string, Outcome>;
  comparisons: Comparison[];
}

/** One target (pass/fail) line of the summary. */
interface TargetCheck {
  check: string;
  target: string;
  value: number;
  limit: number;
  pass: boolean;
}

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

function scenariosOf(options: GatewayBenchOptions): Scenario[] {
  const scenarios: Scenario[] = [];
  for (const connections of options.connections) {
    for (const stream of [false, true]) {
      scenarios.push({ id: `max-c${connections}-${stream ? 'stream' : 'whole'}`, kind: 'max', stream, connections });
    }
  }
  for (const stream of [false, true]) {
    scenarios.push({
      id: `rate-${options.rate}-${stream ? 'stream' : 'whole'}`,
      kind: 'rate',
      stream,
      // Enough for a slow target to hold many requests in flight; an idle connection costs nothing.
      connections: 256,
      rate: options.rate,
    });
  }
  return scenarios;
}

function loadSpecOf(scenario: Scenario, target: BenchTarget, options: GatewayBenchOptions): LoadSpec {
  const common = {
    url: target.chatUrl,
    headers: target.headers,
    body: chatRequestBody(scenario.stream),
    durationSeconds: options.duration,
    warmupSeconds: options.warmup,
  };
  return scenario.kind === 'max'
    ? { mode: 'max', ...common, connections: scenario.connections }
    : { mode: 'rate', ...common, connections: scenario.connections, rate: scenario.rate ?? options.rate };
}

/**
 * Runs one load and measures the CPU time the gateway's process tree and the upstream spent meanwhile: unlike
 * throughput, CPU per request hardly depends on how many other processes compete for the cores.
 */
async function measureCpu(
  target: BenchTarget,
  upstreamPid: number,
  run: () => Promise<LoadResult>,
): Promise<MeasuredResult> {
  const gatewayPid = target.process?.pid;
  const gatewayBefore = gatewayPid === undefined ? 0 : processTreeCpuMs(gatewayPid);
  const upstreamBefore = processTreeCpuMs(upstreamPid);
  const result = await run();
  const responses = result.ok + result.non2xx + result.warmupResponses;
  const perRequest = (ms: number) => (responses === 0 ? Number.NaN : (ms * 1000) / responses);
  return {
    ...result,
    upstreamCpuUsPerRequest: perRequest(processTreeCpuMs(upstreamPid) - upstreamBefore),
    ...(gatewayPid === undefined
      ? {}
      : { gatewayCpuUsPerRequest: perRequest(processTreeCpuMs(gatewayPid) - gatewayBefore) }),
  };
}

/** The round with the median throughput (max scenarios) or the median p50 (rate scenarios). */
function medianRound(results: readonly MeasuredResult[], kind: Scenario['kind']): MeasuredResult {
  const key = (result: LoadResult) => (kind === 'max' ? result.throughput : result.latency.p50);
  const sorted = [...results].sort((left, right) => key(left) - key(right));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** The name of the bare-proxy target: compared with direct like a gateway, but no target applies to it. */
const bareProxy = 'bare-proxy';

function compare(outcomes: Record<string, Outcome>, gateway: string): Comparison | undefined {
  const direct = outcomes.direct;
  const own = outcomes[gateway];
  if (direct === undefined || own === undefined || !('result' in direct) || !('result' in own)) return undefined;
  const portkey = outcomes.portkey;
  const comparison: Comparison = {
    target: gateway,
    addedP50Ms: own.result.latency.p50 - direct.result.latency.p50,
    addedP99Ms: own.result.latency.p99 - direct.result.latency.p99,
    throughputVsDirect: own.result.throughput / direct.result.throughput,
  };
  if (portkey !== undefined && 'result' in portkey && portkey.result.throughput > 0) {
    comparison.throughputVsPortkey = own.result.throughput / portkey.result.throughput;
  }
  const bare = outcomes[bareProxy];
  if (gateway !== bareProxy && bare !== undefined && 'result' in bare && bare.result.throughput > 0) {
    comparison.throughputVsBareProxy = own.result.throughput / bare.result.throughput;
  }
  return comparison;
}

function checkTargets(reports: readonly ScenarioReport[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const report of reports) {
    for (const comparison of report.comparisons) {
      if (comparison.target === bareProxy) continue;
      const add = (check: string, value: number, limit: number, pass: boolean) =>
        checks.push({ check: `${report.scenario.id}: ${check}`, target: comparison.target, value, limit, pass });
      if (report.scenario.kind === 'rate') {
        add('added p50 ms ≤ 0.3', comparison.addedP50Ms, 0.3, comparison.addedP50Ms <= 0.3);
        add('added p99 ms ≤ 2', comparison.addedP99Ms, 2, comparison.addedP99Ms <= 2);
      } else {
        add('throughput ≥ 0.5 × direct', comparison.throughputVsDirect, 0.5, comparison.throughputVsDirect >= 0.5);
        if (comparison.throughputVsPortkey !== undefined) {
          add('throughput ≥ 10 × Portkey', comparison.throughputVsPortkey, 10, comparison.throughputVsPortkey >= 10);
        }
      }
    }
  }
  return checks;
}

const fixed = (value: number | undefined, digits: number) =>
  value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits);
const signed = (value: number | undefined, digits: number) =>
  value === undefined || !Number.isFinite(value) ? '–' : `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;

/** ` (429 × 40)`: the non-2xx statuses, if any. */
function describeStatuses(result: LoadResult): string {
  const failed = Object.entries(result.statuses).filter(([status]) => !status.startsWith('2'));
  return failed.length === 0 ? '' : ` (${failed.map(([status, count]) => `${status} × ${count}`).join(', ')})`;
}

/** The results as one Markdown table (one row per scenario and target). */
export function formatResultTable(reports: readonly ScenarioReport[]): string {
  const lines = [
    '| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | × direct | × bare proxy | × Portkey | gateway CPU µs/req | upstream CPU µs/req | errors |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const report of reports) {
    for (const [target, outcome] of Object.entries(report.outcomes)) {
      if ('skipped' in outcome) {
        lines.push(
          `| ${report.scenario.id} | ${target} | – | – | – | – | – | – | – | – | – | – | ${outcome.skipped} |`,
        );
        continue;
      }
      const { result } = outcome;
      const comparison = report.comparisons.find((candidate) => candidate.target === target);
      const errors = result.non2xx + result.errors + (result.incompleteStreams ?? 0);
      lines.push(
        `| ${report.scenario.id} | ${target} | ${fixed(result.throughput, 0)} | ${fixed(result.latency.p50, 3)} | ` +
          `${fixed(result.latency.p99, 3)} | ${signed(comparison?.addedP50Ms, 3)} | ${signed(comparison?.addedP99Ms, 3)} | ` +
          `${fixed(comparison?.throughputVsDirect, 2)} | ${fixed(comparison?.throughputVsBareProxy, 2)} | ` +
          `${fixed(comparison?.throughputVsPortkey, 1)} | ` +
          `${fixed(result.gatewayCpuUsPerRequest, 0)} | ${fixed(result.upstreamCpuUsPerRequest, 0)} | ${errors}` +
          `${result.saturated === true ? ', fell behind the rate' : ''}${describeStatuses(result)} |`,
      );
    }
  }
  return lines.join('\n');
}

/** Runs the whole benchmark; returns the report written to JSON. */
export async function runGatewayBench(options: GatewayBenchOptions): Promise<Record<string, unknown>> {
  const startedAt = new Date();
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    loadAverageAtStart: loadavg(),
  };
  const processes = new BenchProcesses();
  const tollgateNodeArgs = [
    ...(options.nodeArgs ?? []),
    ...(options.cpuProfDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`]),
  ];
  const unavailable: Record<string, string> = {};
  const reports: ScenarioReport[] = [];
  let rss: StreamRssResult[] = [];
  try {
    log('starting the minimal upstream');
    const upstream = await startUpstream(processes);
    const targets: BenchTarget[] = [upstream.target];
    if (!options.skipBareProxy) {
      log('starting the bare proxy');
      targets.push(await startBareProxyTarget(processes, upstream.port));
    }
    for (const workers of options.workers) {
      log(`starting Tollgate with ${workers} worker(s)`);
      try {
        targets.push(
          await startTollgate(processes, upstream.baseUrl, {
            workers,
            ...(tollgateNodeArgs.length === 0 ? {} : { nodeArgs: tollgateNodeArgs }),
          }),
        );
      } catch (error: unknown) {
        const name = tollgateTargetName(workers);
        unavailable[name] = error instanceof Error ? error.message : String(error);
        log(`${name} unavailable: ${unavailable[name]}`);
      }
    }
    if (!options.skipPortkey) {
      log('starting Portkey (installs itself on first use)');
      const portkey = await startPortkey(processes, upstream.baseUrl);
      if ('target' in portkey) targets.push(portkey.target);
      else {
        unavailable.portkey = portkey.unavailable;
        log(`portkey unavailable: ${portkey.unavailable}`);
      }
    }

    // A target that answers wrongly is measured for nothing: check each mode once and skip the broken ones.
    const brokenModes = new Map<string, { whole?: string; stream?: string }>();
    for (const target of targets) {
      const problems = await checkTarget(target);
      const broken = {
        whole: problems.filter((problem) => problem.startsWith('whole')).join('; ') || undefined,
        stream: problems.filter((problem) => problem.startsWith('stream')).join('; ') || undefined,
      };
      brokenModes.set(target.name, broken);
      if (problems.length > 0) log(`${target.name}: check failed: ${problems.join('; ')}`);
    }
    const portkeyStreams = brokenModes.get('portkey')?.stream === undefined;
    if (!portkeyStreams) unavailable['portkey streaming'] = brokenModes.get('portkey')?.stream ?? '';

    const scenarios = scenariosOf(options).filter(
      (scenario) =>
        options.scenarios === undefined || options.scenarios.some((prefix) => scenario.id.startsWith(prefix)),
    );
    const rounds = new Map<string, Map<string, MeasuredResult[]>>();
    const failures = new Map<string, string>();
    for (let round = 1; round <= options.rounds; round += 1) {
      for (const scenario of scenarios) {
        for (const target of targets) {
          const key = `${scenario.id}/${target.name}`;
          if (failures.has(key)) continue;
          const broken = brokenModes.get(target.name)?.[scenario.stream ? 'stream' : 'whole'];
          if (broken !== undefined) {
            failures.set(key, `answers wrongly: ${broken.slice(0, 160)}`);
            continue;
          }
          log(`${scenario.id} → ${target.name}${options.rounds > 1 ? ` (round ${round})` : ''}`);
          try {
            const result = await measureCpu(target, upstream.process.pid, () =>
              runLoadInChild(loadSpecOf(scenario, target, options)),
            );
            const byTarget = rounds.get(scenario.id) ?? new Map<string, MeasuredResult[]>();
            byTarget.set(target.name, [...(byTarget.get(target.name) ?? []), result]);
            rounds.set(scenario.id, byTarget);
            log(
              `  ${fixed(result.throughput, 0)} req/s, p50 ${fixed(result.latency.p50, 3)} ms, ` +
                `p99 ${fixed(result.latency.p99, 3)} ms, non-2xx ${result.non2xx}, errors ${result.errors}`,
            );
          } catch (error: unknown) {
            failures.set(key, error instanceof Error ? error.message.slice(0, 300) : String(error));
            log(`  failed: ${error instanceof Error ? error.message : String(error)}`);
          }
          // Let closed connections drain before the next target is loaded.
          await sleep(500);
        }
      }
    }
    for (const scenario of scenarios) {
      const report: ScenarioReport = { scenario, outcomes: {}, comparisons: [] };
      for (const target of targets) {
        const results = rounds.get(scenario.id)?.get(target.name) ?? [];
        const failure = failures.get(`${scenario.id}/${target.name}`);
        if (results.length === 0) {
          report.outcomes[target.name] = { skipped: failure ?? 'not run' };
          continue;
        }
        report.outcomes[target.name] = {
          result: medianRound(results, scenario.kind),
          ...(results.length > 1 ? { rounds: results } : {}),
        };
      }
      for (const target of targets) {
        if (target.name === 'direct' || target.name === 'portkey') continue;
        const comparison = compare(report.outcomes, target.name);
        if (comparison !== undefined) report.comparisons.push(comparison);
      }
      reports.push(report);
    }

    if (!options.skipRss) {
      // The memory scenario starts its own slow upstream and fresh gateways: stop these first so they use no CPU.
      await processes.stopAll();
      log(`rss: ${options.rssStreams} concurrent slow streams`);
      rss = await runStreamRssScenario(
        processes,
        {
          ...defaultStreamRssOptions,
          streams: options.rssStreams,
          workers: options.workers.filter((workers) => unavailable[tollgateTargetName(workers)] === undefined),
          // Portkey 1.15.2 fails every streamed request on Node (see docs/benchmarks.md): nothing to hold open then.
          portkey: !options.skipPortkey && unavailable.portkey === undefined && portkeyStreams,
          bareProxy: !options.skipBareProxy,
          ...(tollgateNodeArgs === undefined ? {} : { tollgateNodeArgs }),
        },
        log,
      );
    }
  } finally {
    await processes.stopAll();
  }

  const checks = checkTargets(reports);
  const report = {
    benchmark: 'gateway',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { ...machine, loadAverageAtEnd: loadavg() },
    options,
    notes: [
      'Load generator, upstream and gateway share the same machine (2 cores on the reference machine).',
      'Latency of a streamed request is the full-stream time (request sent → end of the response after [DONE]).',
      'max scenarios: autocannon, closed loop; rate scenarios: open-loop constant-rate client on an undici pool.',
    ],
    unavailable,
    scenarios: reports,
    targetChecks: checks,
    rss,
  };
  const table = formatResultTable(reports);
  process.stdout.write(`\n${table}\n`);
  if (rss.length > 0) process.stdout.write(`\n${formatStreamRssTable(rss)}\n`);
  if (checks.length > 0) {
    process.stdout.write('\n| check | target | value | pass |\n| --- | --- | ---: | --- |\n');
    for (const check of checks) {
      process.stdout.write(
        `| ${check.check} | ${check.target} | ${fixed(check.value, 3)} | ${check.pass ? 'yes' : 'NO'} |\n`,
      );
    }
  }
  for (const [name, reason] of Object.entries(unavailable)) {
    process.stdout.write(`\n${name} unavailable: ${reason.replace(/\s+/g, ' ').slice(0, 600)}\n`);
  }
  process.stdout.write('\n');
  await writeBenchResult('gateway', options.out, report, startedAt);
  return report;
}

async function main(): Promise<void> {
  const flags = new Command('gateway-bench')
    .description('Direct vs Tollgate vs Portkey against a 0 ms upstream; writes bench/results/gateway-<date>.json.')
    .option('--duration <s>', 'measured seconds per run', positiveNumber, 10)
    .option('--warmup <s>', 'warm-up seconds before each run', positiveNumber, 2)
    .option('--connections <list>', 'connections of the max-throughput runs', positiveIntegerList, [32, 256])
    .option('--rate <n>', 'offered load of the latency runs, requests/s', positiveNumber, 1000)
    .option('--workers <list>', 'Tollgate server.workers, one target per value (e.g. 1,2)', positiveIntegerList, [1])
    .option('--skip-portkey', "leave Portkey's gateway out")
    .option('--skip-bare-proxy', 'leave the bare proxy (a forward-only Node proxy: the floor) out')
    .option('--skip-rss', 'leave the concurrent-streams memory scenario out')
    .option('--rss-streams <n>', 'concurrent streams of the memory scenario', positiveNumber, 2000)
    .option('--rounds <n>', 'repeat every scenario n times, interleaved; report the median round', positiveNumber, 1)
    .option('--cpu-prof <dir>', 'write CPU profiles of the Tollgate processes to dir (node --cpu-prof)')
    .option(
      '--node-args <flags>',
      'extra node flags of the Tollgate processes, space-separated (experiments)',
      spaceSeparatedFlags,
    )
    .option('--quick', 'smoke run: 2 s runs, 0.5 s warm-up, 200 streams')
    .option('--scenarios <list>', 'only scenarios whose id starts with one of these, e.g. max,rate-1000-whole')
    .option('--out <path>', 'JSON output path')
    .parse()
    .opts<{
      duration: number;
      warmup: number;
      connections: number[];
      rate: number;
      workers: number[];
      skipPortkey?: boolean;
      skipBareProxy?: boolean;
      skipRss?: boolean;
      rssStreams: number;
      quick?: boolean;
      rounds: number;
      cpuProf?: string;
      nodeArgs?: string[];
      scenarios?: string;
      out?: string;
    }>();
  const options: GatewayBenchOptions = {
    duration: flags.quick ? 2 : flags.duration,
    warmup: flags.quick ? 0.5 : flags.warmup,
    connections: flags.connections,
    rate: flags.rate,
    workers: flags.workers,
    skipPortkey: flags.skipPortkey === true,
    skipBareProxy: flags.skipBareProxy === true,
    skipRss: flags.skipRss === true,
    rssStreams: flags.quick ? 200 : Math.round(flags.rssStreams),
    rounds: Math.round(flags.rounds),
    ...(flags.cpuProf === undefined ? {} : { cpuProfDir: resolve(flags.cpuProf) }),
    ...(flags.nodeArgs === undefined ? {} : { nodeArgs: flags.nodeArgs }),
    ...(flags.scenarios === undefined ? {} : { scenarios: flags.scenarios.split(',').map((id) => id.trim()) }),
    ...(flags.out === undefined ? {} : { out: flags.out }),
  };
  await runGatewayBench(options);
}

main().catch((error: unknown) => {
  process.stderr.write(`gateway-bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
