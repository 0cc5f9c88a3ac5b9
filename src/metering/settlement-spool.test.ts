import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { temporaryDirectory } from '../../test/support/temporary-directory.js';
import { requestLogFixture, settlementOf, usageEventFixture } from '../store/ledger-fixtures.js';
import { settlementFromJson, settlementToJson } from '../store/ledger-rows.js';
import type { Settlement } from '../store/ledger-store.js';
import { SettlementSpool } from './settlement-spool.js';

function spoolDirectory(): string {
  return join(temporaryDirectory('tollgate-spool-'), 'spool');
}

let sequence = 0;
function rated(requestId = `req-spool-${++sequence}`): Settlement {
  return {
    ...settlementOf(
      usageEventFixture({
        requestId,
        tenantId: 'ten_spool',
        // Past 2^53 nano-units: bigints must come back exactly.
        inputListAmount: 2n ** 60n + 7n,
        amount: 2n ** 60n + 7n,
      }),
    ),
    reservation: { tenantId: 'ten_spool', amount: 2n ** 55n + 1n },
    checkpointRequestId: requestId,
  };
}

function unrated(requestId = `req-spool-${++sequence}`): Settlement {
  return {
    log: requestLogFixture({
      requestId,
      tenantId: 'ten_spool',
      status: 502,
      errorCode: 'upstream_error',
      model: null,
      ttftMs: null,
    }),
  };
}

/** A `settle` that records every batch it takes, and fails while `refuse` says so. */
function recordingSettle(refuse: (batch: readonly Settlement[]) => boolean = () => false) {
  const taken: Settlement[] = [];
  /** The lines handed with the settlements taken, in order. */
  const takenLines: string[] = [];
  let calls = 0;
  return {
    taken,
    takenLines,
    get calls() {
      return calls;
    },
    settle: async (batch: readonly Settlement[], encoded: readonly string[]) => {
      calls++;
      if (refuse(batch)) throw new Error('refused');
      taken.push(...batch);
      takenLines.push(...encoded);
    },
  };
}

