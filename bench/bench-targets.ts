/**
 * What a benchmark runs against: the minimal upstream itself (direct), Tollgate in front of it, and Portkey's gateway in
 * front of it. Each target is a base URL plus the headers a client must send; starting one waits until it answers.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { withServingHeap } from '../src/app/serving-heap.js';
import { type BenchProcess, type BenchProcesses, freePort, waitForHttp } from './bench-processes.js';

/** The repository root (this file runs from `dist/bench/`). */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** The public model name every target serves. */
export const benchModel = 'bench-model';

/** One thing the load generator can be pointed at. */
export interface BenchTarget {
  /** Label in tables and JSON: `direct`, `tollgate`, `tollgate-w2`, `portkey`. */
  name: string;
  /** URL of the chat completions endpoint. */
  chatUrl: string;
  /** Headers every request carries (authentication, routing). */
  headers: Record<string, string>;
  /** Process whose tree's memory is this target's (undefined for direct: the upstream is measured separately). */
  process: BenchProcess | undefined;
  /** Prometheus endpoint (Tollgate targets only). */
  metricsUrl?: string;
}

/** The minimal upstream, started as its own process. */
export interface StartedUpstream {
  process: BenchProcess;
  port: number;
  /** `http://127.0.0.1:PORT/v1`. */
  baseUrl: string;
  target: BenchTarget;
}

/** Options of the minimal upstream process (see `minimal-upstream.ts`). */
export interface UpstreamProcessOptions {
  /** Delay before answering, ms. Default 0. */
  latencyMs?: number;
  /** Delay between streamed events, ms. Default 0. */
  chunkDelayMs?: number;
  /** Content chunks per streamed answer. Default 20. */
  chunks?: number;
}

/** Starts `dist/bench/minimal-upstream.js` and waits for its port. */
export async function startUpstream(
  processes: BenchProcesses,
  options: UpstreamProcessOptions = {},
): Promise<StartedUpstream> {
  const { process: started, port } = await startListeningScript(processes, 'minimal-upstream', [
    '--latency-ms',
    String(options.latencyMs ?? 0),
    '--chunk-delay-ms',
    String(options.chunkDelayMs ?? 0),
    '--chunks',
    String(options.chunks ?? 20),
  ]);
  const baseUrl = `http://127.0.0.1:${port}/v1`;
  return {
    process: started,
    port,
    baseUrl,
    target: { name: 'direct', chatUrl: `${baseUrl}/chat/completions`, headers: {}, process: undefined },
  };
}

/** Starts `dist/bench/bare-proxy.js` in front of the upstream at `upstreamPort` (see `bare-proxy.ts`). */
export async function startBareProxyTarget(
  processes: BenchProcesses,
  upstreamPort: number,
  connections = 128,
): Promise<BenchTarget> {
  const { process: started, port } = await startListeningScript(processes, 'bare-proxy', [
    '--upstream',
    `http://127.0.0.1:${upstreamPort}`,
    '--connections',
    String(connections),
  ]);
  return {
    name: 'bare-proxy',
    chatUrl: `http://127.0.0.1:${port}/v1/chat/completions`,
    headers: {},
    process: started,
  };
}

/**
 * Runs `dist/bench/<script>.js --port 0 …args` and waits for the `{"event":"listening","port":N}` line it prints once
 * it accepts connections.
 */
async function startListeningScript(
  processes: BenchProcesses,
  script: string,
  args: readonly string[],
): Promise<{ process: BenchProcess; port: number }> {
  let announcePort: (port: number) => void = () => undefined;
  const announced = new Promise<number>((resolve) => {
    announcePort = resolve;
  });
  const started = processes.spawn({
    name: script,
    command: process.execPath,
    args: [join(repoRoot, `dist/bench/${script}.js`), '--port', '0', ...args],
    onLine: (line) => {
      if (!line.startsWith('{')) return;
      const message = JSON.parse(line) as { event?: string; port?: number };
      if (message.event === 'listening' && typeof message.port === 'number') announcePort(message.port);
    },
  });
  const port = await Promise.race([
    announced,
    started.exited.then((code) => {
      throw new Error(`${script} exited (${code}): ${started.output()}`);
    }),
  ]);
  return { process: started, port };
}

/**
 * Metering on: every request priced with issue 3's price book and reserved and settled on a prepaid wallet holding
 * plenty of credit (`npm run bench:metering`'s "on", `bench:ab --metered`).
 */
