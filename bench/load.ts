/**
 * The load generator. It always runs in a child process of its own (`runLoadInChild`), so it never shares an event
 * loop with the servers it measures; `node dist/bench/load.js '<LoadSpec JSON>'` prints one `LoadResult` JSON line.
 *
 * Two modes:
 * - `max`: autocannon, N keep-alive connections each sending its next request as soon as the previous answer ended
 *   (closed loop), for the highest throughput the target sustains. Latencies are taken from autocannon's per-response
 *   event in fractional ms (autocannon's own histogram keeps whole ms only, too coarse for sub-ms differences).
 * - `rate`: a constant-rate (open-loop) client on an undici pool: request i leaves at `start + i / rate` whether or not
 *   earlier ones have finished, so latency is measured at a fixed offered load rather than at saturation.
 *
 * For a streamed request the latency is the full-stream time, from sending the request to the end of the response
 * (after `data: [DONE]`), in both modes. The `rate` mode also records time to the response headers.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { Pool } from 'undici';

/** What every load run sends. */
interface LoadTarget {
  /** Full URL of the endpoint, e.g. `http://127.0.0.1:8080/v1/chat/completions`. */
  url: string;
  /** Request headers (the body is JSON; `content-type` is added). */
  headers: Record<string, string>;
  /** The JSON request body, sent unchanged on every request. */
  body: string;
  /** Measured time, s. */
  durationSeconds: number;
  /** Load sent first and thrown away (connections opened, JIT warm), s. Default 2 in the CLI. */
  warmupSeconds: number;
}

/** Closed-loop maximum throughput with autocannon. */
export interface MaxLoadSpec extends LoadTarget {
  mode: 'max';
  /** Concurrent keep-alive connections, each with one request in flight. */
  connections: number;
}

/** Open-loop constant offered rate. */
export interface RateLoadSpec extends LoadTarget {
  mode: 'rate';
  /** Offered load, requests per second. */
  rate: number;
  /** Most connections the client opens; requests beyond wait in the client's queue (and that wait counts). */
  connections: number;
}

/** One load run. */
export type LoadSpec = MaxLoadSpec | RateLoadSpec;

/** Latency percentiles of the successful (2xx) responses, ms. */
export interface LatencySummary {
  /** Number of samples. */
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** What one load run measured (warm-up excluded). */
export interface LoadResult {
  mode: LoadSpec['mode'];
  /** 2xx responses completed in the measured window. */
  ok: number;
  /** Responses with another status. */
  non2xx: number;
  /** Count of responses per HTTP status (measured window). */
  statuses: Record<string, number>;
  /** Connection errors and timeouts. */
  errors: number;
  /** Measured wall time, s. */
  elapsedSeconds: number;
  /** Responses (any status) received during the warm-up, to relate a server's CPU time to requests. */
  warmupResponses: number;
  /** `ok / elapsedSeconds`, requests per second. */
  throughput: number;
  /** Request to end of response, ms. */
  latency: LatencySummary;
  /** `rate` mode: request to response headers, ms. */
  headersLatency?: LatencySummary;
  /** `rate` mode: how late the client sent requests against the schedule (its own timer jitter), ms. */
  sendLag?: LatencySummary;
  /** `rate` mode: requests sent in the measured window per second (the offered load actually achieved). */
  sentRate?: number;
  /** `rate` mode: the target fell more than 2 s of requests behind, so the client stopped sending early. */
  saturated?: boolean;
  /** `rate` mode: status and start of the body of the first non-2xx response, or the first error. */
  firstFailure?: string;
  /** `rate` mode: streamed responses whose body did not end with `data: [DONE]`. */
  incompleteStreams?: number;
}

/** A growable list of float samples, cheap to append at tens of thousands per second. */
class SampleList {
  private values = new Float64Array(1 << 16);
  private length = 0;

  add(value: number): void {
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length] = value;
    this.length += 1;
  }

  get count(): number {
    return this.length;
  }

  summarize(): LatencySummary {
    return summarizeSamples(this.values.subarray(0, this.length));
  }
}

