/**
 * Invoices: a pure function from the ledger's billing rollups (and the wallet transactions) of one tenant and one
 * period to a document whose lines add up to the ledger exactly. No I/O, no clock: the same inputs always give the
 * same invoice, id and issue date included, so regenerating an invoice reproduces it byte for byte.
 *
 * **Rounding rule.** Every line carries its exact amount in nano-units (1e-9 of the currency unit, the ledger's
 * unit) and that amount rounded half-to-even to the currency's minor unit (fen, cents). Rounding happens once per
 * line and never on a sum of rounded values. The tax-free total is the exact sum of all lines rounded half-to-even
 * once; a `rounding_adjustment` line (exact amount 0) carries the difference between that total and the sum of the
 * rounded lines, so that on the printed invoice Σ rounded lines (adjustment included) = total, and
 * Σ exact lines = Σ `amount` of the billing rollups = the ledger for the period, to the nano-unit.
 *
 * **Lines**, in this order:
 * 1. usage: one per model × batch × price version × tier × output condition × token class (input, cached input,
 *    output), with the token quantity, the unit price per million and the list amount;
 * 2. modifiers: one per model × modifier (batch, off-peak, contract, volume discount), negative;
 * 3. the rounding adjustment.
 * Lines of zero tokens and zero amount are left out.
 *
 * **Token quantities.** A rollup's `inputTokens` is read as the rating's `input` token class — prompt tokens *not*
 * served from cache — and `cachedTokens` as the `cached_input` class, matching `inputListAmount` and
 * `cachedListAmount` (see `TOKEN_CLASSES` in rate-usage.ts). `outputTokens` includes reasoning tokens.
 *
 * **Unit prices.** A usage line merges rows of one price version, tier and output condition, so one unit price
 * applies to all its tokens. But each request's amount was rounded to the nano-unit when its event was written, so
 * `amount × 1e6 / tokens` is exactly the unit price only when every request's amount was already a whole nano-unit
 * (always true for prices with at most 3 decimals per million). Otherwise the unit price comes from the price book
 * when one is passed and agrees with the amount within the per-request rounding (≤ ½ nano per request), else it is
 * the derived average rounded to 9 decimals; `unitPrice.exact` says whether quantity × unit price = amount exactly.
 * The line amount is always the ledger's exact sum, never quantity × unit price.
 *
 * **Credits** (wallet top-ups, adjustments, refunds of the period) are payments, not charges: they are listed in a
 * separate balance-movement section, each rounded the same way, and never enter the lines or the total.
 */
import { createHash } from 'node:crypto';
import { assertNever } from '../../errors/assert-never.js';
import {
  AMOUNT_DECIMALS,
  type Currency,
  divideHalfEven,
  isCurrency,
  type Price,
  roundToMinor,
} from '../../pricing/money.js';
import type { ModelPrice, PriceBook, PriceTier } from '../../pricing/price-book.js';
import type { TokenClass } from '../../pricing/rate-usage.js';
import type {
  BillingRollupRow,
  Nano,
  WalletTransactionKind,
  WalletTransactionRecord,
} from '../../store/ledger-store.js';

/** Decimal places of a nano amount. */
export const NANO_DECIMALS = 9;
/** 1e-27 sub-units of money.ts per nano-unit. */
const AMOUNT_PER_NANO = 10n ** BigInt(AMOUNT_DECIMALS - NANO_DECIMALS);
/** Price units (1e-9 per million tokens) per (nano × token): price = nano × 1e6 / tokens. */
const TOKENS_PER_PRICE = 1_000_000n;
const DAY_MS = 86_400_000;

/** Token classes in invoice order. */
export const INVOICE_TOKEN_CLASSES = ['input', 'cached_input', 'output'] as const satisfies readonly TokenClass[];

/** Modifiers shown on an invoice, in invoice order; each maps to a discount column of the billing rollup. */
export const INVOICE_MODIFIERS = [
  'batch_discount',
  'off_peak_discount',
  'contract_discount',
  'volume_discount',
] as const;
/** A modifier line's kind. */
export type InvoiceModifier = (typeof INVOICE_MODIFIERS)[number];

