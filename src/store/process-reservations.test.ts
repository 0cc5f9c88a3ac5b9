/** Wallet reservations held in the owning process's memory (embedded mode): the same guarantees as in the rows. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Settlement } from './ledger-store.js';
import { openSqliteStore, type SqliteStore } from './sqlite-store.js';

let store: SqliteStore;
let tenantId: string;

beforeEach(async () => {
  store = openSqliteStore(path.join(mkdtempSync(path.join(tmpdir(), 'tg-held-')), 'store.db'));
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

function settlement(requestId: string, reserved: bigint): Settlement {
  return {
    log: {
      requestId,
      tenantId,
      keyId: null,
      endpoint: 'chat',
      model: 'm',
      deployment: null,
      status: 200,
      errorCode: null,
      stream: false,
      promptTokens: 0,
      cachedTokens: 0,
      completionTokens: 0,
      reasoningTokens: 0,
      usageEstimated: false,
      latencyMs: 1,
      ttftMs: null,
      attempts: 1,
      createdAt: Date.now(),
    },
    reservation: { tenantId, amount: reserved },
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
    await store.settle([settlement('req_1', 1_000n)]);
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
