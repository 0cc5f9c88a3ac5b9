/**
 * The SQLite store in embedded mode: wallet reservations held in the owning process's memory (the same guarantees
 * as in the rows), and settlement transactions on the settle thread. The settle thread's worker script is the
 * compiled one in `dist/` (`npm test` builds first): if it is missing, `settleOnThread()` returns false and those
 * tests fail rather than pass vacuously.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { settlementOf, usageEventFixture } from './ledger-fixtures.js';
import { settlementToJson } from './ledger-rows.js';
import type { RatedSettlement } from './ledger-store.js';
import { openSqliteStore, type SqliteStore } from './sqlite-store.js';

let store: SqliteStore;
let tenantId: string;
let databasePath: string;

beforeEach(async () => {
  databasePath = path.join(mkdtempSync(path.join(tmpdir(), 'tg-held-')), 'store.db');
  store = openSqliteStore(databasePath);
  await store.migrate();
  store.useProcessReservations();
  tenantId = (await store.createTenant('t')).id;
  await store.addWalletTransaction({
    tenantId,
    kind: 'topup',
    amount: 2_000n,
    currency: 'CNY',
    idempotencyKey: null,
    note: null,
  });
});
afterEach(async () => store.close());

/** A settled chat request charged `amount`, with `reserved` held for it at admission. */
function settlement(requestId: string, amount: bigint, reserved: bigint): RatedSettlement {
  const event = usageEventFixture({
    requestId,
    tenantId,
    model: 'm',
    deployment: null,
    receivedAt: Date.UTC(2026, 10, 29, 12),
    inputTokens: 10,
    outputTokens: 5,
    inputListAmount: amount,
  });
  return settlementOf(event, { reservation: { tenantId, amount: reserved } });
}

/** Counts event-loop turns from now until `stop()`, which returns the count. */
function countTurns(): { stop(): number } {
  let turns = 0;
  let counting = true;
  const tick = (): void => {
    turns++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      counting = false;
      return turns;
    },
  };
}

describe('process-held reservations', () => {
  it('let exactly as many of 200 concurrent reservations through as the wallet covers, without writing the row', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, () => store.reserve(tenantId, 100n)));
    expect(results.filter(Boolean)).toHaveLength(20);
    expect((await store.getWallet(tenantId))?.reserved).toBe(2_000n);
    const row = await store.kysely
      .selectFrom('wallets')
      .select('reserved')
      .where('tenant_id', '=', tenantId)
      .executeTakeFirst();
    expect(BigInt(row?.reserved ?? -1)).toBe(0n);
  });

  it('are released by the settlement that commits their charge, and by release', async () => {
    expect(await store.reserve(tenantId, 1_500n)).toBe(true);
    expect(await store.reserve(tenantId, 600n)).toBe(false);
    await store.settle([settlement('req_1', 0n, 1_000n)]);
    expect((await store.getWallet(tenantId))?.reserved).toBe(500n);
    await store.release(tenantId, 500n);
    expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
    expect(await store.reserve(tenantId, 2_000n)).toBe(true);
    await store.resetReservations();
    expect((await store.getWallet(tenantId))?.reserved).toBe(0n);
  });

  it('see top-ups written by another connection at once', async () => {
    expect(await store.reserve(tenantId, 2_500n)).toBe(false);
    const other = openSqliteStore((store as unknown as { database: { name: string } }).database.name);
    await other.addWalletTransaction({
      tenantId,
      kind: 'topup',
      amount: 1_000n,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
    await other.close();
    expect(await store.reserve(tenantId, 2_500n)).toBe(true);
  });
});

/** The database file's own page count (its header's "in-header database size"), which only a checkpoint grows. */
function databaseFilePages(): number {
  return readFileSync(databasePath).readUInt32BE(28);
}

async function requestLogCount(requestId: string): Promise<number> {
  const rows = await store.kysely
    .selectFrom('request_log')
    .select('request_id')
    .where('request_id', '=', requestId)
    .execute();
  return rows.length;
}

