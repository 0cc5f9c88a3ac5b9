/** Runs the built `tollgate` CLI in a temporary workspace, for tests that need a real process (kill -9, banner). */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, beforeAll, expect, vi } from 'vitest';
import { stringify } from 'yaml';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The built CLI entry point (`npm test` builds before running tests). */
export const cliPath = path.join(repoRoot, 'dist/src/cli/main.js');

/** Throws when the CLI has not been built. */
export function requireBuiltCli(): void {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run npm run build (npm test does)`);
}

/** A temporary directory with a `tollgate.yaml` listening on a free port (other `server` settings kept). */
export function workspace(document: Record<string, unknown>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-cli-'));
  const server = { ...(document.server as Record<string, unknown> | undefined), port: 0 };
  writeFileSync(path.join(dir, 'tollgate.yaml'), stringify({ ...document, server }));
  return dir;
}

/** Runs one CLI command to completion (`env`: its environment; default this process's). */
export function runCli(dir: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const result = spawnSync(process.execPath, [cliPath, ...args], { cwd: dir, encoding: 'utf8', timeout: 30_000, env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A started `tollgate serve`: its banner, its URL, and everything it has printed so far (for failure messages). */
export interface Served {
  child: ChildProcess;
  banner: string;
  url: string;
  output: () => string;
}

/** Starts `tollgate serve` and resolves with its banner once it listens. */
export function serve(dir: string, children: ChildProcess[]): Promise<Served> {
  const child = spawn(process.execPath, [cliPath, 'serve'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${output}`)), 30_000);
    child.stdout?.on('data', (data: Buffer) => {
      output += data.toString();
      const match = /listening on (http:\/\/[\d.:]+)/.exec(output);
      if (match && output.includes('const stream')) {
        clearTimeout(timer);
        resolve({ child, banner: output, url: match[1]!, output: () => output });
      }
    });
    child.stderr?.on('data', (data: Buffer) => {
      output += data.toString();
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}:\n${output}`));
    });
  });
}

/** The demo key printed on first start. */
export function demoKeyOf(banner: string): string {
  const key = /Demo API key \(shown once, keep it\): (tg-\S+)/.exec(banner)?.[1];
  if (key === undefined) throw new Error(`no demo key in banner:\n${banner}`);
  return key;
}

/** Asks a started `serve` short chat questions (3 tokens each) through the official SDK; each resolves with its request id. */
export function shortQuestions(served: { banner: string; url: string }): (index: number) => Promise<string> {
  const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
  return async (index) => {
    const { response } = await client.chat.completions
      .create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: `q${index}` }], max_tokens: 3 })
      .withResponse();
    return response.headers.get('x-request-id')!;
  };
}

/** Kills `child` with SIGKILL; resolves once it has exited. */
export async function killHard(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/**
 * Completes `count` concurrent short questions (`shortQuestions`) on a started `serve`, then kills it with SIGKILL;
 * resolves with their request ids once it has exited.
 */
export async function completeThenKill(
  served: { child: ChildProcess; banner: string; url: string },
  count: number,
): Promise<string[]> {
  const ask = shortQuestions(served);
  const ids = await Promise.all(Array.from({ length: count }, (_, index) => ask(index)));
  await killHard(served.child);
  return ids;
}

/**
 * How long a process caches an API key (`KeyService`'s default TTL): a revocation seen sooner came through the
 * invalidation bus.
 */
export const KEY_CACHE_TTL_MS = 5000;

/** Status of `GET /v1/models` with `key`, on a connection of its own (no keep-alive). */
function modelsStatusOnNewConnection(url: string, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpGet(
      `${url}/v1/models`,
      { agent: false, headers: { authorization: `Bearer ${key}` } },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
      },
    );
    request.on('error', reject);
  });
}

/** Calls the admin API of the gateway at `url` with `adminToken`; `body`, when given, is sent as JSON. */
export function adminApi(url: string, adminToken: string) {
  return (method: string, path: string, body?: unknown) =>
    fetch(`${url}/admin/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
}

/**
 * Creates a tenant and a key through the admin API at `adminUrl`, has every worker behind `workersUrl` cache the key (8
 * requests, each on a new connection, which the primary hands to its workers in turn), revokes it, and expects all of
 * them to refuse it before their cached copy could have expired: the revocation reached every worker at once.
 */
export async function expectRevokedOnEveryWorkerAtOnce(adminUrl: string, adminToken: string, workersUrl: string) {
  const admin = adminApi(adminUrl, adminToken);
  const tenant = (await (await admin('POST', '/tenants', { name: `revoke-${Date.now()}` })).json()) as { id: string };
  const created = (await (await admin('POST', `/tenants/${tenant.id}/keys`, {})).json()) as { id: string; key: string };
  const statuses = () =>
    Promise.all(Array.from({ length: 8 }, () => modelsStatusOnNewConnection(workersUrl, created.key)));
  // Every worker caches the key from here on, until this time + KEY_CACHE_TTL_MS at the earliest.
  const cachedFrom = Date.now();
  expect(await statuses()).toEqual(Array(8).fill(200));
  expect((await admin('DELETE', `/keys/${created.id}`)).status).toBe(200);
  await vi.waitFor(async () => expect(await statuses()).toEqual(Array(8).fill(401)), { timeout: 10_000, interval: 20 });
  expect(Date.now() - cachedFrom).toBeLessThan(KEY_CACHE_TTL_MS);
}

/**
 * Each test of the CLI files runs the CLI as separate processes, many times; one of them takes 14–22 s on a loaded
 * CI host. The default 30 s per test is too tight for that.
 */
export const CLI_TEST_TIMEOUT_MS = 120_000;

/**
 * The setup of a CLI test file (call at its top level): checks that the CLI is built, and kills every `serve` a test
 * started once the test ends. `workspace` writes `document` with the test's changes on top; `serve` starts a gateway
 * in one.
 */
export function cliTestProcesses(document: Record<string, unknown>) {
  const children: ChildProcess[] = [];
  beforeAll(requireBuiltCli);
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });
  return {
    workspace: (extra: Record<string, unknown> = {}) => workspace({ ...document, ...extra }),
    serve: (dir: string) => serve(dir, children),
  };
}