/** An amount as the invoice shows it. */
export interface InvoiceMoney {
  /** Exact, nano-units. */
  readonly exact: Nano;
  /** Minor units of the invoice currency (fen, cents), rounded half-to-even from `exact` (or, for sums, see totals). */
  readonly rounded: bigint;
}

/** How a usage line's unit price was obtained. */
export interface InvoiceUnitPrice {
  /** Per million tokens, 1e-9 of the currency unit (a money.ts `Price`). */
  readonly perMillion: Price;
  /** `price_book`: the price book's price; `derived`: amount × 1e6 / quantity (rounded half-even when inexact). */
  readonly source: 'price_book' | 'derived';
  /** Whether quantity × `perMillion` / 1e6 equals the line's exact amount. */
  readonly exact: boolean;
}

/** Tokens of one class at one price: model × batch × price version × tier × output condition × class. */
export interface InvoiceUsageLine {
  readonly kind: 'usage';
  readonly description: string;
  readonly model: string;
  readonly batch: boolean;
  readonly priceVersion: string;
  readonly tier: string;
  readonly outputCondition: string | null;
  readonly tokenClass: TokenClass;
  /** Tokens. */
  readonly quantity: number;
  /** Requests that contributed (a request counts on each of its classes' lines). */
  readonly requests: number;
  readonly unitPrice: InvoiceUnitPrice;
  /** List amount, before modifiers. */
  readonly amount: InvoiceMoney;
}

/** The effect of one modifier on one model's usage, ≤ 0. */
export interface InvoiceModifierLine {
  readonly kind: 'modifier';
  readonly description: string;
  readonly model: string;
  readonly modifier: InvoiceModifier;
  readonly amount: InvoiceMoney;
}

/** Reconciles Σ rounded lines with the rounded total; its exact amount is always 0. */
export interface InvoiceRoundingAdjustmentLine {
  readonly kind: 'rounding_adjustment';
  readonly description: string;
  readonly amount: InvoiceMoney;
}

/** One invoice line. */
export type InvoiceLine = InvoiceUsageLine | InvoiceModifierLine | InvoiceRoundingAdjustmentLine;

/** A wallet transaction of the period (a payment or correction, not a charge). */
export interface InvoiceBalanceMovement {
  readonly id: string;
  readonly kind: WalletTransactionKind;
  /** Epoch ms. */
  readonly createdAt: number;
  readonly note: string | null;
  /** Signed: credits positive. */
  readonly amount: InvoiceMoney;
}

/** An invoice (see the module comment for the rounding rule). */
export interface Invoice {
  /** Deterministic: `inv_<tenant>_<YYYYMM>` for a calendar month (UTC), else `inv_<tenant>_<hash of the period>`. */
  readonly id: string;
  readonly tenant: { readonly id: string; readonly name: string };
  readonly currency: Currency;
  /** `[start, end)`, epoch ms. */
  readonly period: { readonly start: number; readonly end: number };
  /** The period is one UTC calendar month. */
  readonly calendarMonth: string | null;
  /** Epoch ms. */
  readonly issuedAt: number;
  readonly lines: readonly InvoiceLine[];
  readonly totals: {
    /** Σ usage lines; `rounded` is Σ of the rounded usage lines. */
    readonly subtotalList: InvoiceMoney;
    /** Σ modifier lines (≤ 0); `rounded` is Σ of the rounded modifier lines. */
    readonly discounts: InvoiceMoney;
    /** Minor units: `total.rounded − subtotalList.rounded − discounts.rounded`. */
    readonly roundingAdjustment: bigint;
    /** Tax-free total: `exact` = Σ exact lines = the ledger; `rounded` = `exact` rounded half-to-even once. */
    readonly total: InvoiceMoney;
  };
  /** Credits of the period, shown apart from the charges; they do not change the total. */
  readonly balanceMovements: {
    readonly items: readonly InvoiceBalanceMovement[];
    /** `exact` = Σ items; `rounded` = Σ rounded items (each item is rounded once). */
    readonly total: InvoiceMoney;
  };
  /** What the invoice was built from. */
  readonly source: { readonly rollupRows: number; readonly requests: number; readonly ledgerAmount: Nano };
}