export const meteredConfig = {
  extraConfig: {
    pricing: {
      currency: 'CNY',
      versions: [
        {
          id: 'bench',
          effective_from: '2024-01-01T00:00:00Z',
          models: { [benchModel]: { input: '0.8', output: '2' } },
          modifiers: { batch: { discount: '0.5' } },
        },
      ],
    },
  },
  credit: '100000000',
} as const satisfies Pick<TollgateOptions, 'extraConfig' | 'credit'>;

/** How to run Tollgate for a benchmark. */
export interface TollgateOptions {
  /** Label of the target. Default `tollgate`, or `tollgate-wN` with N > 1 workers. */
  name?: string;
  /** `server.workers`. Default 1. */
  workers?: number;
  /** The upstream's `connections` (keep-alive pool size); omitted = Tollgate's default (128). */
  upstreamConnections?: number;
  /** `log.level`. Default `warn` (no per-request lines). */
  logLevel?: string;
  /** Time to wait for `GET /readyz` to answer 200, ms. Default 30000. */
  readyTimeoutMs?: number;
  /** Extra `node` flags, e.g. `--cpu-prof --cpu-prof-dir=DIR` (cluster workers inherit them). Default none. */
  nodeArgs?: readonly string[];
  /** Extra top-level configuration sections (e.g. `pricing`), merged into the generated file. Default none. */
  extraConfig?: Record<string, unknown>;
  /** Credit topped up on the bench tenant's wallet, currency units (needed when `pricing` is set). Default none. */
  credit?: string;
  /** The built checkout whose `dist/src/cli/main.js` runs (another revision, for an A/B). Default this one. */
  root?: string;
}

/** The label of a Tollgate target: `tollgate`, or `tollgate-wN` with N > 1 workers. */
export function tollgateTargetName(workers: number): string {
  return workers > 1 ? `tollgate-w${workers}` : 'tollgate';
}

/** Starts `node dist/src/cli/main.js serve` on a generated config, then creates a tenant and an API key. */
export async function startTollgate(
  processes: BenchProcesses,
  upstreamBaseUrl: string,
  options: TollgateOptions = {},
): Promise<BenchTarget> {
  const workers = options.workers ?? 1;
  const name = options.name ?? tollgateTargetName(workers);
  const dataDir = await mkdtemp(join(tmpdir(), 'tollgate-bench-'));
  const configPath = join(dataDir, 'tollgate.yaml');
  const config = {
    server: { workers },
    log: { level: options.logLevel ?? 'warn' },
    upstreams: [
      {
        name: 'bench',
        type: 'openai',
        base_url: upstreamBaseUrl,
        ...(options.upstreamConnections === undefined ? {} : { connections: options.upstreamConnections }),
      },
    ],
    models: [
      {
        name: benchModel,
        context_window: 32_768,
        deployments: [
          {
            upstream: 'bench',
            model: benchModel,
            // Room for every request of the heaviest scenario at once, so the scheduler admits at once and the bench
            // measures the request path, not admission limits (the default, 256 sequences, would queue or shed the
            // 256-connection and 2,000-stream scenarios).
            capacity: { sequences: Math.max(4_096, (options.upstreamConnections ?? 0) * 2) },
          },
        ],
      },
    ],
    ...options.extraConfig,
  };
  await writeFile(configPath, stringify(config));
  const port = await freePort();
  const adminToken = randomBytes(24).toString('hex');
  const started = processes.spawn({
    name,
    command: process.execPath,
    // The young-generation size `npm start` uses (see `withServingHeap`), unless the caller's flags set one.
    args: [
      ...withServingHeap(options.nodeArgs ?? []),
      join(options.root ?? repoRoot, 'dist/src/cli/main.js'),
      'serve',
      '--config',
      configPath,
    ],
    cwd: options.root ?? repoRoot,
    env: { TOLLGATE_ADMIN_TOKEN: adminToken, TOLLGATE_DATA_DIR: dataDir, TOLLGATE_PORT: String(port) },
  });
  void started.exited.then(() => rm(dataDir, { recursive: true, force: true }));
  const origin = `http://127.0.0.1:${port}`;
  await waitForHttp(`${origin}/readyz`, started, options.readyTimeoutMs ?? 30_000);

  const admin = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    const response = await fetch(`${origin}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${name}: POST ${path} answered ${response.status}: ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
  const tenant = await admin('/admin/v1/tenants', { name: `bench-${name}` });
  if (typeof tenant.id !== 'string' && typeof tenant.id !== 'number') {
    throw new Error(`${name}: tenant answer has no id: ${JSON.stringify(tenant)}`);
  }
  if (options.credit !== undefined) {
    await admin(`/admin/v1/tenants/${encodeURIComponent(String(tenant.id))}/credits`, {
      amount: options.credit,
      currency: 'CNY',
    });
  }
  const key = await admin(`/admin/v1/tenants/${encodeURIComponent(String(tenant.id))}/keys`, {});
  if (typeof key.key !== 'string') throw new Error(`${name}: key answer has no key: ${JSON.stringify(key)}`);
  return {
    name,
    chatUrl: `${origin}/v1/chat/completions`,
    headers: { authorization: `Bearer ${key.key}` },
    process: started,
    metricsUrl: `${origin}/metrics`,
  };
}

/** Where `portkey.sh` lives: `../shared/peers/portkey.sh` beside the repository. */
export const portkeyScript = join(repoRoot, '..', 'shared', 'peers', 'portkey.sh');

/**
 * Starts Portkey's gateway (`portkey.sh PORT`, which installs it once into a cache folder) routed to the upstream.
 * Resolves `undefined` with a reason instead of failing when it is missing or not up within `timeoutMs`.
 */
export async function startPortkey(
  processes: BenchProcesses,
  upstreamBaseUrl: string,
  timeoutMs = 60_000,
): Promise<{ target: BenchTarget } | { unavailable: string }> {
  if (!existsSync(portkeyScript)) return { unavailable: `${portkeyScript} not found` };
  const port = await freePort();
  const started = processes.spawn({ name: 'portkey', command: 'bash', args: [portkeyScript, String(port)] });
  try {
    // Its root path answers 200 ("AI Gateway says hey!") once the server listens.
    await waitForHttp(`http://127.0.0.1:${port}/`, started, timeoutMs);
  } catch (error: unknown) {
    await processes.stop(started);
    return { unavailable: error instanceof Error ? error.message.split('\n')[0]! : String(error) };
  }
  return {
    target: {
      name: 'portkey',
      chatUrl: `http://127.0.0.1:${port}/v1/chat/completions`,
      headers: {
        'x-portkey-provider': 'openai',
        'x-portkey-custom-host': upstreamBaseUrl,
        authorization: 'Bearer x',
      },
      process: started,
    },
  };
}

