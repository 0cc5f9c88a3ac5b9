/**
 * Conversions between the pricing core's exact amounts (1e-27 of the unit) and the ledger's nano-units (1e-9).
 * A usage event's exact amount is rounded half-even to the nano-unit once, when the event is written; quotes
 * (reservations) round up so a reservation always covers the rated amount.
 */
import { type Amount, divideHalfEven, formatDecimal, parseDecimal } from '../pricing/money.js';
import { MAX_NANO, type Nano } from '../store/ledger-store.js';

const AMOUNT_PER_NANO = 10n ** 18n;

/** Exact amount → nano-units, half-even. */
export function nanoHalfEven(amount: Amount): Nano {
  return divideHalfEven(amount, AMOUNT_PER_NANO);
}

/** Exact amount → nano-units, rounded up (towards +∞). */
export function nanoCeil(amount: Amount): Nano {
  const quotient = amount / AMOUNT_PER_NANO;
  return amount % AMOUNT_PER_NANO > 0n ? quotient + 1n : quotient;
}

/** Nano-units as a decimal string of the currency unit (`1500000000n` → `"1.5"`). */
export function formatNano(value: Nano): string {
  return formatDecimal(value, 9);
}

/**
 * A decimal string of the currency unit → nano-units, within ±`MAX_NANO` (what the ledger can store); throws
 * `DecimalFormatError`.
 */
export function parseNano(text: unknown, options: { allowNegative?: boolean } = {}): Nano {
  return parseDecimal(text, {
    decimals: 9,
    allowNegative: options.allowNegative ?? false,
    max: MAX_NANO,
    min: -MAX_NANO,
  });
}

/** Nano-units rounded half-even to a currency with `minorUnits` digits, as a decimal string (`"12.30"`). */
export function formatMinorFromNano(value: Nano, minorUnits: number): string {
  const minor = divideHalfEven(value, 10n ** BigInt(9 - minorUnits));
  const negative = minor < 0n;
  const digits = (negative ? -minor : minor).toString().padStart(minorUnits + 1, '0');
  return `${negative ? '-' : ''}${digits.slice(0, -minorUnits)}.${digits.slice(-minorUnits)}`;
}
