import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createStore } from '../store/create-store.js';
import type { RequestLogRecord, Store } from '../store/store.js';
import { type TranspiledTree, transpileForChild } from '../store/transpile-for-child.js';
import { RequestLogWriter } from './request-log-writer.js';

interface InstrumentedStore extends Store {
  /** Sizes of the `insertRequestLogs` calls that committed. */
  commits: number[];
  /** Throws from `insertRequestLogs` while it returns an error. */
  failWith: ((records: readonly RequestLogRecord[]) => Error | undefined) | undefined;
  /** Holds `insertRequestLogs` until the promise resolves. */
  gate: Promise<void> | undefined;
}

function instrument(inner: Store): InstrumentedStore {
  const state = {
    commits: [] as number[],
    failWith: undefined as InstrumentedStore['failWith'],
    gate: undefined as Promise<void> | undefined,
  };
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property in state) return (state as any)[property];
      if (property === 'insertRequestLogs') {
        return async (records: readonly RequestLogRecord[]) => {
          if (state.gate !== undefined) await state.gate;
          const error = state.failWith?.(records);
          if (error !== undefined) throw error;
          await target.insertRequestLogs(records);
          state.commits.push(records.length);
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
    set(_target, property, value) {
      (state as any)[property] = value;
      return true;
    },
  }) as InstrumentedStore;
}

let sequence = 0;
function record(overrides: Partial<RequestLogRecord> = {}): RequestLogRecord {
  sequence++;
  return {
    requestId: `req-${sequence}`,
    tenantId: 'ten_writer',
    keyId: 'key_writer',
    endpoint: 'chat',
    model: 'model-a',
    deployment: 'sim/model-a',
    status: 200,
    errorCode: null,
    stream: false,
    promptTokens: 10,
    cachedTokens: 0,
    completionTokens: 5,
    reasoningTokens: 0,
    usageEstimated: false,
    latencyMs: 12.25,
    ttftMs: null,
    attempts: 1,
    createdAt: 1_700_000_000_000 + sequence,
    ...overrides,
  };
}

async function countRows(store: Store, tenantId = 'ten_writer'): Promise<number> {
  return (await store.listRequestLogs({ tenantId, limit: 1_000_000 })).length;
}