describe('the funds a process-held reservation is checked against', () => {
  it('fall with every charge at once, and a refusal re-reads them (a duplicate charged nothing)', async () => {
    expect(await store.reserve(tenantId, 100n)).toBe(true);
    await store.release(tenantId, 100n);
    await store.settle([settlement('req_a', 1_000n, 0n)]);
    expect(await store.reserve(tenantId, 1_001n)).toBe(false);
    // Settled again (a retry): the store charges it once; the refusal path finds the 1,000 left.
    await store.settle([settlement('req_a', 1_000n, 0n)]);
    expect(await store.reserve(tenantId, 1_000n)).toBe(true);
    expect((await store.getWallet(tenantId))?.balance).toBe(1_000n);
  });

  it("follow this connection's wallet writes that take money or credit away", async () => {
    await store.configureWallet(tenantId, { mode: 'postpaid', currency: 'CNY', creditLimit: 5_000n });
    expect(await store.reserve(tenantId, 100n)).toBe(true);
    await store.release(tenantId, 100n);
    await store.configureWallet(tenantId, { mode: 'prepaid', currency: 'CNY', creditLimit: 0n });
    expect(await store.reserve(tenantId, 2_001n)).toBe(false);
    await store.addWalletTransaction({
      tenantId,
      kind: 'adjustment',
      amount: -1_500n,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
    expect(await store.reserve(tenantId, 501n)).toBe(false);
    expect(await store.reserve(tenantId, 500n)).toBe(true);
  });
});

describe('the SQLite settle thread', () => {
  it('commits on its own connection, once per request id, and releases the reservation after the commit', async () => {
    expect(store.settleOnThread()).toBe(true);
    expect(await store.reserve(tenantId, 1_500n)).toBe(true);
    await store.settle([settlement('req_1', 300n, 1_000n)]);
    let wallet = await store.getWallet(tenantId);
    expect(wallet?.balance).toBe(1_700n);
    expect(wallet?.reserved).toBe(500n);
    // A retried settlement (the writer retries after a failed call) charges nothing more.
    await store.settle([settlement('req_1', 300n, 0n)]);
    wallet = await store.getWallet(tenantId);
    expect(wallet?.balance).toBe(1_700n);
    expect(await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2030, 0, 1) })).toEqual({
      amount: 300n,
      count: 1,
    });
    expect(await requestLogCount('req_1')).toBe(1);
  });

  it('never counts a charge still in flight as money: a refusal that reads the row meanwhile nets it out', async () => {
    expect(store.settleOnThread()).toBe(true);
    expect(await store.reserve(tenantId, 1_500n)).toBe(true);
    // Another connection holds the write lock, so the settle thread's commit waits (busy timeout) in flight.
    const blocker = new Database(databasePath);
    blocker.exec('begin immediate');
    const settled = store.settle([settlement('req_flight', 1_500n, 1_500n)]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Refused (2,000 − 1,500 held < 600), and the refusal reads the row, which does not hold the charge yet.
    expect(await store.reserve(tenantId, 600n)).toBe(false);
    blocker.exec('commit');
    blocker.close();
    await settled;
    expect((await store.getWallet(tenantId))?.balance).toBe(500n);
    // 500 left: without netting out the charge the row read before the commit would have let 600 through.
    expect(await store.reserve(tenantId, 600n)).toBe(false);
    expect(await store.reserve(tenantId, 500n)).toBe(true);
  });

  it('commits a batch sent as its journal lines exactly as the objects: one string posted, amounts past 2^53 kept', async () => {
    expect(store.settleOnThread()).toBe(true);
    const big = 2n ** 60n + 7n;
    await store.addWalletTransaction({
      tenantId,
      kind: 'topup',
      amount: big,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
    const batch = [settlement('req_line_1', big, big), settlement('req_line_2', 300n, 0n)];
    expect(await store.reserve(tenantId, big)).toBe(true);
    const posted = vi.spyOn(Worker.prototype, 'postMessage');
    try {
      await store.settle(batch, batch.map(settlementToJson));
      const sent = posted.mock.calls.map(([message]) => message as Record<string, unknown>);
      expect(sent).toHaveLength(1);
      expect(sent[0]).not.toHaveProperty('batch');
      expect(typeof sent[0]!.lines).toBe('string');
    } finally {
      posted.mockRestore();
    }
    const wallet = await store.getWallet(tenantId);
    expect(wallet?.balance).toBe(2_000n - 300n);
    expect(wallet?.reserved).toBe(0n);
    expect(await store.sumUsageEvents({ tenantId, start: 0, end: Date.UTC(2030, 0, 1) })).toEqual({
      amount: big + 300n,
      count: 2,
    });
    expect(await requestLogCount('req_line_1')).toBe(1);
    expect(await requestLogCount('req_line_2')).toBe(1);
  });

  it('saves stream checkpoints on the thread, in order with settlements, while the event loop goes on', async () => {
    expect(store.settleOnThread()).toBe(true);
    const ended = settlement('req_cp_ended', 40n, 0n);
    const live = settlement('req_cp_live', 70n, 0n);
    const checkpointOf = (each: RatedSettlement) => ({
      requestId: each.log.requestId,
      event: usageEventFixture({ requestId: each.log.requestId, tenantId, inputListAmount: 2n ** 60n }),
      reservation: 2n ** 55n + 1n,
      updatedAt: 1_700_000_000_123,
    });
    // Another connection holds the write lock: both requests wait for it on the settle thread, in the order sent.
    const blocker = new Database(databasePath);
    blocker.exec('begin immediate');
    const posted = vi.spyOn(Worker.prototype, 'postMessage');
    const turns = countTurns();
    let saved: Promise<void>;
    let settled: Promise<void>;
    try {
      saved = store.saveCheckpoints([checkpointOf(ended), checkpointOf(live)]);
      // The stream that ends settles after its checkpoint was sent: the thread deletes it in that order.
      settled = store.settle([{ ...ended, checkpointRequestId: ended.log.requestId }]);
      // Both went to the settle thread, checkpoints first; none was written on this thread's connection.
      const sent = posted.mock.calls.map(([message]) => Object.keys(message as object).sort());
      expect(sent).toEqual([
        ['checkpoints', 'id'],
        ['batch', 'id'],
      ]);
    } finally {
      posted.mockRestore();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(turns.stop()).toBeGreaterThan(5);
    blocker.exec('commit');
    blocker.close();
    await saved;
    await settled;
    const checkpoints = await store.listCheckpoints();
    expect(checkpoints).toEqual([checkpointOf(live)]);
  });

  it('refuses journal lines that do not match the batch, committing nothing', async () => {
    expect(store.settleOnThread()).toBe(true);
    const batch = [settlement('req_mismatch_1', 100n, 0n), settlement('req_mismatch_2', 100n, 0n)];
    await expect(store.settle(batch, [settlementToJson(batch[0]!)])).rejects.toThrow(RangeError);
    expect(await requestLogCount('req_mismatch_1')).toBe(0);
    expect((await store.getWallet(tenantId))?.balance).toBe(2_000n);
  });

  it('rolls a failing transaction back and rejects, writing nothing of its batch', async () => {
    expect(store.settleOnThread()).toBe(true);
    const bad = settlement('req_bad', 100n, 0n);
    // The store refuses an event without a tier (NOT NULL): the whole batch must roll back.
    (bad.rating as { tier: string | null }).tier = null;
    await expect(store.settle([settlement('req_ok', 100n, 0n), bad])).rejects.toThrow(/NOT NULL/);
    expect(await requestLogCount('req_ok')).toBe(0);
    expect((await store.getWallet(tenantId))?.balance).toBe(2_000n);
  });

  it('leaves the event loop free while a large batch commits', async () => {
    expect(store.settleOnThread()).toBe(true);
    const batch = Array.from({ length: 20_000 }, (_, index) => settlement(`req_${index}`, 1n, 0n));
    const turns = countTurns();
    await store.settle(batch);
    // On this thread the transaction would run synchronously: no event-loop turn between its start and its end.
    expect(turns.stop()).toBeGreaterThan(5);
    expect((await store.getWallet(tenantId))?.balance).toBe(2_000n - 20_000n);
  });

  it('has the checkpoint thread copy committed pages into the database file', async () => {
    expect(store.settleOnThread()).toBe(true);
    const pagesBefore = databaseFilePages();
    // ~1,500 WAL pages: far below the settle connection's automatic checkpoint, so only the checkpoint thread
    // (a passive checkpoint every 250 ms) moves them into the file.
    await store.settle(Array.from({ length: 2_000 }, (_, index) => settlement(`req_ckpt_${index}`, 1n, 0n)));
    const deadline = Date.now() + 5_000;
    while (databaseFilePages() <= pagesBefore && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(databaseFilePages()).toBeGreaterThan(pagesBefore);
  });

  it('settles on the main connection again when the thread dies', async () => {
    expect(store.settleOnThread()).toBe(true);
    const thread = (store as unknown as { settleThread: { worker: { terminate(): Promise<number> } } }).settleThread;
    await thread.worker.terminate();
    await store.settle([settlement('req_after', 50n, 0n)]);
    expect((await store.getWallet(tenantId))?.balance).toBe(1_950n);
    expect(await requestLogCount('req_after')).toBe(1);
  });
});
