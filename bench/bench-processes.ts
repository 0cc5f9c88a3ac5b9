/**
 * The child processes of a benchmark run (upstream, gateways, peers): each is spawned in a process group of its own so
 * that stopping it also stops whatever it started (cluster workers, `npm`, the `node` that a shell script `exec`s), and
 * every group is stopped when the run ends, fails or is interrupted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A started child, with the tail of its output kept for error messages. */
export interface BenchProcess {
  /** Short name used in messages. */
  name: string;
  child: ChildProcess;
  /** Process id of the child (the leader of its process group). */
  pid: number;
  /** The last few KiB of stdout and stderr. */
  output(): string;
  /** Resolves with the exit code (or signal) once the child has exited. */
  exited: Promise<string>;
}

/** How to start one child. */
export interface SpawnOptions {
  name: string;
  command: string;
  args: readonly string[];
  /** Working directory. Default: the current one. */
  cwd?: string;
  /** Added to (not replacing) this process's environment. */
  env?: Record<string, string>;
  /** Called with every stdout line. */
  onLine?: (line: string) => void;
}

const outputTailBytes = 8 * 1024;

/** Owns every child of a run; `stopAll` kills their process groups. */
export class BenchProcesses {
  private readonly children = new Set<BenchProcess>();
  private readonly stopOnSignal = (signal: NodeJS.Signals) => {
    void this.stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  // A crash of the orchestrator must not leave servers behind: `exit` handlers can only act synchronously.
  private readonly killOnExit = () => {
    for (const child of this.children) killGroup(child.pid, 'SIGKILL');
  };

  constructor() {
    process.once('SIGINT', this.stopOnSignal);
    process.once('SIGTERM', this.stopOnSignal);
    process.once('exit', this.killOnExit);
  }

  /** Spawns a child in a new process group. */
  spawn(options: SpawnOptions): BenchProcess {
    const child = spawn(options.command, [...options.args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid === undefined) throw new Error(`${options.name}: could not spawn ${options.command}`);
    let tail = '';
    const keep = (text: string) => {
      tail = (tail + text).slice(-outputTailBytes);
    };
    let partialLine = '';
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      keep(text);
      if (options.onLine === undefined) return;
      const lines = (partialLine + text).split('\n');
      partialLine = lines.pop() ?? '';
      for (const line of lines) options.onLine(line);
    });
    child.stderr?.setEncoding('utf8').on('data', keep);
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ?? String(code)));
      child.once('error', (error: Error) => resolve(`spawn error: ${error.message}`));
    });
    const started: BenchProcess = { name: options.name, child, pid: child.pid, output: () => tail, exited };
    this.children.add(started);
    void exited.then(() => this.children.delete(started));
    return started;
  }

  /** Stops one child's process group: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(started: BenchProcess, graceMs = 3_000): Promise<void> {
    if (!this.children.has(started)) return;
    killGroup(started.pid, 'SIGTERM');
    const exitedInTime = await Promise.race([started.exited.then(() => true), sleep(graceMs).then(() => false)]);
    // The leader may exit before its group (a shell script's children, cluster workers): finish the group off.
    killGroup(started.pid, 'SIGKILL');
    if (!exitedInTime) await started.exited;
    this.children.delete(started);
  }

  /** Stops every child still running and removes the signal handlers. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.children].map((child) => this.stop(child)));
    process.off('SIGINT', this.stopOnSignal);
    process.off('SIGTERM', this.stopOnSignal);
    process.off('exit', this.killOnExit);
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (error: unknown) {
    // ESRCH: the group is already gone, which is what we wanted.
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/**
 * Polls `url` with GET until `accept(status)` holds; rejects after `timeoutMs` or as soon as `child` exits.
 * Default `accept`: status 200.
 */
export async function waitForHttp(
  url: string,
  started: BenchProcess,
  timeoutMs: number,
  accept: (status: number) => boolean = (status) => status === 200,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: string | undefined;
  void started.exited.then((code) => {
    exitedWith = code;
  });
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    if (exitedWith !== undefined) {
      throw new Error(`${started.name} exited (${exitedWith}) before it was ready:\n${started.output().slice(-3000)}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (accept(response.status)) return;
      lastProblem = `status ${response.status}`;
    } catch (error: unknown) {
      lastProblem = error instanceof Error ? error.message : String(error);
    }
    await sleep(200);
  }
  throw new Error(
    `${started.name} not ready at ${url} after ${timeoutMs} ms (${lastProblem}):\n${started.output().slice(-3000)}`,
  );
}