/** Nearest-rank percentiles of `samples` (sorted in place). Exported for tests. */
export function summarizeSamples(samples: Float64Array): LatencySummary {
  const count = samples.length;
  if (count === 0)
    return {
      count: 0,
      mean: Number.NaN,
      p50: Number.NaN,
      p90: Number.NaN,
      p99: Number.NaN,
      p999: Number.NaN,
      max: Number.NaN,
    };
  samples.sort();
  let sum = 0;
  for (const value of samples) sum += value;
  // The epsilon keeps binary rounding (99.9 / 100 * 1000 = 999.0000000000001) from skipping a rank.
  const rank = (percent: number) =>
    samples[Math.min(count - 1, Math.max(0, Math.ceil((percent * count) / 100 - 1e-9) - 1))]!;
  return {
    count,
    mean: sum / count,
    p50: rank(50),
    p90: rank(90),
    p99: rank(99),
    p999: rank(99.9),
    max: samples[count - 1]!,
  };
}

function runAutocannon(
  spec: MaxLoadSpec,
  durationSeconds: number,
  onResponse?: (statusCode: number, responseTime: number) => void,
): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: spec.url,
        method: 'POST',
        headers: { 'content-type': 'application/json', ...spec.headers },
        body: spec.body,
        connections: spec.connections,
        duration: durationSeconds,
        timeout: 30,
      },
      (error: unknown, result) => {
        if (error) reject(error instanceof Error ? error : new Error(String(error)));
        else resolve(result);
      },
    );
    if (onResponse !== undefined) {
      instance.on('response', (_client, statusCode, _bytes, responseTime) => onResponse(statusCode, responseTime));
    }
  });
}

async function runMaxLoad(spec: MaxLoadSpec): Promise<LoadResult> {
  let warmupResponses = 0;
  if (spec.warmupSeconds > 0) {
    await runAutocannon(spec, spec.warmupSeconds, () => {
      warmupResponses += 1;
    });
  }
  const latencies = new SampleList();
  const statuses: Record<string, number> = {};
  const result = await runAutocannon(spec, spec.durationSeconds, (statusCode, responseTime) => {
    statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
    if (statusCode >= 200 && statusCode < 300) latencies.add(responseTime);
  });
  return {
    mode: 'max',
    ok: latencies.count,
    non2xx: result.non2xx,
    statuses,
    errors: result.errors,
    elapsedSeconds: result.duration,
    warmupResponses,
    throughput: latencies.count / result.duration,
    latency: latencies.summarize(),
  };
}

interface RateWindow {
  latencies: SampleList;
  headersLatencies: SampleList;
  sendLags: SampleList;
  sent: number;
  ok: number;
  non2xx: number;
  statuses: Record<string, number>;
  errors: number;
  incompleteStreams: number;
  elapsedSeconds: number;
  firstFailure?: string;
  saturated: boolean;
}

const doneMarker = Buffer.from('data: [DONE]');