/** A process id that no process has now: a child's, after it exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
}

describe('SettlementSpool', () => {
  it('encodes settlements with bigints past 2^53 and decodes them to equal values', () => {
    for (const settlement of [rated(), unrated()]) {
      expect(settlementFromJson(settlementToJson(settlement))).toEqual(settlement);
    }
    expect(settlementToJson(rated())).not.toContain('\n');
  });

  it('writes the text a generic bigint replacer writes, also for a bigint in a field it does not expect', () => {
    const generic = (settlement: Settlement) =>
      JSON.stringify(settlement, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
    const unexpected = {
      ...rated(),
      log: { ...rated().log, latencyMs: (2n ** 60n) as unknown as number },
    } as Settlement;
    // Unrated (no bigint expected, stringified as it is) with one anyway.
    const unexpectedUnrated = {
      ...unrated(),
      log: { ...unrated().log, latencyMs: (2n ** 60n) as unknown as number },
    } as Settlement;
    for (const settlement of [rated(), unrated(), unexpected, unexpectedUnrated]) {
      expect(settlementToJson(settlement)).toBe(generic(settlement));
    }
  });

  it('keeps appended settlements on disk and settles them all, in batches, then removes the segment', async () => {
    const directory = spoolDirectory();
    const spool = new SettlementSpool(directory);
    const written = [rated(), unrated(), rated(), rated(), unrated()];
    await spool.append(written.slice(0, 2));
    await spool.append(written.slice(2));
    expect(spool.pending).toBe(5);
    // A second spool object over the same files (a restart) finds them as its own process's.
    const store = recordingSettle();
    const result = await new SettlementSpool(directory).drain(store.settle, { batchSize: 2, orphans: false });
    expect(result).toEqual({ settled: 5, rejected: 0, left: 0 });
    expect(store.taken).toEqual(written);
    // Each with the line it was read from, for a store that sends lines on instead of objects.
    expect(store.takenLines).toEqual(written.map(settlementToJson));
    expect(store.calls).toBe(3);
    expect(readdirSync(directory)).toEqual([]);
    // The writing spool's own count: its segment was drained by the other object, so its next drain finds none.
    expect((await spool.drain(store.settle, { batchSize: 2, orphans: false })).settled).toBe(0);
    expect(spool.pending).toBe(0);
  });

  it('writes the lines it is handed, and refuses lines that do not match the settlements, writing nothing', async () => {
    const directory = spoolDirectory();
    const spool = new SettlementSpool(directory);
    const written = [rated(), unrated()];
    await expect(spool.append(written, [settlementToJson(written[0]!)])).rejects.toThrow(RangeError);
    expect(spool.pending).toBe(0);
    await spool.append(written, written.map(settlementToJson));
    const store = recordingSettle();
    await spool.drain(store.settle, { batchSize: 10, orphans: false });
    expect(store.taken).toEqual(written);
  });

  it('keeps everything while the store is down, and settles it once the store is back', async () => {
    const directory = spoolDirectory();
    const spool = new SettlementSpool(directory);
    const written = Array.from({ length: 7 }, () => rated());
    await spool.append(written);
    let down = true;
    const store = recordingSettle(() => down);
    expect(await spool.drain(store.settle, { batchSize: 4, orphans: false })).toEqual({
      settled: 0,
      rejected: 0,
      left: 7,
    });
    expect(spool.pending).toBe(7);
    // Appends while a drain is due go to a new segment; both are drained.
    const later = rated();
    await spool.append([later]);
    down = false;
    expect(await spool.drain(store.settle, { batchSize: 4, orphans: false })).toEqual({
      settled: 8,
      rejected: 0,
      left: 0,
    });
    expect(new Set(store.taken.map((each) => each.log.requestId))).toEqual(
      new Set([...written, later].map((each) => each.log.requestId)),
    );
    expect(spool.pending).toBe(0);
  });

  it('moves a settlement the store refuses while it takes the others aside, and settles the rest', async () => {
    const directory = spoolDirectory();
    const spool = new SettlementSpool(directory);
    const poison = unrated('poison');
    const written = [rated(), rated(), poison, rated(), rated(), rated()];
    await spool.append(written);
    const store = recordingSettle((batch) => batch.some((each) => each.log.requestId === 'poison'));
    expect(await spool.drain(store.settle, { batchSize: 4, orphans: false })).toEqual({
      settled: 5,
      rejected: 1,
      left: 0,
    });
    expect(store.taken.map((each) => each.log.requestId)).toEqual(
      written.filter((each) => each !== poison).map((each) => each.log.requestId),
    );
    const rejected = readFileSync(join(directory, 'rejected.ndjson'), 'utf8').trim().split('\n');
    expect(rejected.map(settlementFromJson)).toEqual([poison]);
    expect(readdirSync(directory)).toEqual(['rejected.ndjson']);
  });

  it('skips a last line cut short by a crash mid-append, and removes a rewrite a crash left behind', async () => {
    const directory = spoolDirectory();
    mkdirSync(directory, { recursive: true });
    const whole = [rated(), unrated()];
    const torn = settlementToJson(rated()).slice(0, 40);
    const segment = join(directory, `${process.pid}-1-abcd.ndjson`);
    writeFileSync(segment, `${whole.map(settlementToJson).join('\n')}\n${torn}`);
    // Left by a crash in the middle of an earlier rewrite of the segment.
    writeFileSync(`${segment}.tmp`, settlementToJson(whole[0]!).slice(0, 10));
    const store = recordingSettle();
    const result = await new SettlementSpool(directory).drain(store.settle, { batchSize: 10, orphans: false });
    expect(result).toEqual({ settled: 2, rejected: 0, left: 0 });
    expect(store.taken).toEqual(whole);
    expect(readdirSync(directory)).toEqual([]);
  });

  it("drains a dead process's segments only when asked for orphans, and never a live process's", async () => {
    const directory = spoolDirectory();
    mkdirSync(directory, { recursive: true });
    const dead = rated();
    const live = rated();
    const deadSegment = `${deadPid()}-1-aaaa.ndjson`;
    const liveSegment = `${process.ppid}-2-bbbb.ndjson`;
    writeFileSync(join(directory, deadSegment), `${settlementToJson(dead)}\n`);
    writeFileSync(join(directory, liveSegment), `${settlementToJson(live)}\n`);
    const store = recordingSettle();
    const spool = new SettlementSpool(directory);
    expect((await spool.drain(store.settle, { batchSize: 10, orphans: false })).settled).toBe(0);
    expect((await spool.drain(store.settle, { batchSize: 10, orphans: true })).settled).toBe(1);
    expect(store.taken).toEqual([dead]);
    expect(existsSync(join(directory, deadSegment))).toBe(false);
    expect(existsSync(join(directory, liveSegment))).toBe(true);
  });

  it("drains a segment of a process killed with SIGKILL and never reaped (a zombie), as a dead process's", async () => {
    // `sh` starts a `sleep` in the background, prints its pid and becomes another `sleep` (exec), which never reaps
    // children: once the first sleep is killed it stays a zombie, which signal 0 still reaches.
    const parent = spawn('sh', ['-c', 'sleep 30 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = Number(
        await new Promise<string>((resolve) => parent.stdout.once('data', (data) => resolve(`${data}`))),
      );
      // Until `sh` has become `sleep` it would reap the killed child itself.
      await waitFor(() => readFileSync(`/proc/${parent.pid}/comm`, 'utf8') === 'sleep\n');
      process.kill(zombie, 'SIGKILL');
      await waitFor(() => readFileSync(`/proc/${zombie}/stat`, 'utf8').includes(') Z '));
      expect(() => process.kill(zombie, 0)).not.toThrow();
      const directory = spoolDirectory();
      mkdirSync(directory, { recursive: true });
      const left = rated();
      writeFileSync(join(directory, `${zombie}-1-cccc.ndjson`), `${settlementToJson(left)}\n`);
      const store = recordingSettle();
      expect((await new SettlementSpool(directory).drain(store.settle, { batchSize: 10, orphans: true })).settled).toBe(
        1,
      );
      expect(store.taken).toEqual([left]);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
