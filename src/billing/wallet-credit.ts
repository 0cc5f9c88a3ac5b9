/**
 * Credits and debits an operator writes to a tenant's wallet (top-ups, refunds, adjustments), and its credit limit:
 * the rules the admin API and the CLI's store mode share. A write that would carry the balance, or the balance plus
 * the credit limit, outside what the ledger's 64-bit columns hold is refused and changes nothing; an
 * `Idempotency-Key` replays its first transaction, and is refused when reused for a different one.
 */
import { GatewayError, InvalidRequestError } from '../errors/gateway-error.js';
import type {
  LedgerStore,
  Nano,
  NewWalletTransaction,
  WalletRecord,
  WalletTransactionRecord,
} from '../store/ledger-store.js';
import { formatNano, MAX_NANO } from './nano.js';

/** 409: an `Idempotency-Key` already used by this tenant for a transaction with another kind, amount or currency. */
export class IdempotencyKeyReusedError extends GatewayError {
  constructor(key: string, first: WalletTransactionRecord) {
    super(
      409,
      'invalid_request_error',
      'idempotency_key_reused',
      `The Idempotency-Key '${key}' was already used for a ${first.kind} of ${formatNano(first.amount)} ` +
        `${first.currency} (${first.id}); use a new key for a different transaction.`,
      false,
    );
  }
}

/** A wallet transaction to write; `amount` is already parsed and within ±`MAX_NANO`. */
export type WalletCredit = Omit<NewWalletTransaction, 'createdAt'>;

/**
 * Writes `credit` and moves the balance. With an idempotency key already used by the tenant: the first transaction
 * (`created: false`) if it is the same one, else `IdempotencyKeyReusedError`. Throws `InvalidRequestError`
 * (`balance_limit_exceeded`, param `amount`) when the balance would leave the ledger's range.
 *
 * The range check reads the wallet before the write: two top-ups racing each other near the limit can still pass it
 * together. The store's upsert does not bound the sum yet (see `LedgerStore.addWalletTransaction`).
 */
export async function addWalletCredit(
  store: LedgerStore,
  credit: WalletCredit,
): Promise<{ record: WalletTransactionRecord; created: boolean }> {
  const wallet = await store.getWallet(credit.tenantId);
  if (wallet !== undefined && !balanceFits(wallet.balance + credit.amount, wallet.creditLimit)) {
    // A retry of a transaction already written is answered as any retry, not refused for the balance it made.
    const first = await firstWithKey(store, credit);
    if (first !== undefined) return { record: sameOrThrow(credit, first), created: false };
    throw new InvalidRequestError(
      `This ${credit.kind} would take the balance to ${formatNano(wallet.balance + credit.amount)} ${credit.currency}` +
        `${wallet.creditLimit === 0n ? '' : ` (credit limit ${formatNano(wallet.creditLimit)})`}, beyond the ` +
        `largest the ledger holds, ${formatNano(MAX_NANO)}.`,
      { param: 'amount', code: 'balance_limit_exceeded' },
    );
  }
  const written = await store.addWalletTransaction(credit);
  if (!written.created) sameOrThrow(credit, written.record);
  return written;
}

/**
 * Throws `InvalidRequestError` (`balance_limit_exceeded`, param `credit_limit`) when the wallet's balance plus
 * `creditLimit` would leave the ledger's range: what a postpaid tenant may spend is computed as that sum.
 */
export function checkCreditLimitFits(wallet: WalletRecord | undefined, creditLimit: Nano): void {
  const balance = wallet?.balance ?? 0n;
  if (balanceFits(balance, creditLimit)) return;
  throw new InvalidRequestError(
    `A credit limit of ${formatNano(creditLimit)} on a balance of ${formatNano(balance)} goes beyond the largest ` +
      `amount the ledger holds, ${formatNano(MAX_NANO)}.`,
    { param: 'credit_limit', code: 'balance_limit_exceeded' },
  );
}

function balanceFits(balance: Nano, creditLimit: Nano): boolean {
  return balance >= -MAX_NANO && balance + creditLimit <= MAX_NANO;
}

async function firstWithKey(store: LedgerStore, credit: WalletCredit): Promise<WalletTransactionRecord | undefined> {
  if (credit.idempotencyKey === null) return undefined;
  const transactions = await store.listWalletTransactions(credit.tenantId);
  return transactions.find((transaction) => transaction.idempotencyKey === credit.idempotencyKey);
}

function sameOrThrow(credit: WalletCredit, first: WalletTransactionRecord): WalletTransactionRecord {
  if (first.kind === credit.kind && first.amount === credit.amount && first.currency === credit.currency) return first;
  throw new IdempotencyKeyReusedError(credit.idempotencyKey ?? '', first);
}
