/**
 * Exact money. No binary floats touch a price or an amount: every quantity is a `bigint` count of a fixed decimal
 * sub-unit, parsed from and formatted to decimal strings without loss.
 *
 * Scales:
 * - **Price** (`Price`): 1e-9 of the currency unit per million tokens (`PRICE_DECIMALS` = 9), so `"0.8"` is
 *   `800_000_000n`. Prices are never negative.
 * - **Discount** (`Discount`): 1e-4 (`DISCOUNT_DECIMALS` = 4), from 0 to 1 inclusive. A discount is the fraction
 *   taken off, never a multiplier: `"0.5"` is 50% off, `"0.1"` is 10% off; the amount is multiplied by `1 − d`.
 * - **Amount** (`Amount`): 1e-27 of the currency unit (`AMOUNT_DECIMALS` = 27).
 *
 * Why 1e-27: one token at a price with 9 decimals per million costs a multiple of 1e-15 of the unit
 * (9 + 6 decimals). Rating then applies at most three discounts in sequence (batch or off-peak, contract, volume;
 * see rate-usage.ts), each adding at most 4 decimals: 15 + 3 × 4 = 27. So every amount rating produces is an exact
 * integer of the sub-unit: nothing is rounded, split amounts add up exactly, and the only rounding in the whole
 * pipeline is `roundToMinor`, once per invoice line, half-even. `applyDiscount` checks that the division is exact
 * and throws otherwise, so a fourth stacked discount would fail loudly in tests instead of losing sub-units.
 *
 * Storage: 1e-27 sub-units do not fit a 64-bit integer (9.2 units would); store amounts as decimal strings
 * (`formatAmount`) or PostgreSQL `NUMERIC`, and add them as `bigint`.
 */

/** Currencies the gateway can bill in, with the digits of their minor unit (ISO 4217). Add a line to add one. */
export const CURRENCIES = {
  CNY: { minorUnits: 2 },
  USD: { minorUnits: 2 },
} as const satisfies Record<string, { minorUnits: number }>;

/** An ISO 4217 code from `CURRENCIES`. */
export type Currency = keyof typeof CURRENCIES;

/** Every supported currency code. */
export const CURRENCY_CODES = Object.keys(CURRENCIES) as Currency[];

/** Whether `code` is a supported currency. */
export function isCurrency(code: string): code is Currency {
  return Object.hasOwn(CURRENCIES, code);
}

/** Decimal places of an `Amount`: one sub-unit is 1e-27 of the currency unit. */
export const AMOUNT_DECIMALS = 27;
/** Decimal places of a `Price` (currency units per million tokens). */
export const PRICE_DECIMALS = 9;
/** Decimal places of a `Discount`. */
export const DISCOUNT_DECIMALS = 4;

/** Money, in sub-units of 1e-27 of the currency unit. May be negative (a discount's effect, a refund). */
export type Amount = bigint;
/** A price per million tokens, in 1e-9 of the currency unit. Never negative. */
export type Price = bigint;
/** A fraction taken off, in 1e-4: `0n` is no discount, `10_000n` is 100% off. */
export type Discount = bigint;

/** Sub-units in one currency unit (1e27). */
export const AMOUNT_ONE: Amount = 10n ** BigInt(AMOUNT_DECIMALS);
/** A discount of 100%. */
export const DISCOUNT_ONE: Discount = 10n ** BigInt(DISCOUNT_DECIMALS);
/** Tokens per price quantum: prices are per million tokens. */
const TOKENS_PER_PRICE = 1_000_000n;
/** Sub-units per (price unit × token): 1e27 / (1e9 × 1e6) = 1e12. */
const AMOUNT_PER_PRICE_TOKEN = AMOUNT_ONE / (10n ** BigInt(PRICE_DECIMALS) * TOKENS_PER_PRICE);

