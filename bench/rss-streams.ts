/**
 * Memory held per open stream: N concurrent slow streams (the upstream sends one event every `chunkDelayMs`) are held
 * open through a gateway while the resident memory (`VmRSS`, summed over the gateway's process tree) is sampled.
 *
 * Alone: `node dist/bench/rss-streams.js [--streams 2000] [--workers 1,2] [--skip-portkey]` (after `npm run build`).
 * `gateway-bench` calls `runStreamRssScenario` at the end of a full run.
 */
import { setMaxListeners } from 'node:events';
import { closeSync, mkdirSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { Pool } from 'undici';
import { BenchProcesses } from './bench-processes.js';
import {
  type BenchTarget,
  chatRequestBody,
  type StartedUpstream,
  startBareProxyTarget,
  startPortkey,
  startTollgate,
  startUpstream,
} from './bench-targets.js';
import { positiveInteger, positiveIntegerList, spaceSeparatedFlags, wholeNumber } from './cli-numbers.js';
import { processTreeCpuMs, processTreeRss } from './process-tree-stats.js';

/** How the streams are opened and held. */
export interface StreamRssOptions {
  /** Concurrent streams. Default 2000. */
  streams: number;
  /** Time between two events of one stream, ms. Default 100. */
  chunkDelayMs: number;
  /** How long RSS is sampled once every stream is open, s. Default 5. */
  sampleSeconds: number;
  /**
   * How long the streams run once all are open before the sampling, s: older streams have relayed more events (a
   * stream's state that grows with its events shows). Default 0.
   */
  holdSeconds: number;
  /** Streams opened per ramp step (every 100 ms), so the listen backlog does not overflow. Default 250. */
  rampStep: number;
  /**
   * Where the gateway writes its heap snapshots (`node --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=DIR`): one before
   * the streams open and one after the sampling, for `heap-snapshot-diff`. Unset: no snapshots.
   */
  heapSnapshotDir?: string;
}

/** The defaults of `StreamRssOptions`. */
export const defaultStreamRssOptions: StreamRssOptions = {
  streams: 2_000,
  chunkDelayMs: 100,
  sampleSeconds: 5,
  holdSeconds: 0,
  rampStep: 250,
};

/** What one gateway held. Memory in MiB. */
export interface StreamRssResult {
  target: string;
  /** Streams asked for. */
  streams: number;
  /** Streams whose response headers arrived with status 200. */
  opened: number;
  /** Streams that failed or answered another status before the sampling ended. */
  failed: number;
  /** Streams still open at the end of sampling (should equal `streams`). */
  openAtEnd: number;
  /** SSE events received per second while sampling (`streams * 1000 / chunkDelayMs` when nothing buffers). */
  eventsPerSecond: number;
  /** CPU the gateway's process tree used while sampling, % of one core. */
  cpuPercent: number;
  /** That CPU per event received while sampling, µs: what relaying one event of a slow stream costs. */
  cpuUsPerEvent: number;
  /** Gateway tree RSS before the streams, MiB. */
  idleRssMiB: number;
  /** Highest gateway tree RSS while every stream was open, MiB. */
  heldRssMiB: number;
  /** `(held - idle) / streams open when the RSS was highest`, KiB per stream. */
  perStreamKiB: number;
  /** Processes summed (1 + workers). */
  processes: number;
  /** The upstream's RSS before and while holding the same streams, MiB (reference). */
  upstreamIdleRssMiB: number;
  upstreamHeldRssMiB: number;
  /** Why the numbers may be off, if anything went wrong. */
  problems: string[];
}

const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;

/** Opens `options.streams` streams through `target`, samples RSS while they are open, then closes them. */
export async function measureStreamRss(
  target: BenchTarget,
  upstream: StartedUpstream,
  options: StreamRssOptions = defaultStreamRssOptions,
): Promise<StreamRssResult> {
  const problems: string[] = [];
  const gatewayPid = target.process?.pid ?? upstream.process.pid;
  const idle = processTreeRss(gatewayPid);
  const upstreamIdle = processTreeRss(upstream.process.pid);
  const url = new URL(target.chatUrl);
  const pool = new Pool(url.origin, {
    connections: options.streams,
    pipelining: 1,
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  const body = chatRequestBody(true);
  const headers = { 'content-type': 'application/json', ...target.headers };
  const abort = new AbortController();
  // Every stream listens on this one signal: thousands of listeners are intended.
  setMaxListeners(0, abort.signal);
  let opened = 0;
  let failed = 0;
  let open = 0;
  let events = 0;
  const statusProblems = new Map<string, number>();

  const snapshot = async () => {
    if (options.heapSnapshotDir !== undefined && target.process !== undefined) {
      await writeHeapSnapshots(gatewayPid, options.heapSnapshotDir);
    }
  };
  await snapshot();

  const openStream = async () => {
    try {
      const response = await pool.request({
        path: url.pathname,
        method: 'POST',
        headers,
        body,
        signal: abort.signal,
      });
      if (response.statusCode !== 200) {
        failed += 1;
        const key = `status ${response.statusCode}: ${(await response.body.text()).slice(0, 200)}`;
        statusProblems.set(key, (statusProblems.get(key) ?? 0) + 1);
        return;
      }
      opened += 1;
      open += 1;
      try {
        for await (const part of response.body) {
          // Counting `data:` occurrences is enough to see whether events flow; the content is checked elsewhere.
          const text = (part as Buffer).toString('latin1');
          let at = text.indexOf('data:');
          while (at !== -1) {
            events += 1;
            at = text.indexOf('data:', at + 5);
          }
        }
      } finally {
        open -= 1;
      }
    } catch (error: unknown) {
      if (abort.signal.aborted) return;
      failed += 1;
      const key = error instanceof Error ? error.message : String(error);
      statusProblems.set(key, (statusProblems.get(key) ?? 0) + 1);
    }
  };

  const running: Promise<void>[] = [];
  for (let started = 0; started < options.streams; started += options.rampStep) {
    for (let index = started; index < Math.min(options.streams, started + options.rampStep); index += 1) {
      running.push(openStream());
    }
    await sleep(100);
  }
  const openDeadline = Date.now() + 60_000;
  while (opened + failed < options.streams && Date.now() < openDeadline) await sleep(100);
  if (opened < options.streams) problems.push(`only ${opened} of ${options.streams} streams opened`);

  await sleep(options.holdSeconds * 1000);
  let heldKiB = 0;
  let openWhenHeld = 0;
  let upstreamHeldKiB = 0;
  let processes = 0;
  const eventsBefore = events;
  const cpuBefore = processTreeCpuMs(gatewayPid);
  const sampleStart = Date.now();
  while (Date.now() - sampleStart < options.sampleSeconds * 1000) {
    const held = processTreeRss(gatewayPid);
    if (held.totalKiB > heldKiB) {
      heldKiB = held.totalKiB;
      openWhenHeld = open;
    }
    processes = held.processes.length;
    upstreamHeldKiB = Math.max(upstreamHeldKiB, processTreeRss(upstream.process.pid).totalKiB);
    await sleep(250);
  }
  const sampledMs = Date.now() - sampleStart;
  const sampledEvents = events - eventsBefore;
  const eventsPerSecond = Math.round((sampledEvents * 1000) / sampledMs);
  const cpuMs = processTreeCpuMs(gatewayPid) - cpuBefore;
  const cpuPercent = Math.round((cpuMs / sampledMs) * 100);
  const openAtEnd = open;
  if (openAtEnd < opened) problems.push(`${opened - openAtEnd} streams ended before sampling finished`);
  for (const [problem, count] of statusProblems) problems.push(`${count} × ${problem}`);
  const gatewayErrors = (target.process?.output() ?? '')
    .split('\n')
    .filter((line) => /error|warn|exception/i.test(line));
  if (gatewayErrors.length > 0) problems.push(`gateway output: ${gatewayErrors.slice(-5).join(' ⏎ ').slice(-1000)}`);

  await snapshot();
  abort.abort();
  await pool.destroy();
  await Promise.allSettled(running);
  return {
    target: target.name,
    streams: options.streams,
    opened,
    failed,
    openAtEnd,
    eventsPerSecond,
    cpuPercent,
    cpuUsPerEvent: sampledEvents === 0 ? Number.NaN : Math.round(((cpuMs * 1000) / sampledEvents) * 10) / 10,
    idleRssMiB: mib(idle.totalKiB),
    heldRssMiB: mib(heldKiB),
    perStreamKiB: openWhenHeld === 0 ? Number.NaN : Math.round(((heldKiB - idle.totalKiB) / openWhenHeld) * 10) / 10,
    processes,
    upstreamIdleRssMiB: mib(upstreamIdle.totalKiB),
    upstreamHeldRssMiB: mib(upstreamHeldKiB),
    problems,
  };
}

/**
 * Asks every process of the tree rooted at `pid` for a heap snapshot (SIGUSR2, with `--heapsnapshot-signal`) and waits
 * until each has written its file into `dir` whole (the JSON closed): a process is frozen while it writes.
 */
async function writeHeapSnapshots(pid: number, dir: string): Promise<void> {
  const snapshots = () => readdirSync(dir).filter((name) => name.endsWith('.heapsnapshot'));
  const known = new Set(snapshots());
  const pids = processTreeRss(pid).processes.map((entry) => entry.pid);
  for (const each of pids) process.kill(each, 'SIGUSR2');
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    await sleep(500);
    const written = snapshots().filter((name) => !known.has(name));
    if (written.length >= pids.length && written.every((name) => endsWithClosedJson(path.join(dir, name)))) return;
  }
  throw new Error(`heap snapshots of ${pids.join(', ')} were not written to ${dir} within 300 s`);
}

function endsWithClosedJson(file: string): boolean {
  const size = statSync(file).size;
  if (size < 2) return false;
  const tail = Buffer.alloc(2);
  const handle = openSync(file, 'r');
  try {
    readSync(handle, tail, 0, 2, size - 2);
  } finally {
    closeSync(handle);
  }
  return tail.toString('latin1') === ']}';
}

/** Which gateways the stream-memory scenario measures. */
export interface StreamRssScenarioOptions extends StreamRssOptions {
  /** Tollgate worker counts to measure, one fresh Tollgate each. Default [1]. */
  workers: number[];
  /** Also measure Portkey's gateway. Default true. */
  portkey: boolean;
  /** Also measure the bare proxy (the floor of a Node gateway: what relaying costs without any work). */
  bareProxy: boolean;
  /** Extra `node` flags for Tollgate. Default none. */
  tollgateNodeArgs?: readonly string[];
}

/**
 * Starts a slow upstream (streams long enough to outlast ramp-up and sampling) and, one after the other, a fresh
 * direct run, each Tollgate and Portkey, and measures each holding `streams` streams.
 */
export async function runStreamRssScenario(
  processes: BenchProcesses,
  options: StreamRssScenarioOptions,
  log: (line: string) => void = () => undefined,
): Promise<StreamRssResult[]> {
  // Long enough to outlast the slowest opening allowed (60 s) plus the sampling: a stream must not end while sampled.
  const streamSeconds = 90 + options.holdSeconds + options.sampleSeconds + options.streams / options.rampStep / 10;
  const upstream = await startUpstream(processes, {
    chunkDelayMs: options.chunkDelayMs,
    chunks: Math.ceil((streamSeconds * 1000) / options.chunkDelayMs),
  });
  const results: StreamRssResult[] = [];
  try {
    const measure = async (start: () => Promise<BenchTarget | undefined>) => {
      let target: BenchTarget | undefined;
      try {
        target = await start();
        if (target === undefined) return;
        log(`rss: ${options.streams} streams through ${target.name} …`);
        const result = await measureStreamRss(target, upstream, options);
        log(
          `rss: ${target.name}: idle ${result.idleRssMiB} MiB, held ${result.heldRssMiB} MiB, ` +
            `${result.perStreamKiB} KiB/stream, upstream ${result.upstreamHeldRssMiB} MiB ${result.problems.join('; ')}`,
        );
        results.push(result);
      } catch (error: unknown) {
        log(`rss: failed: ${error instanceof Error ? error.message : String(error)}`);
      } finally {
        if (target?.process !== undefined) await processes.stop(target.process);
        // Let the upstream notice the closed streams before the next gateway is measured.
        await sleep(1_000);
      }
    };
    await measure(async () => upstream.target);
    if (options.bareProxy) await measure(() => startBareProxyTarget(processes, upstream.port, options.streams + 64));
    for (const workers of options.workers) {
      await measure(() =>
        startTollgate(processes, upstream.baseUrl, {
          workers,
          upstreamConnections: options.streams + 64,
          ...(options.tollgateNodeArgs === undefined ? {} : { nodeArgs: options.tollgateNodeArgs }),
        }),
      );
    }
    if (options.portkey) {
      await measure(async () => {
        const started = await startPortkey(processes, upstream.baseUrl);
        if ('unavailable' in started) {
          log(`rss: portkey unavailable: ${started.unavailable}`);
          return undefined;
        }
        return started.target;
      });
    }
  } finally {
    await processes.stop(upstream.process);
  }
  return results;
}

/** Formats results as a Markdown table. */
export function formatStreamRssTable(results: readonly StreamRssResult[]): string {
  const lines = [
    '| target | streams open | events/s | CPU % of a core | CPU µs/event | idle RSS MiB | RSS with streams MiB | KiB/stream | processes | upstream RSS MiB | problems |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const result of results) {
    lines.push(
      `| ${result.target} | ${result.openAtEnd}/${result.streams} | ${result.eventsPerSecond} | ${result.cpuPercent} | ` +
        `${result.cpuUsPerEvent} | ` +
        `${result.idleRssMiB} | ` +
        `${result.heldRssMiB} | ${result.perStreamKiB} | ${result.processes} | ${result.upstreamHeldRssMiB} | ` +
        `${result.problems.join('; ').slice(0, 200) || '–'} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const flags = new Command('rss-streams')
    .description('RSS of gateways holding many concurrent slow streams.')
    .option('--streams <n>', 'concurrent streams', positiveInteger, defaultStreamRssOptions.streams)
    .option('--chunk-delay-ms <ms>', 'time between events', positiveInteger, defaultStreamRssOptions.chunkDelayMs)
    .option('--sample-seconds <s>', 'sampling time', positiveInteger, defaultStreamRssOptions.sampleSeconds)
    .option(
      '--hold-seconds <s>',
      'time the streams run once all are open, before the sampling',
      wholeNumber,
      defaultStreamRssOptions.holdSeconds,
    )
    .option('--workers <list>', 'Tollgate worker counts', positiveIntegerList, [1])
    .option('--skip-portkey', 'do not measure Portkey')
    .option('--skip-bare-proxy', 'do not measure the bare proxy (a forward-only Node proxy: the floor)')
    .option('--cpu-prof <dir>', 'write CPU profiles of the Tollgate processes to dir (node --cpu-prof)')
    .option(
      '--node-args <flags>',
      'extra node flags of the Tollgate processes, space-separated (experiments)',
      spaceSeparatedFlags,
    )
    .option(
      '--heap-snapshots <dir>',
      'write heap snapshots of the Tollgate processes to dir, before the streams and while holding them, for ' +
        'heap-snapshot-diff (RSS is then not comparable with other runs: writing a snapshot takes memory)',
    )
    .parse()
    .opts<{
      streams: number;
      chunkDelayMs: number;
      sampleSeconds: number;
      holdSeconds: number;
      workers: number[];
      skipPortkey?: boolean;
      skipBareProxy?: boolean;
      cpuProf?: string;
      heapSnapshots?: string;
      nodeArgs?: string[];
    }>();
  const processes = new BenchProcesses();
  try {
    const { cpuProf, heapSnapshots, nodeArgs: extraNodeArgs, skipPortkey, skipBareProxy, ...options } = flags;
    const nodeArgs = [
      ...(extraNodeArgs ?? []),
      ...(cpuProf === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`]),
      ...(heapSnapshots === undefined ? [] : ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${heapSnapshots}`]),
    ];
    if (heapSnapshots !== undefined) mkdirSync(heapSnapshots, { recursive: true });
    const results = await runStreamRssScenario(
      processes,
      {
        ...defaultStreamRssOptions,
        ...options,
        portkey: skipPortkey !== true,
        bareProxy: skipBareProxy !== true,
        ...(nodeArgs.length === 0 ? {} : { tollgateNodeArgs: nodeArgs }),
        ...(heapSnapshots === undefined ? {} : { heapSnapshotDir: heapSnapshots }),
      },
      (line) => process.stderr.write(`${line}\n`),
    );
    process.stdout.write(`${formatStreamRssTable(results)}\n`);
  } finally {
    await processes.stopAll();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`rss-streams: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
