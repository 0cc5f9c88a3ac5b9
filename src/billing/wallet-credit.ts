/**
 * Credits and debits an operator writes to a tenant's wallet (top-ups, refunds, adjustments), and its credit limit:
 * the rules the admin API and the CLI's store mode share. A write that would carry the balance, or the balance plus
 * the credit limit, outside what the ledger's 64-bit columns hold is refused and changes nothing; an
 * `Idempotency-Key` replays its first transaction, and is refused when reused for a different one.
 */
import { GatewayError, InvalidRequestError } from '../errors/gateway-error.js';
import {
  BalanceOutOfRangeError,
  type BillingMode,
  type LedgerStore,
  MAX_NANO,
  type Nano,
  type NewWalletTransaction,
  type WalletRecord,
  type WalletTransactionRecord,
} from '../store/ledger-store.js';
import { formatNano } from './nano.js';

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
 * (`balance_limit_exceeded`, param `amount`) when the balance would leave the ledger's range: the store checks it in
 * the write's transaction, so top-ups racing each other near the limit cannot pass it together.
 */
export async function addWalletCredit(
  store: LedgerStore,
  credit: WalletCredit,
): Promise<{ record: WalletTransactionRecord; created: boolean }> {
  let written: { record: WalletTransactionRecord; created: boolean };
  try {
    written = await store.addWalletTransaction(credit);
  } catch (error: unknown) {
    if (!(error instanceof BalanceOutOfRangeError)) throw error;
    throw new InvalidRequestError(
      `This ${credit.kind} would take the balance to ${formatNano(error.balance)} ${credit.currency}` +
        `${error.creditLimit === 0n ? '' : ` (credit limit ${formatNano(error.creditLimit)})`}, beyond the ` +
        `largest the ledger holds, ${formatNano(MAX_NANO)}.`,
      { param: 'amount', code: 'balance_limit_exceeded', cause: error },
    );
  }
  // A retry of a transaction already written is answered as any retry, even when it would no longer fit.
  if (!written.created) sameOrThrow(credit, written.record);
  return written;
}

/**
 * Sets the billing mode and credit limit of the tenant's wallet (`LedgerStore.configureWallet`, which creates it if
 * needed). Throws `InvalidRequestError` (`balance_limit_exceeded`, param `credit_limit`), changing nothing, when the
 * balance plus the credit limit would leave the ledger's range: what a postpaid tenant may spend is computed as that
 * sum. The store checks it in the write's transaction, against the balance it keeps.
 */
export async function configureWalletCredit(
  store: LedgerStore,
  tenantId: string,
  settings: { mode: BillingMode; currency: string; creditLimit: Nano },
): Promise<WalletRecord> {
  try {
    return await store.configureWallet(tenantId, settings);
  } catch (error: unknown) {
    if (!(error instanceof BalanceOutOfRangeError)) throw error;
    throw new InvalidRequestError(
      `A credit limit of ${formatNano(error.creditLimit)} on a balance of ${formatNano(error.balance)} goes beyond ` +
        `the largest amount the ledger holds, ${formatNano(MAX_NANO)}.`,
      { param: 'credit_limit', code: 'balance_limit_exceeded', cause: error },
    );
  }
}

function sameOrThrow(credit: WalletCredit, first: WalletTransactionRecord): void {
  if (first.kind === credit.kind && first.amount === credit.amount && first.currency === credit.currency) return;
  throw new IdempotencyKeyReusedError(credit.idempotencyKey ?? '', first);
}
