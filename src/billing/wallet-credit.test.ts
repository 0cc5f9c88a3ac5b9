import { describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/gateway-error.js';
import { MAX_NANO } from '../store/ledger-store.js';
import { openSqliteStore } from '../store/sqlite-store.js';
import { parseNano } from './nano.js';
import { addWalletCredit, configureWalletCredit, type WalletCredit } from './wallet-credit.js';

async function walletOf(balance: bigint) {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const tenant = await store.createTenant('wallet');
  await store.configureWallet(tenant.id, { mode: 'prepaid', currency: 'CNY', creditLimit: 0n });
  const topUp = (amount: bigint, idempotencyKey: string | null = null): WalletCredit => ({
    tenantId: tenant.id,
    kind: 'topup',
    amount,
    currency: 'CNY',
    idempotencyKey,
    note: null,
  });
  if (balance !== 0n) await addWalletCredit(store, topUp(balance));
  return { store, tenantId: tenant.id, topUp };
}

async function refusal(promise: Promise<unknown>) {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(GatewayError);
  return error as GatewayError;
}

describe('parseNano', () => {
  it('takes every amount the ledger holds and refuses the rest', () => {
    expect(parseNano('9223372036.854775807')).toBe(MAX_NANO);
    expect(parseNano('-9223372036.854775807', { allowNegative: true })).toBe(-MAX_NANO);
    expect(() => parseNano('9223372036.854775808')).toThrow(/at most 9223372036.854775807/);
    expect(() => parseNano('99999999999999999999999')).toThrow(/at most/);
    expect(() => parseNano('-9223372036.854775808', { allowNegative: true })).toThrow(/at least/);
  });
});

describe('addWalletCredit', () => {
  it('refuses a top-up that would carry the balance past the ledger, and writes nothing', async () => {
    const { store, tenantId, topUp } = await walletOf(9_000_000_000n * 1_000_000_000n);
    const error = await refusal(addWalletCredit(store, topUp(9_000_000_000n * 1_000_000_000n)));
    expect(error).toMatchObject({ status: 400, code: 'balance_limit_exceeded', param: 'amount' });
    expect((await store.getWallet(tenantId))?.balance).toBe(9_000_000_000n * 1_000_000_000n);
    expect(await store.listWalletTransactions(tenantId)).toHaveLength(1);
    // Up to the last nano-unit is still a balance.
    const rest = MAX_NANO - 9_000_000_000n * 1_000_000_000n;
    expect((await addWalletCredit(store, topUp(rest))).created).toBe(true);
    expect((await store.getWallet(tenantId))?.balance).toBe(MAX_NANO);
    await store.close();
  });

  it('counts the credit limit with the balance', async () => {
    const { store, tenantId, topUp } = await walletOf(11n);
    const postpaid = (creditLimit: bigint) => ({ mode: 'postpaid' as const, currency: 'CNY', creditLimit });
    const error = await refusal(configureWalletCredit(store, tenantId, postpaid(MAX_NANO - 10n)));
    expect(error).toMatchObject({ status: 400, code: 'balance_limit_exceeded', param: 'credit_limit' });
    expect(await store.getWallet(tenantId)).toMatchObject({ mode: 'prepaid', balance: 11n, creditLimit: 0n });
    expect(await configureWalletCredit(store, tenantId, postpaid(MAX_NANO - 11n))).toMatchObject({
      mode: 'postpaid',
      balance: 11n,
      creditLimit: MAX_NANO - 11n,
    });
    expect((await refusal(addWalletCredit(store, topUp(1n)))).code).toBe('balance_limit_exceeded');
    await store.close();
  });

  it('lets through only the concurrent top-ups the ledger holds together', async () => {
    const { store, tenantId, topUp } = await walletOf(0n);
    const quarter = MAX_NANO / 4n;
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => addWalletCredit(store, topUp(quarter))));
    const refused = results.filter((result) => result.status === 'rejected');
    expect(refused).toHaveLength(4);
    for (const result of refused) expect(result.reason).toMatchObject({ code: 'balance_limit_exceeded' });
    expect((await store.getWallet(tenantId))?.balance).toBe(4n * quarter);
    expect(await store.listWalletTransactions(tenantId)).toHaveLength(4);
    await store.close();
  });

  it('replays a reused Idempotency-Key for the same transaction and refuses it for another (409)', async () => {
    const { store, tenantId, topUp } = await walletOf(0n);
    const first = await addWalletCredit(store, topUp(1_000_000_000n, 'k1'));
    const again = await addWalletCredit(store, topUp(1_000_000_000n, 'k1'));
    expect(again).toEqual({ record: first.record, created: false });
    const error = await refusal(addWalletCredit(store, topUp(2_000_000_000n, 'k1')));
    expect(error).toMatchObject({ status: 409, code: 'idempotency_key_reused' });
    const refund = await refusal(addWalletCredit(store, { ...topUp(1_000_000_000n, 'k1'), kind: 'refund' }));
    expect(refund.code).toBe('idempotency_key_reused');
    expect((await store.getWallet(tenantId))?.balance).toBe(1_000_000_000n);
    await store.close();
  });

  it('replays a reused key even when the transaction it names would no longer fit', async () => {
    const { store, topUp } = await walletOf(0n);
    const first = await addWalletCredit(store, topUp(MAX_NANO - 5n, 'big'));
    expect(await addWalletCredit(store, topUp(MAX_NANO - 5n, 'big'))).toEqual({ record: first.record, created: false });
    const other = await refusal(addWalletCredit(store, topUp(MAX_NANO - 4n, 'big')));
    expect(other.code).toBe('idempotency_key_reused');
    await store.close();
  });
});