/** Why a decimal string was refused. Stable codes; the message says what to write instead. */
export type DecimalErrorCode =
  | 'not_a_string'
  | 'empty'
  | 'exponent'
  | 'negative'
  | 'too_many_decimals'
  | 'malformed'
  | 'too_large'
  | 'too_small';

/** A decimal string that cannot be read exactly. */
export class DecimalFormatError extends Error {
  constructor(
    /** Stable machine code. */
    readonly code: DecimalErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DecimalFormatError';
  }
}

/** How `parseDecimal` reads a string. */
export interface ParseDecimalOptions {
  /** Most digits allowed after the point; the result is scaled by 10^decimals. */
  decimals: number;
  /** Accept a leading `-`. Default false. */
  allowNegative?: boolean;
  /** Largest accepted value, already scaled. Default: no limit. */
  max?: bigint;
  /** Smallest accepted value, already scaled (with `allowNegative`). Default: no limit. */
  min?: bigint;
}

const DECIMAL = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?$/;

/**
 * Reads a plain decimal string (`"12"`, `"0.8"`, `"0.000001"`, `"-3.5"` when allowed) as a bigint scaled by
 * 10^decimals. Strict: no exponent, sign `+`, spaces, leading zeros, bare point, `NaN`/`Infinity`, or more
 * fractional digits than `decimals` (even zeros: the operator should see the precision limit).
 */
export function parseDecimal(text: unknown, options: ParseDecimalOptions): bigint {
  if (typeof text !== 'string') {
    throw new DecimalFormatError(
      'not_a_string',
      `expected a decimal string in quotes (e.g. "0.8"), got ${typeof text === 'number' ? `the number ${text}` : typeof text}: numbers are binary floats and lose cents`,
    );
  }
  if (text.length === 0) throw new DecimalFormatError('empty', 'expected a decimal string, got an empty string');
  const match = DECIMAL.exec(text);
  if (match === null) {
    if (/^[+-]?[0-9.]+[eE][+-]?[0-9]+$/.test(text)) {
      throw new DecimalFormatError('exponent', `"${text}": exponent notation is not allowed, write the digits out`);
    }
    throw new DecimalFormatError(
      'malformed',
      `"${text}": expected a plain decimal like "12" or "0.8" (digits, optional point and fraction, no spaces, no leading zeros, no "+")`,
    );
  }
  const [, sign, whole, fraction = ''] = match;
  if (sign === '-' && options.allowNegative !== true) {
    throw new DecimalFormatError('negative', `"${text}": must not be negative`);
  }
  if (fraction.length > options.decimals) {
    throw new DecimalFormatError(
      'too_many_decimals',
      `"${text}": at most ${options.decimals} decimal places are supported, got ${fraction.length}`,
    );
  }
  const magnitude = BigInt(`${whole}${fraction.padEnd(options.decimals, '0')}`);
  const value = sign === '-' ? -magnitude : magnitude;
  if (options.max !== undefined && value > options.max) {
    throw new DecimalFormatError(
      'too_large',
      `"${text}": must be at most ${formatDecimal(options.max, options.decimals)}`,
    );
  }
  if (options.min !== undefined && value < options.min) {
    throw new DecimalFormatError(
      'too_small',
      `"${text}": must be at least ${formatDecimal(options.min, options.decimals)}`,
    );
  }
  return value;
}

