import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readJournal } from '../../test/support/journal.js';
import { createStore } from '../store/create-store.js';
import { settlementOf, usageEventFixture } from '../store/ledger-fixtures.js';
import { settlementFromJson } from '../store/ledger-rows.js';
import type { Settlement, UsageEventRecord } from '../store/ledger-store.js';
import type { Store } from '../store/store.js';
import { type TranspiledTree, transpileForChild } from '../store/transpile-for-child.js';
import { SettlementJournal } from './settlement-journal.js';
import { SettlementSpool } from './settlement-spool.js';
import { SettlementWriter } from './settlement-writer.js';

interface InstrumentedStore extends Store {
  /** Sizes of the `settle` calls that committed. */
  commits: number[];
  /** `settle` calls made (committed, failed, or waiting at the gate). */
  calls: number;
  /** Throws from `settle` while it returns an error. */
  failWith: ((batch: readonly Settlement[]) => Error | undefined) | undefined;
  /** Holds `settle` until the promise resolves. */
  gate: Promise<void> | undefined;
  /** The `encoded` lines each committed `settle` call was given. */
  encodedCommits: (readonly string[] | undefined)[];
}

function instrument(inner: Store): InstrumentedStore {
  const state = {
    commits: [] as number[],
    calls: 0,
    failWith: undefined as InstrumentedStore['failWith'],
    gate: undefined as Promise<void> | undefined,
    encodedCommits: [] as (readonly string[] | undefined)[],
  };
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property in state) return (state as any)[property];
      if (property === 'settle') {
        return async (batch: readonly Settlement[], encoded?: readonly string[]) => {
          state.calls++;
          if (state.gate !== undefined) await state.gate;
          const error = state.failWith?.(batch);
          if (error !== undefined) throw error;
          await target.settle(batch, encoded);
          state.commits.push(batch.length);
          state.encodedCommits.push(encoded);
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
/** A usage event of tenant `ten_writer` of `sequence` nano-units. */
function usage(requestId?: string): UsageEventRecord {
  sequence++;
  return usageEventFixture({
    requestId: requestId ?? `req-${sequence}`,
    tenantId: 'ten_writer',
    keyId: 'key_writer',
    receivedAt: 1_700_000_000_000 + sequence,
    inputTokens: 10,
    outputTokens: 5,
    inputListAmount: BigInt(sequence),
  });
}

/** The settlement of a fresh usage event (`usage`). */
function settlement(requestId?: string): Settlement {
  return settlementOf(usage(requestId));
}

/** Committed settlements: request-log rows, checked against the usage events written with them. */
async function countRows(store: Store, tenantId = 'ten_writer'): Promise<number> {
  const logs = (await store.listRequestLogs({ tenantId, limit: 1_000_000 })).length;
  const events = await store.sumUsageEvents({ tenantId, start: 0, end: Number.MAX_SAFE_INTEGER });
  expect(events.count).toBe(logs);
  return logs;
}

/** Request ids of the committed request-log rows (one read: safe while commits go on). */
async function loggedIds(store: Store, tenantId = 'ten_writer'): Promise<string[]> {
  return (await store.listRequestLogs({ tenantId, limit: 1_000_000 })).map((row) => row.requestId);
}

describe('SettlementWriter', () => {
  let raw: Store;
  let store: InstrumentedStore;
  let writer: SettlementWriter;

  beforeEach(async () => {
    raw = await createStore('sqlite://:memory:');
    await raw.migrate();
    store = instrument(raw);
    writer = new SettlementWriter(store, { retryInitialMs: 1, retryMaxMs: 4 });
  });

  afterEach(async () => {
    await writer.close();
    await raw.close();
  });

  it('commits 10,000 writes of one tick in a few transactions', async () => {
    const records = Array.from({ length: 10_000 }, () => settlement());
    const outcomes = await Promise.all(records.map((each) => writer.write(each)));
    expect(outcomes.every((outcome) => outcome === true)).toBe(true);
    expect(store.commits.length).toBeLessThanOrEqual(6);
    expect(store.commits.every((size) => size <= 2000)).toBe(true);
    expect(store.commits.reduce((sum, size) => sum + size, 0)).toBe(10_000);
    expect(await countRows(raw)).toBe(10_000);
    expect(writer.stats).toEqual({
      committed: 10_000,
      transactions: store.commits.length,
      failedCommits: 0,
      dropped: 0,
      spooled: 0,
      journaled: 0,
      journalFailures: 0,
    });
  });

  it('groups the writes of one event-loop turn into one transaction', async () => {
    const first = [writer.write(settlement()), writer.write(settlement()), writer.write(settlement())];
    await Promise.all(first);
    expect(store.commits).toEqual([3]);
    await writer.write(settlement());
    expect(store.commits).toEqual([3, 1]);
  });

  it('resolves a write only once its row is committed and readable', async () => {
    let release!: () => void;
    store.gate = new Promise((resolve) => {
      release = resolve;
    });
    const event = usage();
    const written = settlementOf(event);
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
    expect(rows).toEqual([written.log]);
    expect(await raw.listUsageEvents({ tenantId: 'ten_writer', start: 0, end: Number.MAX_SAFE_INTEGER })).toEqual([
      event,
    ]);
  });

  it('commits a write made as soon as the previous one resolved, with no later write to start a flush', async () => {
    for (let index = 0; index < 20; index++) expect(await writer.write(settlement())).toBe(true);
    expect(await countRows(raw)).toBe(20);
  });

  it('puts records that arrive during a commit into the next batch', async () => {
    let release!: () => void;
    store.gate = new Promise((resolve) => {
      release = resolve;
    });
    const first = writer.write(settlement());
    await new Promise((resolve) => setImmediate(resolve));
    const later = [writer.write(settlement()), writer.write(settlement())];
    store.gate = undefined;
    release();
    await Promise.all([first, ...later]);
    expect(store.commits).toEqual([1, 2]);
  });

  it('retries after store failures and loses nothing', async () => {
    let failures = 0;
    store.failWith = () => (failures++ < 5 ? new Error('database is locked') : undefined);
    const errors: unknown[] = [];
    writer = new SettlementWriter(store, { retryInitialMs: 1, retryMaxMs: 4, onError: (error) => errors.push(error) });
    const records = Array.from({ length: 1200 }, () => settlement());
    const outcomes = await Promise.all(records.map((each) => writer.write(each)));
    expect(outcomes.every((outcome) => outcome === true)).toBe(true);
    expect(errors.length).toBe(5);
    expect(writer.stats.failedCommits).toBe(5);
    expect(writer.stats.dropped).toBe(0);
    expect(await countRows(raw)).toBe(1200);
    const stored = new Set(
      (await raw.listRequestLogs({ tenantId: 'ten_writer', limit: 5000 })).map((row) => row.requestId),
    );
    expect(stored).toEqual(new Set(records.map((each) => each.log.requestId)));
  });

  it('bounds memory while the store is down, dropping the overflow', async () => {
    let down = true;
    store.failWith = () => (down ? new Error('connection refused') : undefined);
    writer = new SettlementWriter(store, { maxBatch: 4, maxBuffered: 10, retryInitialMs: 1, retryMaxMs: 2 });
    const outcomes = Array.from({ length: 15 }, () => writer.write(settlement()));
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
    store.failWith = (batch) =>
      batch.some((each) => each.log.requestId === 'poison') ? new Error('value too long') : undefined;
    const good = Array.from({ length: 40 }, () => settlement());
    const first = good.slice(0, 20).map((each) => writer.write(each));
    const poison = writer.write(settlement('poison'));
    const rest = good.slice(20).map((each) => writer.write(each));
    expect(await Promise.all([...first, ...rest])).toEqual(Array(40).fill(true));

    // Alone, a failing record looks like an outage; it is only judged unwritable while other records commit.
    let settled: boolean | undefined;
    void poison.then((outcome) => {
      settled = outcome;
    });
    const traffic: Promise<boolean>[] = [];
    for (let round = 0; round < 50 && settled === undefined; round++) {
      traffic.push(writer.write(settlement()));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(settled).toBe(false);
    expect(await Promise.all(traffic)).toEqual(Array(traffic.length).fill(true));
    expect(await countRows(raw)).toBe(40 + traffic.length);
    expect(writer.stats.dropped).toBe(1);
  });

  it('close() commits everything and refuses later writes', async () => {
    const pending = Array.from({ length: 700 }, () => writer.write(settlement()));
    await writer.close();
    expect(await countRows(raw)).toBe(700);
    expect(await Promise.all(pending)).toEqual(Array(700).fill(true));
    expect(await writer.write(settlement())).toBe(false);
    expect(writer.stats.dropped).toBe(1);
  });

  it('close() gives up on a store that stays down', async () => {
    store.failWith = () => new Error('connection refused');
    writer = new SettlementWriter(store, { retryInitialMs: 1, retryMaxMs: 5, closeTimeoutMs: 30 });
    const pending = [writer.write(settlement()), writer.write(settlement())];
    await writer.close();
    expect(await Promise.all(pending)).toEqual([false, false]);
    expect(writer.stats.dropped).toBe(2);
    expect(writer.buffered).toBe(0);
  });

  it('runs up to `concurrency` commits side by side, and one at a time while commits fail', async () => {
    let active = 0;
    let peak = 0;
    let down = false;
    let failures = 0;
    let release = () => {};
    let gate: Promise<void> | undefined = new Promise<void>((resolve) => {
      release = resolve;
    });
    const counting: Pick<Store, 'settle'> = {
      settle: async (batch) => {
        active++;
        peak = Math.max(peak, active);
        try {
          if (gate !== undefined) await gate;
          if (down) {
            // A failure that takes a while (a timeout), so that two failing commits would overlap.
            await new Promise((resolve) => setTimeout(resolve, 2));
            failures++;
            throw new Error('connection refused');
          }
          await raw.settle(batch);
        } finally {
          active--;
        }
      },
    };
    writer = new SettlementWriter(counting, { concurrency: 2, retryInitialMs: 1, retryMaxMs: 4 });
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    // Three turns, three writes: two commits wait at the gate side by side, the third write waits for one of them.
    const written: Promise<boolean>[] = [];
    for (let index = 0; index < 3; index++) {
      written.push(writer.write(settlement()));
      await turn();
    }
    expect(active).toBe(2);
    expect(writer.buffered).toBe(3);
    gate = undefined;
    release();
    expect(await Promise.all(written)).toEqual([true, true, true]);
    expect(peak).toBe(2);
    expect(await countRows(raw)).toBe(3);

    // The store goes down: once a commit has failed, a single loop retries, whatever arrives meanwhile. (Until that
    // first failure comes back the writer cannot know: on a loaded machine a second write could start beside it.)
    down = true;
    const during: Promise<boolean>[] = [writer.write(settlement())];
    while (failures === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    peak = active;
    for (let index = 1; index < 6; index++) {
      during.push(writer.write(settlement()));
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    expect(failures).toBeGreaterThan(1);
    expect(peak).toBe(1);
    down = false;
    expect(await Promise.all(during)).toEqual(Array(6).fill(true));
    expect(await countRows(raw)).toBe(9);
    expect(writer.stats.dropped).toBe(0);
  });

  it('starts a second commit at once when the writes of one turn fill more than one batch', async () => {
    const release = (() => {
      let open = () => {};
      store.gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      return () => open();
    })();
    writer = new SettlementWriter(store, { concurrency: 2, maxBatch: 2 });
    const written = Array.from({ length: 5 }, () => writer.write(settlement()));
    await new Promise((resolve) => setImmediate(resolve));
    // Two batches of two wait at the gate side by side; the fifth settlement waits for one of them.
    expect(store.calls).toBe(2);
    expect(writer.buffered).toBe(5);
    store.gate = undefined;
    release();
    expect(await Promise.all(written)).toEqual(Array(5).fill(true));
    expect([...store.commits].sort()).toEqual([1, 2, 2]);
  });

  describe('with a journal', () => {
    let journalRoot: string;
    beforeEach(() => {
      journalRoot = mkdtempSync(join(tmpdir(), 'tollgate-writer-journal-'));
    });
    afterEach(() => rmSync(journalRoot, { recursive: true, force: true }));

    /** A closed gate for the instrumented store's commits, and its key. */
    function closeGate(): () => void {
      let release!: () => void;
      store.gate = new Promise((resolve) => {
        release = resolve;
      });
      return release;
    }

    it('resolves a write once it is in the journal, before its commit; flushed() waits for the commit', async () => {
      const directory = join(journalRoot, 'journal');
      writer = new SettlementWriter(store, { journal: new SettlementJournal(directory) });
      const releaseFirst = closeGate();
      const first = [settlement(), settlement()];
      expect(await Promise.all(first.map((each) => writer.write(each)))).toEqual([true, true]);
      expect(store.commits).toEqual([]);
      expect(await countRows(raw)).toBe(0);
      expect(readJournal(directory)).toEqual(first);
      // The commit of the first two starts at the end of the turn they were written in (it waits at the gate).
      await new Promise((resolve) => setImmediate(resolve));
      expect(store.commits).toEqual([]);

      let firstFlushed = false;
      const flushedFirst = writer.flushed().then(() => {
        firstFlushed = true;
      });
      // Written after that `flushed` call: it does not wait for this one.
      const later = settlement();
      expect(await writer.write(later)).toBe(true);
      for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(firstFlushed).toBe(false);
      const releaseLater = closeGate();
      releaseFirst();
      await flushedFirst;
      expect((await loggedIds(raw)).sort()).toEqual(first.map((each) => each.log.requestId).sort());

      let laterFlushed = false;
      const flushedLater = writer.flushed().then(() => {
        laterFlushed = true;
      });
      for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(laterFlushed).toBe(false);
      store.gate = undefined;
      releaseLater();
      await flushedLater;
      expect(await countRows(raw)).toBe(3);
      expect(await writer.flushed()).toBeUndefined();
      expect(writer.stats).toMatchObject({ journaled: 3, journalFailures: 0, committed: 3 });
    });

    it('hands the store each settlement with its journal line, so that the line is not serialized again', async () => {
      const directory = join(journalRoot, 'journal');
      writer = new SettlementWriter(store, { journal: new SettlementJournal(directory), journalCommitDelayMs: 0 });
      const written = [settlement(), settlement(), settlement()];
      await Promise.all(written.map((each) => writer.write(each)));
      await writer.flushed();
      expect(store.commits).toEqual([3]);
      const lines = readFileSync(join(directory, readdirSync(directory)[0]!), 'utf8')
        .split('\n')
        .slice(0, -1);
      expect(store.encodedCommits).toEqual([lines]);
      expect(lines.map(settlementFromJson)).toEqual(written);

      // Without a journal there are no lines: the store gets the objects alone.
      const plain = new SettlementWriter(store);
      await plain.write(settlement());
      await plain.close();
      expect(store.encodedCommits).toEqual([lines, undefined]);
    });

    it('gathers the writes of several turns into one commit; flushed() and a failed append commit at once', async () => {
      const directory = join(journalRoot, 'journal');
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(directory),
        journalCommitDelayMs: 100,
      });
      // Three turns, each write durable (journaled) at the end of its own turn, none committed yet.
      for (let turn = 0; turn < 3; turn++) {
        expect(await writer.write(settlement())).toBe(true);
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(store.commits).toEqual([]);
      for (let wait = 0; wait < 100 && store.commits.length === 0; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(store.commits).toEqual([3]);
      await writer.close();

      // A reader does not wait for the delay: an hour's delay, and flushed() still resolves.
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(directory),
        journalCommitDelayMs: 3_600_000,
      });
      expect(await writer.write(settlement())).toBe(true);
      await writer.flushed();
      expect(store.commits).toEqual([3, 1]);
      expect(await countRows(raw)).toBe(4);
    });

    it("without a delay, commits a turn's writes on the next turn", async () => {
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(join(journalRoot, 'journal')),
        journalCommitDelayMs: 0,
      });
      expect(await writer.write(settlement())).toBe(true);
      for (let turn = 0; turn < 20 && store.commits.length === 0; turn++) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(store.commits).toEqual([1]);
    });

    it('removes a segment once all of it is committed, and leaves what the store never took for the next start', async () => {
      const directory = join(journalRoot, 'journal');
      // One byte per segment: every turn's append starts a new file.
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(directory, { segmentBytes: 1 }),
        retryInitialMs: 1,
        retryMaxMs: 5,
        closeTimeoutMs: 30,
      });
      for (let index = 0; index < 3; index++) expect(await writer.write(settlement())).toBe(true);
      await writer.flushed();
      expect(await countRows(raw)).toBe(3);
      for (let wait = 0; wait < 500 && readdirSync(directory).length > 0; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(readdirSync(directory)).toEqual([]);

      // The store goes down for good: the write is durable in the journal, and the writer gives up at close.
      store.failWith = () => new Error('connection refused');
      const stranded = settlement();
      expect(await writer.write(stranded)).toBe(true);
      await writer.close();
      expect(writer.stats.dropped).toBe(1);
      expect(readJournal(directory)).toEqual([stranded]);
      store.failWith = undefined;
      const drained = await new SettlementSpool(directory).drain((batch) => raw.settle(batch), {
        batchSize: 10,
        orphans: false,
      });
      expect(drained).toEqual({ settled: 1, rejected: 0, left: 0 });
      expect((await loggedIds(raw)).includes(stranded.log.requestId)).toBe(true);
      expect(await countRows(raw)).toBe(4);
    });

    it('gathers between the commits of a busy writer too, unless a response waits for the commit', async () => {
      const directory = join(journalRoot, 'journal');
      const journal = new SettlementJournal(directory);
      writer = new SettlementWriter(store, { journal, journalCommitDelayMs: 3_600_000 });
      // A reader forces the first commit, which waits at the gate while more settlements arrive.
      const release = closeGate();
      expect(await writer.write(settlement())).toBe(true);
      const firstFlushed = writer.flushed();
      for (let turn = 0; turn < 5 && store.calls === 0; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(store.calls).toBe(1);
      const during = [settlement(), settlement()];
      expect(await Promise.all(during.map((each) => writer.write(each)))).toEqual([true, true]);
      store.gate = undefined;
      release();
      await firstFlushed;
      // Journaled and not full: they gather (an hour here) instead of following the first commit at once.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(store.commits).toEqual([1]);

      // A settlement whose journal append fails while a commit is under way has its response wait for its commit:
      // that one follows at once.
      const releaseSecond = closeGate();
      const secondFlushed = writer.flushed();
      for (let turn = 0; turn < 5 && store.calls < 2; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(store.calls).toBe(2);
      const appendNormally = journal.append.bind(journal);
      journal.append = () => {
        throw new Error('disk full');
      };
      let failedOutcome: boolean | undefined;
      const failed = writer.write(settlement()).then((outcome) => {
        failedOutcome = outcome;
      });
      for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(writer.stats.journalFailures).toBe(1);
      store.gate = undefined;
      releaseSecond();
      await secondFlushed;
      for (let wait = 0; wait < 100 && failedOutcome === undefined; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(failedOutcome).toBe(true);
      await failed;
      expect(store.commits).toEqual([1, 2, 1]);

      // Once appends work again, a writer between commits gathers again.
      journal.append = appendNormally;
      const releaseThird = closeGate();
      const forced = writer.write(settlement()).then(() => writer.flushed());
      for (let turn = 0; turn < 20 && store.calls < 4; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(await writer.write(settlement())).toBe(true);
      store.gate = undefined;
      releaseThird();
      await forced;
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(store.commits).toEqual([1, 2, 1, 1]);
      await writer.flushed();
      expect(store.commits).toEqual([1, 2, 1, 1, 1]);
      expect(writer.stats).toMatchObject({ journaled: 5, journalFailures: 1, committed: 6 });
    });

    it('resolves a write at its commit when the journal cannot be written', async () => {
      // A file where the journal's directory should be: every append fails.
      const blocked = join(journalRoot, 'not-a-directory');
      writeFileSync(blocked, '');
      const errors: unknown[] = [];
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(join(blocked, 'journal')),
        // Responses wait for this commit, so it must not wait to gather more.
        journalCommitDelayMs: 3_600_000,
        onError: (error) => errors.push(error),
      });
      const release = closeGate();
      let outcome: boolean | undefined;
      const written = writer.write(settlement()).then((value) => {
        outcome = value;
      });
      for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
      expect(outcome).toBeUndefined();
      expect(errors.length).toBe(1);
      expect(writer.stats).toMatchObject({ journaled: 0, journalFailures: 1 });
      store.gate = undefined;
      release();
      await written;
      expect(outcome).toBe(true);
      expect(await countRows(raw)).toBe(1);
    });
  });

  describe('with a spool', () => {
    let spoolRoot: string;
    beforeEach(() => {
      spoolRoot = mkdtempSync(join(tmpdir(), 'tollgate-writer-spool-'));
    });
    afterEach(() => rmSync(spoolRoot, { recursive: true, force: true }));

    it('spools journaled settlements with their journal lines, written once', async () => {
      store.failWith = () => new Error('connection refused');
      const spool = new SettlementSpool(join(spoolRoot, 'spool'));
      const appended: (readonly string[] | undefined)[] = [];
      const appendToSpool = spool.append.bind(spool);
      spool.append = (settlements, encoded) => {
        appended.push(encoded);
        return appendToSpool(settlements, encoded);
      };
      const journalDirectory = join(spoolRoot, 'journal');
      writer = new SettlementWriter(store, {
        journal: new SettlementJournal(journalDirectory),
        journalCommitDelayMs: 0,
        retryInitialMs: 3_600_000,
        spool,
      });
      const written = [settlement(), settlement()];
      expect(await Promise.all(written.map((each) => writer.write(each)))).toEqual([true, true]);
      for (let wait = 0; wait < 100 && writer.stats.spooled < 2; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(writer.stats.spooled).toBe(2);
      const journalLines = readFileSync(join(journalDirectory, readdirSync(journalDirectory)[0]!), 'utf8')
        .split('\n')
        .slice(0, -1);
      expect(appended).toEqual([journalLines]);
      const spoolDirectory = join(spoolRoot, 'spool');
      const spooled = readdirSync(spoolDirectory).flatMap((name) =>
        readFileSync(join(spoolDirectory, name), 'utf8').split('\n').slice(0, -1),
      );
      expect(spooled).toEqual(journalLines);
      expect(spooled.map(settlementFromJson)).toEqual(written);
      store.failWith = undefined;
    });

    it('makes settlements durable on disk while the store is down, then settles each into it once', async () => {
      let down = true;
      store.failWith = () => (down ? new Error('connection refused') : undefined);
      const spool = new SettlementSpool(join(spoolRoot, 'spool'));
      writer = new SettlementWriter(store, { maxBatch: 4, maxBuffered: 10, retryInitialMs: 50, retryMaxMs: 50, spool });
      // More than the buffer holds, in one turn: what it cannot hold goes to the spool too. Nothing is dropped, and
      // nothing waits in memory.
      const during = Array.from({ length: 25 }, () => settlement());
      expect(await Promise.all(during.map((each) => writer.write(each)))).toEqual(Array(25).fill(true));
      expect(writer.stats).toMatchObject({ dropped: 0, spooled: 25, committed: 0 });
      expect(writer.buffered).toBe(0);
      expect(spool.pending).toBe(25);
      // A restarted process would find them: they are in the spool's files.
      const directory = join(spoolRoot, 'spool');
      const onDisk = readJournal(directory);
      expect(onDisk.map((each) => each.log.requestId).sort()).toEqual(during.map((each) => each.log.requestId).sort());
      down = false;
      // The store is back: the spool is drained on its timer, and after the next commit.
      const after = settlement();
      expect(await writer.write(after)).toBe(true);
      for (let wait = 0; wait < 200 && ((await loggedIds(raw)).length < 26 || spool.pending > 0); wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect((await loggedIds(raw)).sort()).toEqual([...during, after].map((each) => each.log.requestId).sort());
      expect(await countRows(raw)).toBe(26);
      expect(spool.pending).toBe(0);
    });

    it('spools what waits on a commit that hangs (a partition), and settles each once when it ends', async () => {
      let release = () => {};
      store.gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const spool = new SettlementSpool(join(spoolRoot, 'spool'));
      writer = new SettlementWriter(store, { retryInitialMs: 1, retryMaxMs: 20, spoolAfterMs: 20, spool });
      const first = [settlement(), settlement(), settlement()];
      // The first write's commit hangs; the next two queue behind it. All are durable within spoolAfterMs or two.
      const firstDone = writer.write(first[0]!);
      await new Promise((resolve) => setImmediate(resolve));
      const behind = [writer.write(first[1]!), writer.write(first[2]!)];
      expect(await Promise.all([firstDone, ...behind])).toEqual([true, true, true]);
      expect(store.commits).toEqual([]);
      // Written while the commit still hangs: the watchdog, re-armed, takes these too.
      const later = [settlement(), settlement()];
      expect(await Promise.all(later.map((each) => writer.write(each)))).toEqual([true, true]);
      expect(writer.stats.spooled).toBe(5);
      expect(store.commits).toEqual([]);
      release();
      store.gate = undefined;
      for (let wait = 0; wait < 200 && ((await loggedIds(raw)).length < 5 || spool.pending > 0); wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect((await loggedIds(raw)).sort()).toEqual([...first, ...later].map((each) => each.log.requestId).sort());
      expect(await countRows(raw)).toBe(5);
      expect(spool.pending).toBe(0);
      expect(readdirSync(join(spoolRoot, 'spool'))).toEqual([]);
    });

    it('close() spools what a store that stays down did not take', async () => {
      store.failWith = () => new Error('connection refused');
      const spool = new SettlementSpool(join(spoolRoot, 'spool'));
      writer = new SettlementWriter(store, { retryInitialMs: 1, retryMaxMs: 5, closeTimeoutMs: 30, spool });
      const pending = [writer.write(settlement()), writer.write(settlement())];
      await writer.close();
      expect(await Promise.all(pending)).toEqual([true, true]);
      expect(writer.stats).toMatchObject({ dropped: 0, spooled: 2 });
      store.failWith = undefined;
      const drained = await new SettlementSpool(join(spoolRoot, 'spool')).drain((batch) => raw.settle(batch), {
        batchSize: 10,
        orphans: false,
      });
      expect(drained).toEqual({ settled: 2, rejected: 0, left: 0 });
      expect(await countRows(raw)).toBe(2);
    });
  });
});

describe('SettlementWriter durability', () => {
  let tree: TranspiledTree;
  let directory: string;

  beforeAll(async () => {
    directory = mkdtempSync(join(tmpdir(), 'tollgate-writer-'));
    tree = await transpileForChild(['src/metering/settlement-writer-crash.child.ts']);
  });

  afterAll(async () => {
    await tree.remove();
    rmSync(directory, { recursive: true, force: true });
  });

  /** Runs the crash child until it says its writes are durable, kills it with SIGKILL, and returns what it said. */
  async function writeThenKill(path: string, count: number, journal?: string): Promise<string> {
    const child = spawn(
      process.execPath,
      [
        tree.pathOf('src/metering/settlement-writer-crash.child.ts'),
        path,
        `${count}`,
        ...(journal === undefined ? [] : [journal]),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
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
    expect(await exit, stderr).toBe('SIGKILL');
    return said;
  }

  /** Checks that the `count` settlements of the crash child are in the file, each once, with their charges. */
  function expectAllSettled(path: string, count: number): void {
    const database = new Database(path, { readonly: true });
    try {
      const logs = database.prepare("select count(*) as n from request_log where request_id like 'crash-%'").get();
      expect(logs).toEqual({ n: count });
      const events = database
        .prepare("select count(*) as n, sum(amount) as total from usage_events where request_id like 'crash-%'")
        .get();
      // The child charges index + 1 nano-units for settlement `index`.
      expect(events).toEqual({ n: count, total: (count * (count + 1)) / 2 });
      const wallet = database.prepare("select balance from wallets where tenant_id = 'ten_crash'").get();
      expect(wallet).toEqual({ balance: -(count * (count + 1)) / 2 });
    } finally {
      database.close();
    }
  }

  it('keeps committed settlements after the process is killed with SIGKILL', async () => {
    const path = join(directory, 'crash.db');
    const count = 2500;
    expect(await writeThenKill(path, count)).toBe('committed');
    expectAllSettled(path, count);
  });

  it('keeps journaled settlements whose commit never ended after SIGKILL; the next start settles each once', async () => {
    const path = join(directory, 'journaled.db');
    const journal = join(directory, 'journal');
    const count = 2500;
    expect(await writeThenKill(path, count, journal)).toBe('committed');
    // Nothing reached the store: the child's commits never ended.
    const store = await createStore(`sqlite://${path}`);
    try {
      expect(await store.listRequestLogs({ tenantId: 'ten_crash' })).toEqual([]);
      // What a starting gateway does with the journal of a process that is gone, twice: the second finds nothing.
      const drain = () =>
        new SettlementSpool(journal).drain((batch) => store.settle(batch), { batchSize: 1000, orphans: true });
      expect(await drain()).toEqual({ settled: count, rejected: 0, left: 0 });
      expect(await drain()).toEqual({ settled: 0, rejected: 0, left: 0 });
    } finally {
      await store.close();
    }
    expectAllSettled(path, count);
    expect(readdirSync(journal)).toEqual([]);
  });
});