describe('RequestLogWriter', () => {
  let raw: Store;
  let store: InstrumentedStore;
  let writer: RequestLogWriter;

  beforeEach(async () => {
    raw = await createStore('sqlite://:memory:');
    await raw.migrate();
    store = instrument(raw);
    writer = new RequestLogWriter(store, { retryInitialMs: 1, retryMaxMs: 4 });
  });

  afterEach(async () => {
    await writer.close();
    await raw.close();
  });

  it('commits 10,000 writes of one tick in a few transactions', async () => {
    const records = Array.from({ length: 10_000 }, () => record());
    const outcomes = await Promise.all(records.map((each) => writer.write(each)));
    expect(outcomes.every((outcome) => outcome === true)).toBe(true);
    expect(store.commits.length).toBeLessThanOrEqual(21);
    expect(store.commits.every((size) => size <= 500)).toBe(true);
    expect(store.commits.reduce((sum, size) => sum + size, 0)).toBe(10_000);
    expect(await countRows(raw)).toBe(10_000);
    expect(writer.stats).toEqual({
      committed: 10_000,
      transactions: store.commits.length,
      failedCommits: 0,
      dropped: 0,
    });
  });

  it('groups the writes of one event-loop turn into one transaction', async () => {
    const first = [writer.write(record()), writer.write(record()), writer.write(record())];
    await Promise.all(first);
    expect(store.commits).toEqual([3]);
    await writer.write(record());
    expect(store.commits).toEqual([3, 1]);
  });

  it('resolves a write only once its row is committed and readable', async () => {
    let release!: () => void;
    store.gate = new Promise((resolve) => {
      release = resolve;
    });
    const written = record();
    let settled = false;
    const promise = writer.write(written).then((outcome) => {
      settled = true;
      return outcome;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    expect(await countRows(raw)).toBe(0);
    store.gate = undefined;
    release();
    expect(await promise).toBe(true);
    const rows = await raw.listRequestLogs({ tenantId: 'ten_writer' });
    expect(rows).toEqual([written]);
  });

  it('puts records that arrive during a commit into the next batch', async () => {
    let release!: () => void;
    store.gate = new Promise((resolve) => {
      release = resolve;
    });
    const first = writer.write(record());
    await new Promise((resolve) => setImmediate(resolve));
    const later = [writer.write(record()), writer.write(record())];
    store.gate = undefined;
    release();
    await Promise.all([first, ...later]);
    expect(store.commits).toEqual([1, 2]);
  });

  it('retries after store failures and loses nothing', async () => {
    let failures = 0;
    store.failWith = () => (failures++ < 5 ? new Error('database is locked') : undefined);
    const errors: unknown[] = [];
    writer = new RequestLogWriter(store, { retryInitialMs: 1, retryMaxMs: 4, onError: (error) => errors.push(error) });
    const records = Array.from({ length: 1200 }, () => record());
    const outcomes = await Promise.all(records.map((each) => writer.write(each)));
    expect(outcomes.every((outcome) => outcome === true)).toBe(true);
    expect(errors.length).toBe(5);
    expect(writer.stats.failedCommits).toBe(5);
    expect(writer.stats.dropped).toBe(0);
    expect(await countRows(raw)).toBe(1200);
    const stored = new Set(
      (await raw.listRequestLogs({ tenantId: 'ten_writer', limit: 5000 })).map((row) => row.requestId),
    );
    expect(stored).toEqual(new Set(records.map((each) => each.requestId)));
  });

  it('bounds memory while the store is down, dropping the overflow', async () => {
    let down = true;
    store.failWith = () => (down ? new Error('connection refused') : undefined);
    writer = new RequestLogWriter(store, { maxBatch: 4, maxBuffered: 10, retryInitialMs: 1, retryMaxMs: 2 });
    const outcomes = Array.from({ length: 15 }, () => writer.write(record()));
    const dropped = await Promise.all(outcomes.slice(10));
    expect(dropped).toEqual([false, false, false, false, false]);
    expect(writer.buffered).toBe(10);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(writer.stats.failedCommits).toBeGreaterThan(1);
    down = false;
    expect(await Promise.all(outcomes.slice(0, 10))).toEqual(Array(10).fill(true));
    expect(writer.stats.dropped).toBe(5);
    expect(await countRows(raw)).toBe(10);
  });

  it('drops a record the store keeps refusing while other records commit', async () => {
    store.failWith = (records) =>
      records.some((each) => each.requestId === 'poison') ? new Error('value too long') : undefined;
    const good = Array.from({ length: 40 }, () => record());
    const first = good.slice(0, 20).map((each) => writer.write(each));
    const poison = writer.write(record({ requestId: 'poison' }));
    const rest = good.slice(20).map((each) => writer.write(each));
    expect(await Promise.all([...first, ...rest])).toEqual(Array(40).fill(true));

    // Alone, a failing record looks like an outage; it is only judged unwritable while other records commit.
    let settled: boolean | undefined;
    void poison.then((outcome) => {
      settled = outcome;
    });
    const traffic: Promise<boolean>[] = [];
    for (let round = 0; round < 50 && settled === undefined; round++) {
      traffic.push(writer.write(record()));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(settled).toBe(false);
    expect(await Promise.all(traffic)).toEqual(Array(traffic.length).fill(true));
    expect(await countRows(raw)).toBe(40 + traffic.length);
    expect(writer.stats.dropped).toBe(1);
  });

  it('close() commits everything and refuses later writes', async () => {
    const pending = Array.from({ length: 700 }, () => writer.write(record()));
    await writer.close();
    expect(await countRows(raw)).toBe(700);
    expect(await Promise.all(pending)).toEqual(Array(700).fill(true));
    expect(await writer.write(record())).toBe(false);
    expect(writer.stats.dropped).toBe(1);
  });

  it('close() gives up on a store that stays down', async () => {
    store.failWith = () => new Error('connection refused');
    writer = new RequestLogWriter(store, { retryInitialMs: 1, retryMaxMs: 5, closeTimeoutMs: 30 });
    const pending = [writer.write(record()), writer.write(record())];
    await writer.close();
    expect(await Promise.all(pending)).toEqual([false, false]);
    expect(writer.stats.dropped).toBe(2);
    expect(writer.buffered).toBe(0);
  });
});

describe('RequestLogWriter durability', () => {
  let tree: TranspiledTree;
  let directory: string;

  beforeAll(async () => {
    directory = mkdtempSync(join(tmpdir(), 'tollgate-writer-'));
    tree = await transpileForChild(['src/metering/request-log-writer-crash.child.ts']);
  });

  afterAll(async () => {
    await tree.remove();
    rmSync(directory, { recursive: true, force: true });
  });

  it('keeps committed records after the process is killed with SIGKILL', async () => {
    const path = join(directory, 'crash.db');
    const count = 2500;
    const child = spawn(
      process.execPath,
      [tree.pathOf('src/metering/request-log-writer-crash.child.ts'), path, `${count}`],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exit = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    const said = await new Promise<string>((resolve) => {
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes('\n')) {
          child.kill('SIGKILL');
          resolve(stdout.trim());
        }
      });
      child.on('exit', () => resolve(stdout.trim()));
    });
    expect(said, stderr).toBe('committed');
    expect(await exit).toBe('SIGKILL');

    const database = new Database(path, { readonly: true });
    try {
      const row = database.prepare("select count(*) as n from request_log where request_id like 'crash-%'").get();
      expect(row).toEqual({ n: count });
    } finally {
      database.close();
    }
  });
});
