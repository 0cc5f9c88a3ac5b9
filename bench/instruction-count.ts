/**
 * Instructions per request, counted by Valgrind's callgrind: the one CPU measure on this shared 2-core machine that
 * does not drift with what else runs (the same binary, inputs and environment give nearly the same count, whatever
 * the other core does). Time-based A/B pairs move by ±10% from one pair to the next; a difference of a few percent
 * between two builds is only visible in a count.
 *
 * The gateway runs under `valgrind --tool=callgrind` (50–100× slower, every thread serialised): a warm-up of
 * requests first (JIT, pools, caches), then the counters are zeroed (`callgrind_control -z`), a fixed number of
 * requests is sent, and the counters are dumped (`callgrind_control -d`). The count covers every thread of the
 * process (main, settle thread, token pool, V8's compiler and GC threads) in user space; system calls' kernel time
 * is not counted, and neither is anything outside the process.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Pool } from 'undici';

const run = promisify(execFile);

/** The command that starts a process under callgrind, writing its dumps into `outDir`. */
export function callgrindWrapper(outDir: string): string[] {
  return [
    'valgrind',
    '--tool=callgrind',
    // V8 writes the code it runs (JIT): Valgrind must re-read code that changes.
    '--smc-check=all-non-file',
    '--cache-sim=no',
    '--branch-sim=no',
    '--dump-instr=no',
    `--callgrind-out-file=${join(outDir, 'callgrind.%p')}`,
  ];
}

/** Whether Valgrind and its `callgrind_control` can be run here. */
export async function callgrindAvailable(): Promise<boolean> {
  try {
    await run('valgrind', ['--version']);
    await run('callgrind_control', ['--version']);
    return true;
  } catch {
    return false;
  }
}

/** Zeroes the counters of the callgrind process `pid`. */
export async function zeroCounters(pid: number): Promise<void> {
  await run('callgrind_control', ['-z', String(pid)]);
}

/** One dump of a callgrind process's counters. */
export interface CountedDump {
  /** Instructions counted since the last zero or dump (the dump's `totals:` line). */
  instructions: number;
  /** The dump file (per function, for `callgrind_annotate`). */
  file: string;
}

/** Dumps the counters of the callgrind process `pid` into `outDir` (see `CountedDump`). */
export async function dumpInstructions(pid: number, outDir: string): Promise<CountedDump> {
  const before = new Set(await readdir(outDir));
  await run('callgrind_control', ['-d', String(pid)]);
  const dumps = (await readdir(outDir)).filter((name) => name.startsWith(`callgrind.${pid}.`) && !before.has(name));
  if (dumps.length !== 1) throw new Error(`callgrind_control -d ${pid} left ${dumps.length} new dump files`);
  const text = await readFile(join(outDir, dumps[0]!), 'utf8');
  const totals = /^totals:\s+(\d+)/m.exec(text) ?? /^summary:\s+(\d+)/m.exec(text);
  if (totals === null) throw new Error(`${dumps[0]} has no totals line`);
  return { instructions: Number(totals[1]), file: join(outDir, dumps[0]!) };
}

/** What `sendRequests` sends. */
export interface RequestBatch {
  url: string;
  headers: Record<string, string>;
  body: string;
  /** Requests in all. */
  count: number;
  /** Requests in flight at once, each on its own keep-alive connection. */
  concurrency: number;
}

/**
 * Sends `count` POSTs, `concurrency` at a time, reading each answer to its end. Throws on any non-2xx answer: a
 * count over failures would measure the error path.
 */
export async function sendRequests(batch: RequestBatch): Promise<void> {
  const url = new URL(batch.url);
  const pool = new Pool(url.origin, { connections: batch.concurrency, headersTimeout: 0, bodyTimeout: 0 });
  const headers = { ...batch.headers, 'content-type': 'application/json' };
  let sent = 0;
  const lane = async () => {
    while (sent < batch.count) {
      sent++;
      const response = await pool.request({ method: 'POST', path: url.pathname, headers, body: batch.body });
      const text = await response.body.text();
      if (response.statusCode < 200 || response.statusCode > 299) {
        throw new Error(`${batch.url} answered ${response.statusCode}: ${text.slice(0, 200)}`);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(batch.concurrency, batch.count) }, lane));
  } finally {
    await pool.close();
  }
}