/** What `buildInvoice` needs. */
export interface BuildInvoiceInput {
  readonly tenant: { readonly id: string; readonly name: string };
  /** ISO 4217 code of the tenant's wallet; every row and transaction must be in it. */
  readonly currency: string;
  /** `[start, end)`, epoch ms. */
  readonly period: { readonly start: number; readonly end: number };
  /** `queryBillingRollups` for this tenant and period. */
  readonly rows: readonly BillingRollupRow[];
  /** `listWalletTransactions` for this tenant and period. */
  readonly transactions: readonly WalletTransactionRecord[];
  /** Epoch ms. Default: `period.end` (so that regenerating gives the same document; no clock is read). */
  readonly issuedAt?: number;
  /** Used for unit prices that the amounts alone do not give exactly. Default: none (derived prices). */
  readonly priceBook?: PriceBook;
}

/** Rows or transactions that cannot belong on this invoice, or a broken ledger invariant. */
export class InvoiceInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvoiceInputError';
  }
}

/** A nano amount rounded half-to-even to minor units of `currency`. */
export function roundNanoToMinor(nano: Nano, currency: Currency): bigint {
  return roundToMinor(nano * AMOUNT_PER_NANO, currency);
}

function money(exact: Nano, currency: Currency): InvoiceMoney {
  return { exact, rounded: roundNanoToMinor(exact, currency) };
}

/** `YYYY-MM` when `[start, end)` is exactly one UTC calendar month, else null. */
export function calendarMonthOf(period: { start: number; end: number }): string | null {
  const start = new Date(period.start);
  if (Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), 1) !== period.start) return null;
  if (Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1) !== period.end) return null;
  return `${String(start.getUTCFullYear()).padStart(4, '0')}-${String(start.getUTCMonth() + 1).padStart(2, '0')}`;
}

const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * The invoice id of a tenant and period: `inv_<tenant>_<YYYYMM>` for a UTC calendar month, otherwise
 * `inv_<tenant>_<16 hex digits of SHA-256 over tenant and period>`. A tenant id outside `[A-Za-z0-9_-]{1,64}` is
 * replaced by its hash so the id is always URL-safe.
 */
export function invoiceIdFor(tenantId: string, period: { start: number; end: number }): string {
  const tenantPart = SAFE_ID.test(tenantId) ? tenantId : `t${shortHash(tenantId)}`;
  const month = calendarMonthOf(period);
  if (month !== null) return `inv_${tenantPart}_${month.replace('-', '')}`;
  return `inv_${tenantPart}_${shortHash(`${tenantId}\n${period.start}\n${period.end}`)}`;
}