async function runRateWindow(pool: Pool, spec: RateLoadSpec, durationSeconds: number): Promise<RateWindow> {
  const url = new URL(spec.url);
  const path = `${url.pathname}${url.search}`;
  const headers = { 'content-type': 'application/json', ...spec.headers };
  const streamed = spec.body.includes('"stream":true');
  const window: RateWindow = {
    latencies: new SampleList(),
    headersLatencies: new SampleList(),
    sendLags: new SampleList(),
    sent: 0,
    ok: 0,
    non2xx: 0,
    statuses: {},
    errors: 0,
    incompleteStreams: 0,
    elapsedSeconds: 0,
    saturated: false,
  };
  const intervalMs = 1000 / spec.rate;
  const total = Math.round(durationSeconds * spec.rate);
  const inFlight = new Set<Promise<void>>();
  // A target that cannot keep up would otherwise queue the rest of the run in the client and drain it for minutes.
  const maxBacklog = Math.max(100, spec.rate * 2);

  const send = async (scheduledAt: number) => {
    const sentAt = performance.now();
    window.sendLags.add(sentAt - scheduledAt);
    try {
      const response = await pool.request({ path, method: 'POST', headers, body: spec.body });
      const headersAt = performance.now();
      // The last two parts are enough to find `data: [DONE]` even when it is split across two reads.
      let previous: Buffer = Buffer.alloc(0);
      let last: Buffer = Buffer.alloc(0);
      for await (const part of response.body) {
        previous = last;
        last = part as Buffer;
      }
      const endedAt = performance.now();
      window.statuses[response.statusCode] = (window.statuses[response.statusCode] ?? 0) + 1;
      if (response.statusCode < 200 || response.statusCode >= 300) {
        window.firstFailure ??= `${response.statusCode}: ${Buffer.concat([previous, last]).toString('utf8').slice(0, 300)}`;
        window.non2xx += 1;
        return;
      }
      if (streamed && Buffer.concat([previous, last]).lastIndexOf(doneMarker) === -1) window.incompleteStreams += 1;
      window.ok += 1;
      window.latencies.add(endedAt - sentAt);
      window.headersLatencies.add(headersAt - sentAt);
    } catch (error: unknown) {
      // A failed request is counted, not thrown: the run goes on and the error count is part of the result.
      window.firstFailure ??= error instanceof Error ? error.message : String(error);
      window.errors += 1;
    }
  };

  const start = performance.now();
  await new Promise<void>((resolve) => {
    // setTimeout(1) rather than a busy loop: a spinning client would steal a core from the servers being measured.
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / intervalMs) + 1);
      if (inFlight.size > maxBacklog) {
        window.saturated = true;
        resolve();
        return;
      }
      while (window.sent < due) {
        const request = send(start + window.sent * intervalMs);
        inFlight.add(request);
        void request.finally(() => inFlight.delete(request));
        window.sent += 1;
      }
      if (window.sent >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(inFlight);
  window.elapsedSeconds = (performance.now() - start) / 1000;
  return window;
}

async function runRateLoad(spec: RateLoadSpec): Promise<LoadResult> {
  const url = new URL(spec.url);
  const pool = new Pool(url.origin, {
    connections: spec.connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  try {
    const warmup = spec.warmupSeconds > 0 ? await runRateWindow(pool, spec, spec.warmupSeconds) : undefined;
    const window = await runRateWindow(pool, spec, spec.durationSeconds);
    return {
      mode: 'rate',
      ok: window.ok,
      non2xx: window.non2xx,
      statuses: window.statuses,
      errors: window.errors,
      elapsedSeconds: window.elapsedSeconds,
      warmupResponses: warmup === undefined ? 0 : warmup.ok + warmup.non2xx,
      throughput: window.ok / window.elapsedSeconds,
      latency: window.latencies.summarize(),
      headersLatency: window.headersLatencies.summarize(),
      sendLag: window.sendLags.summarize(),
      // A saturated run stopped sending early: its rate is over the time it ran, otherwise over the schedule.
      sentRate: window.sent / (window.saturated ? window.elapsedSeconds : spec.durationSeconds),
      saturated: window.saturated,
      incompleteStreams: window.incompleteStreams,
      ...(window.firstFailure === undefined ? {} : { firstFailure: window.firstFailure }),
    };
  } finally {
    await pool.destroy();
  }
}

/** Runs one load in this process. Prefer `runLoadInChild` from an orchestrator. */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  switch (spec.mode) {
    case 'max':
      return runMaxLoad(spec);
    case 'rate':
      return runRateLoad(spec);
    default:
      return assertNever(spec);
  }
}

function assertNever(value: never): never {
  throw new Error(`Unexpected load spec: ${JSON.stringify(value)}`);
}

const loadScript = join(dirname(fileURLToPath(import.meta.url)), 'load.js');

/** Runs one load in a fresh child process (its own event loop and core) and returns what it measured. */
export function runLoadInChild(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [loadScript, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    child.once('error', reject);
    child.once('close', (code) => {
      const lastLine = stdout.trim().split('\n').at(-1);
      if (code !== 0 || lastLine === undefined || lastLine === '') {
        reject(new Error(`load generator exited with ${String(code)}: ${stderr.trim().slice(-2000)}`));
        return;
      }
      try {
        resolve(JSON.parse(lastLine) as LoadResult);
      } catch (error: unknown) {
        reject(new Error(`load generator printed no result: ${String(error)}; ${stdout.slice(-500)}`));
      }
    });
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const specText = process.argv[2];
  if (specText === undefined) {
    process.stderr.write("usage: node dist/bench/load.js '<LoadSpec JSON>'\n");
    process.exit(2);
  }
  runLoad(JSON.parse(specText) as LoadSpec).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      process.stderr.write(`load: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