/** Writes a scaled bigint back as the shortest exact decimal string: `formatDecimal(800n, 3)` is `"0.8"`. */
export function formatDecimal(value: bigint, decimals: number): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(decimals + 1, '0');
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = digits.slice(digits.length - decimals).replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${fraction === '' ? '' : `.${fraction}`}`;
}

/** Reads a price per million tokens: non-negative, at most 9 decimals. */
export function parsePrice(text: unknown): Price {
  return parseDecimal(text, { decimals: PRICE_DECIMALS });
}

/** The decimal string of a price per million tokens. */
export function formatPrice(price: Price): string {
  return formatDecimal(price, PRICE_DECIMALS);
}

/** Reads a discount: the fraction taken off, from `"0"` to `"1"`, at most 4 decimals. */
export function parseDiscount(text: unknown): Discount {
  return parseDecimal(text, { decimals: DISCOUNT_DECIMALS, max: DISCOUNT_ONE });
}

/** The decimal string of a discount (`5000n` → `"0.5"`). */
export function formatDiscount(discount: Discount): string {
  return formatDecimal(discount, DISCOUNT_DECIMALS);
}

/** Reads an amount in currency units (`"12.5"`), at most 27 decimals. Negative only when `allowNegative`. */
export function parseAmount(text: unknown, options: { allowNegative?: boolean } = {}): Amount {
  return parseDecimal(text, { decimals: AMOUNT_DECIMALS, allowNegative: options.allowNegative ?? false });
}

/** The exact decimal string of an amount in currency units (`"0.0000262144"`). */
export function formatAmount(amount: Amount): string {
  return formatDecimal(amount, AMOUNT_DECIMALS);
}

/** The exact cost of `tokens` tokens at `price` per million. */
export function amountForTokens(tokens: bigint | number, price: Price): Amount {
  return BigInt(tokens) * price * AMOUNT_PER_PRICE_TOKEN;
}

/**
 * The effect of taking `discount` off `amount`: `−amount × d`, exact. Returns a value ≤ 0 for a non-negative amount.
 * Throws a `RangeError` if the product is not a whole sub-unit, which rating's construction rules out (see the
 * module comment); the check turns a future change that breaks exactness into a failing test.
 */
export function discountEffect(amount: Amount, discount: Discount): Amount {
  const product = amount * discount;
  if (product % DISCOUNT_ONE !== 0n) {
    throw new RangeError(`discount ${formatDiscount(discount)} of ${formatAmount(amount)} is not a whole sub-unit`);
  }
  return -(product / DISCOUNT_ONE);
}

/** `numerator / denominator` rounded half to even (banker's rounding); `denominator` must be positive. */
export function divideHalfEven(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new RangeError('denominator must be positive');
  let quotient = numerator / denominator;
  let remainder = numerator % denominator;
  // Truncation rounds toward zero; move to the floor so the tie rule below reads the same for negatives.
  if (remainder < 0n) {
    quotient -= 1n;
    remainder += denominator;
  }
  const twice = 2n * remainder;
  if (twice > denominator || (twice === denominator && quotient % 2n !== 0n)) quotient += 1n;
  return quotient;
}

/** Sub-units in one minor unit of `currency` (1e25 for a currency with 2 minor digits). */
export function amountPerMinorUnit(currency: Currency): Amount {
  return 10n ** BigInt(AMOUNT_DECIMALS - CURRENCIES[currency].minorUnits);
}

/**
 * Rounds an amount to whole minor units of `currency` (fen, cents), half to even: 0.125 → 0.12, 0.135 → 0.14,
 * −0.125 → −0.12. Returns the count of minor units. Use it once, on each invoice line, never on a per-request amount.
 */
export function roundToMinor(amount: Amount, currency: Currency): bigint {
  return divideHalfEven(amount, amountPerMinorUnit(currency));
}

/** A count of minor units as an amount (e.g. a top-up of 1234 fen). */
export function minorToAmount(minor: bigint, currency: Currency): Amount {
  return minor * amountPerMinorUnit(currency);
}

/** A count of minor units with all its minor digits: `formatMinor(1230n, 'CNY')` is `"12.30"`. */
export function formatMinor(minor: bigint, currency: Currency): string {
  const digits: number = CURRENCIES[currency].minorUnits;
  const negative = minor < 0n;
  const text = (negative ? -minor : minor).toString().padStart(digits + 1, '0');
  const whole = text.slice(0, text.length - digits);
  const fraction = text.slice(text.length - digits);
  return `${negative ? '-' : ''}${whole}${digits === 0 ? '' : `.${fraction}`}`;
}