/** Orders labels with embedded numbers numerically (`0-32768` before `32769-131072`), then by code unit. */
function compareLabels(a: string, b: string): number {
  const chunksA = a.match(/\d+|\D+/g) ?? [];
  const chunksB = b.match(/\d+|\D+/g) ?? [];
  for (let index = 0; index < Math.min(chunksA.length, chunksB.length); index += 1) {
    const x = chunksA[index]!;
    const y = chunksB[index]!;
    if (x === y) continue;
    if (/^\d/.test(x) && /^\d/.test(y)) {
      const difference = BigInt(x) - BigInt(y);
      if (difference !== 0n) return difference < 0n ? -1 : 1;
    }
    return x < y ? -1 : 1;
  }
  if (chunksA.length !== chunksB.length) return chunksA.length - chunksB.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareNullableLabels(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return compareLabels(a, b);
}

function tokenClassLabel(tokenClass: TokenClass): string {
  switch (tokenClass) {
    case 'input':
      return 'input tokens';
    case 'cached_input':
      return 'cached input tokens';
    case 'output':
      return 'output tokens';
    default:
      return assertNever(tokenClass);
  }
}

function modifierLabel(modifier: InvoiceModifier): string {
  switch (modifier) {
    case 'batch_discount':
      return 'batch discount';
    case 'off_peak_discount':
      return 'off-peak discount';
    case 'contract_discount':
      return 'contract discount';
    case 'volume_discount':
      return 'volume discount';
    default:
      return assertNever(modifier);
  }
}

function modifierAmount(row: BillingRollupRow, modifier: InvoiceModifier): Nano {
  switch (modifier) {
    case 'batch_discount':
      return row.batchDiscount;
    case 'off_peak_discount':
      return row.offPeakDiscount;
    case 'contract_discount':
      return row.contractDiscount;
    case 'volume_discount':
      return row.volumeDiscount;
    default:
      return assertNever(modifier);
  }
}

function classQuantity(row: BillingRollupRow, tokenClass: TokenClass): { tokens: number; amount: Nano } {
  switch (tokenClass) {
    case 'input':
      return { tokens: row.inputTokens, amount: row.inputListAmount };
    case 'cached_input':
      return { tokens: row.cachedTokens, amount: row.cachedListAmount };
    case 'output':
      return { tokens: row.outputTokens, amount: row.outputListAmount };
    default:
      return assertNever(tokenClass);
  }
}

function checkRow(row: BillingRollupRow, index: number, input: BuildInvoiceInput): void {
  const where = `rows[${index}] (${row.model}, day ${new Date(row.day).toISOString().slice(0, 10)})`;
  if (row.tenantId !== input.tenant.id)
    throw new InvoiceInputError(`${where}: tenant ${row.tenantId}, not ${input.tenant.id}`);
  if (row.currency !== input.currency)
    throw new InvoiceInputError(`${where}: currency ${row.currency}, not ${input.currency}`);
  if (row.day >= input.period.end || row.day + DAY_MS <= input.period.start) {
    throw new InvoiceInputError(`${where}: outside the period`);
  }
  for (const [name, tokens] of [
    ['inputTokens', row.inputTokens],
    ['cachedTokens', row.cachedTokens],
    ['outputTokens', row.outputTokens],
    ['requests', row.requests],
  ] as const) {
    if (!Number.isSafeInteger(tokens) || tokens < 0) throw new InvoiceInputError(`${where}: ${name} is ${tokens}`);
  }
  let sum = row.inputListAmount + row.cachedListAmount + row.outputListAmount;
  for (const modifier of INVOICE_MODIFIERS) {
    const effect = modifierAmount(row, modifier);
    if (effect > 0n) throw new InvoiceInputError(`${where}: ${modifier} is positive`);
    sum += effect;
  }
  if (sum !== row.amount) {
    throw new InvoiceInputError(`${where}: amount ${row.amount} ≠ list amounts + discounts ${sum} (ledger invariant)`);
  }
}

interface UsageAccumulator {
  model: string;
  batch: boolean;
  priceVersion: string;
  tier: string;
  outputCondition: string | null;
  tokenClass: TokenClass;
  quantity: number;
  requests: number;
  amount: Nano;
}

function compareUsage(a: UsageAccumulator, b: UsageAccumulator): number {
  return (
    compareLabels(a.model, b.model) ||
    Number(a.batch) - Number(b.batch) ||
    compareLabels(a.priceVersion, b.priceVersion) ||
    compareLabels(a.tier, b.tier) ||
    compareNullableLabels(a.outputCondition, b.outputCondition) ||
    INVOICE_TOKEN_CLASSES.indexOf(a.tokenClass) - INVOICE_TOKEN_CLASSES.indexOf(b.tokenClass)
  );
}

/** Prices the book allows for a line, most likely first (the tier's own price before output conditions). */
function bookPrices(book: PriceBook | undefined, tenantId: string, line: UsageAccumulator): Price[] {
  const version = book?.versions.find((candidate) => candidate.id === line.priceVersion);
  if (version === undefined) return [];
  const contractModel: ModelPrice | undefined = version.contracts.get(tenantId)?.models.get(line.model);
  const model = contractModel ?? version.models.get(line.model);
  const tier: PriceTier | undefined = model?.tiers.find((candidate) => candidate.label === line.tier);
  if (tier === undefined) return [];
  switch (line.tokenClass) {
    case 'input':
      return [tier.input];
    case 'cached_input':
      return [tier.cachedInput];
    case 'output': {
      if (line.outputCondition === null) return [tier.output];
      // Rating labels a condition `output<=<max_output_tokens>`; with another label, any condition may match.
      const bound = /^output<=(\d+)$/.exec(line.outputCondition)?.[1];
      const conditions = tier.outputConditions.filter(
        (condition) => bound === undefined || String(condition.maxOutputTokens) === bound,
      );
      return conditions.map((condition) => condition.output);
    }
    default:
      return assertNever(line.tokenClass);
  }
}

function unitPriceOf(line: UsageAccumulator, book: PriceBook | undefined, tenantId: string): InvoiceUnitPrice {
  const scaled = line.amount * TOKENS_PER_PRICE;
  const quantity = BigInt(line.quantity);
  // Each request's amount was rounded to the nano-unit once, so the line may differ from quantity × price by at
  // most ½ nano per request: |scaled − quantity × price| ≤ requests × 1e6 / 2.
  const tolerance = BigInt(line.requests) * TOKENS_PER_PRICE;
  for (const price of bookPrices(book, tenantId, line)) {
    const difference = scaled - quantity * price;
    if (2n * (difference < 0n ? -difference : difference) <= tolerance) {
      return { perMillion: price, source: 'price_book', exact: difference === 0n };
    }
  }
  return {
    perMillion: divideHalfEven(scaled, quantity),
    source: 'derived',
    exact: scaled % quantity === 0n,
  };
}

function usageDescription(line: UsageAccumulator): string {
  const parts = [`${line.model}${line.batch ? ' (batch)' : ''}`, tokenClassLabel(line.tokenClass), `tier ${line.tier}`];
  if (line.outputCondition !== null && line.tokenClass === 'output') parts.push(`condition ${line.outputCondition}`);
  parts.push(`price version ${line.priceVersion}`);
  return parts.join(', ');
}

/**
 * Builds the invoice of one tenant and period from its billing rollups and wallet transactions. Pure and
 * deterministic. Throws `InvoiceInputError` for rows of another tenant, currency or period, and for rows whose
 * amount is not their list amounts plus discounts (the invoice could not then add up to the ledger).
 */
export function buildInvoice(input: BuildInvoiceInput): Invoice {
  const { tenant, period } = input;
  if (!isCurrency(input.currency)) throw new InvoiceInputError(`unsupported currency ${input.currency}`);
  const currency = input.currency;
  if (!Number.isSafeInteger(period.start) || !Number.isSafeInteger(period.end) || period.start >= period.end) {
    throw new InvoiceInputError(`period [${period.start}, ${period.end}) is empty or not in whole ms`);
  }
  if (input.priceBook !== undefined && input.priceBook.currency !== currency) {
    throw new InvoiceInputError(`price book currency ${input.priceBook.currency}, not ${currency}`);
  }

  const usage = new Map<string, UsageAccumulator>();
  const modifiers = new Map<string, { model: string; modifier: InvoiceModifier; amount: Nano }>();
  let ledgerAmount = 0n;
  let requests = 0;
  input.rows.forEach((row, index) => {
    checkRow(row, index, input);
    ledgerAmount += row.amount;
    requests += row.requests;
    for (const tokenClass of INVOICE_TOKEN_CLASSES) {
      const { tokens, amount } = classQuantity(row, tokenClass);
      if (tokens === 0 && amount === 0n) continue;
      // The output condition sets only the output price; input lines of a conditioned row merge with the others.
      const outputCondition = tokenClass === 'output' ? row.outputCondition : null;
      const key = JSON.stringify([row.model, row.batch, row.priceVersion, row.tier, outputCondition, tokenClass]);
      let line = usage.get(key);
      if (line === undefined) {
        line = {
          model: row.model,
          batch: row.batch,
          priceVersion: row.priceVersion,
          tier: row.tier,
          outputCondition,
          tokenClass,
          quantity: 0,
          requests: 0,
          amount: 0n,
        };
        usage.set(key, line);
      }
      line.quantity += tokens;
      line.requests += row.requests;
      line.amount += amount;
    }
    for (const modifier of INVOICE_MODIFIERS) {
      const effect = modifierAmount(row, modifier);
      if (effect === 0n) continue;
      const key = JSON.stringify([row.model, modifier]);
      const line = modifiers.get(key) ?? { model: row.model, modifier, amount: 0n };
      line.amount += effect;
      modifiers.set(key, line);
    }
  });

  const usageLines: InvoiceUsageLine[] = [...usage.values()].sort(compareUsage).map((line) => {
    if (line.quantity === 0) {
      throw new InvoiceInputError(`${usageDescription(line)}: amount ${line.amount} nano for zero tokens`);
    }
    if (!Number.isSafeInteger(line.quantity)) throw new InvoiceInputError(`${usageDescription(line)}: too many tokens`);
    return {
      kind: 'usage',
      description: usageDescription(line),
      model: line.model,
      batch: line.batch,
      priceVersion: line.priceVersion,
      tier: line.tier,
      outputCondition: line.outputCondition,
      tokenClass: line.tokenClass,
      quantity: line.quantity,
      requests: line.requests,
      unitPrice: unitPriceOf(line, input.priceBook, tenant.id),
      amount: money(line.amount, currency),
    };
  });
  const modifierLines: InvoiceModifierLine[] = [...modifiers.values()]
    .sort(
      (a, b) =>
        compareLabels(a.model, b.model) ||
        INVOICE_MODIFIERS.indexOf(a.modifier) - INVOICE_MODIFIERS.indexOf(b.modifier),
    )
    .map((line) => ({
      kind: 'modifier',
      description: `${line.model}, ${modifierLabel(line.modifier)}`,
      model: line.model,
      modifier: line.modifier,
      amount: money(line.amount, currency),
    }));

  const subtotalExact = usageLines.reduce((sum, line) => sum + line.amount.exact, 0n);
  const subtotalRounded = usageLines.reduce((sum, line) => sum + line.amount.rounded, 0n);
  const discountsExact = modifierLines.reduce((sum, line) => sum + line.amount.exact, 0n);
  const discountsRounded = modifierLines.reduce((sum, line) => sum + line.amount.rounded, 0n);
  const total = money(subtotalExact + discountsExact, currency);
  if (total.exact !== ledgerAmount) {
    throw new InvoiceInputError(`lines add up to ${total.exact} nano, the ledger to ${ledgerAmount}`);
  }
  const roundingAdjustment = total.rounded - subtotalRounded - discountsRounded;

  const items: InvoiceBalanceMovement[] = input.transactions
    .map((transaction, index) => {
      const where = `transactions[${index}] (${transaction.id})`;
      if (transaction.tenantId !== tenant.id) throw new InvoiceInputError(`${where}: tenant ${transaction.tenantId}`);
      if (transaction.currency !== currency) throw new InvoiceInputError(`${where}: currency ${transaction.currency}`);
      if (transaction.createdAt < period.start || transaction.createdAt >= period.end) {
        throw new InvoiceInputError(`${where}: outside the period`);
      }
      return {
        id: transaction.id,
        kind: transaction.kind,
        createdAt: transaction.createdAt,
        note: transaction.note,
        amount: money(transaction.amount, currency),
      };
    })
    .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  return {
    id: invoiceIdFor(tenant.id, period),
    tenant: { id: tenant.id, name: tenant.name },
    currency,
    period: { start: period.start, end: period.end },
    calendarMonth: calendarMonthOf(period),
    issuedAt: input.issuedAt ?? period.end,
    lines: [
      ...usageLines,
      ...modifierLines,
      {
        kind: 'rounding_adjustment',
        description: 'Rounding adjustment (reconciles the rounded lines with the rounded total)',
        amount: { exact: 0n, rounded: roundingAdjustment },
      },
    ],
    totals: {
      subtotalList: { exact: subtotalExact, rounded: subtotalRounded },
      discounts: { exact: discountsExact, rounded: discountsRounded },
      roundingAdjustment,
      total,
    },
    balanceMovements: {
      items,
      total: {
        exact: items.reduce((sum, item) => sum + item.amount.exact, 0n),
        rounded: items.reduce((sum, item) => sum + item.amount.rounded, 0n),
      },
    },
    source: { rollupRows: input.rows.length, requests, ledgerAmount },
  };
}
