/**
 * Issue 3's benchmark: gateway throughput with metering, rating and wallet reservation on vs off, side by side in
 * one run against the same minimal upstream (0 ms). "Off" is a gateway without a price book (requests are still
 * logged and counted); "on" prices every request with the issue's price book and reserves/settles it on a prepaid
 * wallet. Rounds are interleaved so drift on a shared machine hits both alike.
 *
 *   npm run build && node dist/bench/metering-bench.js [--duration 8] [--rounds 2] [--connections 32] [--cpu-prof DIR]
 */
import { Command } from 'commander';
import { BenchProcesses } from './bench-processes.js';
import { writeBenchResult } from './bench-results.js';
import { chatRequestBody, meteredConfig, startTollgate, startUpstream } from './bench-targets.js';
import { runLoadInChild } from './load.js';
import { cpuPerResponse, gatewayCpu } from './process-tree-stats.js';

async function main(): Promise<void> {
  const options = new Command()
    .option('--duration <s>', 'measured seconds per run', '8')
    .option('--rounds <n>', 'interleaved rounds', '2')
    .option('--connections <n>', 'keep-alive connections', '32')
    .option('--cpu-prof <dir>', 'write CPU profiles of both gateways to dir (node --cpu-prof)')
    .option('--out <path>', 'JSON output path')
    .parse()
    .opts<{ duration: string; rounds: string; connections: string; cpuProf?: string; out?: string }>();
  const nodeArgs = options.cpuProf === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProf}`];
  const processes = new BenchProcesses();
  try {
    const upstream = await startUpstream(processes, {});
    const off = await startTollgate(processes, upstream.baseUrl, { name: 'metering-off', nodeArgs });
    const on = await startTollgate(processes, upstream.baseUrl, {
      name: 'metering-on',
      ...meteredConfig,
      nodeArgs,
    });
    /** Per target and kind, one entry per round: throughput and the gateway's CPU per response. */
    const results: Record<
      string,
      Record<'whole' | 'stream', { rate: number; cpuUs: number; mainCpuUs: number; perCommit: number }[]>
    > = {
      'metering-off': { whole: [], stream: [] },
      'metering-on': { whole: [], stream: [] },
    };
    for (let round = 0; round < Number(options.rounds); round++) {
      for (const stream of [false, true]) {
        for (const target of round % 2 === 0 ? [off, on] : [on, off]) {
          const pid = target.process!.pid;
          const commitsBefore = await groupCommitCounters(target.metricsUrl!);
          const cpuBefore = gatewayCpu(pid);
          const result = await runLoadInChild({
            mode: 'max',
            url: target.chatUrl,
            headers: target.headers,
            body: chatRequestBody(stream),
            connections: Number(options.connections),
            durationSeconds: Number(options.duration),
            warmupSeconds: 2,
          });
          if (result.non2xx > 0 || result.errors > 0) {
            throw new Error(`${target.name}: ${result.non2xx} non-2xx, ${result.errors} errors`);
          }
          const responses = result.ok + result.warmupResponses;
          const { cpuUs, mainCpuUs } = cpuPerResponse(cpuBefore, gatewayCpu(pid), responses);
          const commitsAfter = await groupCommitCounters(target.metricsUrl!);
          const perCommit =
            (commitsAfter.committed - commitsBefore.committed) /
            Math.max(1, commitsAfter.transactions - commitsBefore.transactions);
          results[target.name]![stream ? 'stream' : 'whole'].push({
            rate: result.throughput,
            cpuUs,
            mainCpuUs,
            perCommit,
          });
          process.stdout.write(
            `round ${round + 1} ${stream ? 'stream' : 'whole'} ${target.name}: ${result.throughput.toFixed(0)} req/s, ` +
              `${cpuUs.toFixed(0)} µs CPU/req (${mainCpuUs.toFixed(0)} main thread), ${perCommit.toFixed(1)} settlements/commit\n`,
          );
        }
      }
    }
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    const median = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      const middle = Math.floor(sorted.length / 2);
      return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
    };
    const rows = (['whole', 'stream'] as const).map((kind) => {
      const offRuns = results['metering-off']![kind];
      const onRuns = results['metering-on']![kind];
      const offRate = mean(offRuns.map((run) => run.rate));
      const onRate = mean(onRuns.map((run) => run.rate));
      // Each round loads both gateways back to back: the loss within a round is the least disturbed by drift.
      const pairedLosses = offRuns.map((run, index) => 1 - onRuns[index]!.rate / run.rate);
      return {
        kind,
        offRate,
        onRate,
        loss: 1 - onRate / offRate,
        medianPairedLoss: median(pairedLosses),
        lowestPairedLoss: Math.min(...pairedLosses),
        highestPairedLoss: Math.max(...pairedLosses),
        offCpuUs: mean(offRuns.map((run) => run.cpuUs)),
        onCpuUs: mean(onRuns.map((run) => run.cpuUs)),
        offMainCpuUs: mean(offRuns.map((run) => run.mainCpuUs)),
        onMainCpuUs: mean(onRuns.map((run) => run.mainCpuUs)),
        offPerCommit: mean(offRuns.map((run) => run.perCommit)),
        onPerCommit: mean(onRuns.map((run) => run.perCommit)),
      };
    });
    process.stdout.write(
      '\n| request | metering off req/s | metering on req/s | loss (target ≤ 10%) | median loss within a round | ' +
        'lowest … highest within a round | CPU µs/req off → on | of which main thread | other threads | ' +
        'settlements per commit off → on |\n' +
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n',
    );
    for (const row of rows) {
      process.stdout.write(
        `| ${row.kind} | ${row.offRate.toFixed(0)} | ${row.onRate.toFixed(0)} | ${(row.loss * 100).toFixed(1)}% | ` +
          `${(row.medianPairedLoss * 100).toFixed(1)}% | ` +
          `${(row.lowestPairedLoss * 100).toFixed(1)}% … ${(row.highestPairedLoss * 100).toFixed(1)}% | ${row.offCpuUs.toFixed(0)} → ${row.onCpuUs.toFixed(0)} | ` +
          `${row.offMainCpuUs.toFixed(0)} → ${row.onMainCpuUs.toFixed(0)} | ` +
          `${(row.offCpuUs - row.offMainCpuUs).toFixed(0)} → ${(row.onCpuUs - row.onMainCpuUs).toFixed(0)} | ` +
          `${row.offPerCommit.toFixed(1)} → ${row.onPerCommit.toFixed(1)} |\n`,
      );
    }
    process.stdout.write('\n');
    await writeBenchResult('metering', options.out, { benchmark: 'metering on vs off', options, results, rows });
  } finally {
    await processes.stopAll();
  }
}

/** The settlement writer's counters: settlements committed and transactions, from the gateway's `/metrics`. */
async function groupCommitCounters(metricsUrl: string): Promise<{ committed: number; transactions: number }> {
  const text = await (await fetch(metricsUrl)).text();
  const read = (name: string): number => {
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
    if (line === undefined) throw new Error(`${metricsUrl} has no ${name}`);
    return Number(line.slice(name.length + 1));
  };
  return {
    committed: read('tollgate_request_log_committed_total'),
    transactions: read('tollgate_request_log_transactions_total'),
  };
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