/** The request body of a benchmark request. */
export function chatRequestBody(stream: boolean): string {
  return JSON.stringify({
    model: benchModel,
    messages: [{ role: 'user', content: 'Say hello in twenty short words.' }],
    max_tokens: 64,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  });
}

/**
 * Sends one whole and one streamed request and checks the answers are the upstream's (a completion with usage; the
 * expected number of content chunks, a usage chunk and `[DONE]`). Returns the problems found, empty when all is well.
 */
export async function checkTarget(target: BenchTarget, expectedChunks = 20): Promise<string[]> {
  const problems: string[] = [];
  const post = (stream: boolean) =>
    fetch(target.chatUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...target.headers },
      body: chatRequestBody(stream),
      signal: AbortSignal.timeout(10_000),
    });
  try {
    const response = await post(false);
    const text = await response.text();
    if (response.status !== 200) {
      problems.push(`whole: status ${response.status}: ${text.slice(0, 300)}`);
    } else {
      const body = JSON.parse(text) as { choices?: { message?: { content?: unknown } }[]; usage?: unknown };
      if (typeof body.choices?.[0]?.message?.content !== 'string')
        problems.push('whole: no choices[0].message.content');
      if (typeof body.usage !== 'object' || body.usage === null) problems.push('whole: no usage');
    }
  } catch (error: unknown) {
    problems.push(`whole: ${error instanceof Error ? error.message : String(error)}`);
  }
  try {
    const response = await post(true);
    const text = await response.text();
    if (response.status !== 200) {
      problems.push(`stream: status ${response.status}: ${text.slice(0, 300)}`);
    } else {
      const data = text
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trim());
      if (data.at(-1) !== '[DONE]') problems.push('stream: does not end with data: [DONE]');
      const chunks = data
        .filter((line) => line !== '[DONE]')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      const contentChunks = chunks.filter((chunk) => {
        const choices = chunk.choices as { delta?: { content?: unknown } }[] | undefined;
        return typeof choices?.[0]?.delta?.content === 'string' && choices[0].delta.content !== '';
      }).length;
      if (contentChunks !== expectedChunks)
        problems.push(`stream: ${contentChunks} content chunks, expected ${expectedChunks}`);
      if (!chunks.some((chunk) => typeof chunk.usage === 'object' && chunk.usage !== null)) {
        problems.push('stream: no usage chunk although stream_options.include_usage was true');
      }
    }
  } catch (error: unknown) {
    problems.push(`stream: ${error instanceof Error ? error.message : String(error)}`);
  }
  return problems;
}
