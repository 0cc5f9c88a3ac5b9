import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AMOUNT_ONE,
  amountForTokens,
  DecimalFormatError,
  discountEffect,
  divideHalfEven,
  formatAmount,
  formatDecimal,
  formatMinor,
  formatPrice,
  minorToAmount,
  parseAmount,
  parseDecimal,
  parseDiscount,
  parsePrice,
  roundToMinor,
} from './money.js';

/** `digits × 10^-decimals` currency units, in 1e-27 sub-units, written out independently of the code under test. */
const units = (digits: bigint, decimals: number) => digits * 10n ** BigInt(27 - decimals);

function decimalErrorCode(run: () => unknown): string {
  try {
    run();
  } catch (error: unknown) {
    if (error instanceof DecimalFormatError) return error.code;
    throw error;
  }
  throw new Error('expected a DecimalFormatError');
}

describe('parseDecimal', () => {
  it('reads plain decimals exactly, scaled', () => {
    expect(parsePrice('0.8')).toBe(800_000_000n);
    expect(parsePrice('12')).toBe(12_000_000_000n);
    expect(parsePrice('0.000001')).toBe(1_000n);
    expect(parsePrice('0.000000001')).toBe(1n);
    expect(parsePrice('0')).toBe(0n);
    expect(parseDiscount('0.5')).toBe(5_000n);
    expect(parseDiscount('1')).toBe(10_000n);
    expect(parseAmount('-3.25', { allowNegative: true })).toBe(-units(325n, 2));
    expect(parseDecimal('123456789012345678901234567890.5', { decimals: 1 })).toBe(1234567890123456789012345678905n);
  });

  it('refuses what it cannot read exactly, saying why', () => {
    expect(decimalErrorCode(() => parsePrice('1e-6'))).toBe('exponent');
    expect(decimalErrorCode(() => parsePrice('8E2'))).toBe('exponent');
    expect(decimalErrorCode(() => parsePrice('NaN'))).toBe('malformed');
    expect(decimalErrorCode(() => parsePrice('Infinity'))).toBe('malformed');
    expect(decimalErrorCode(() => parsePrice('-1'))).toBe('negative');
    expect(decimalErrorCode(() => parseAmount('-0.5'))).toBe('negative');
    expect(decimalErrorCode(() => parsePrice('0.0000000001'))).toBe('too_many_decimals');
    expect(decimalErrorCode(() => parsePrice('0.8000000000'))).toBe('too_many_decimals');
    expect(decimalErrorCode(() => parseDiscount('0.12345'))).toBe('too_many_decimals');
    expect(decimalErrorCode(() => parseDiscount('1.0001'))).toBe('too_large');
    expect(decimalErrorCode(() => parsePrice(''))).toBe('empty');
    for (const text of [' 1', '1 ', '+1', '.5', '5.', '01', '0x10', '1,5', '--1', '1.2.3']) {
      expect(
        decimalErrorCode(() => parsePrice(text)),
        text,
      ).toBe('malformed');
    }
    expect(decimalErrorCode(() => parsePrice(0.8))).toBe('not_a_string');
    expect(decimalErrorCode(() => parsePrice(undefined))).toBe('not_a_string');
  });

  it('names the limit in the message', () => {
    expect(() => parsePrice('0.0000000001')).toThrow(/at most 9 decimal places/);
    expect(() => parsePrice('1e-6')).toThrow(/exponent/);
    expect(() => parsePrice(0.8)).toThrow(/in quotes/);
  });
});

describe('formatDecimal', () => {
  it('writes the shortest exact decimal', () => {
    expect(formatPrice(800_000_000n)).toBe('0.8');
    expect(formatPrice(12_000_000_000n)).toBe('12');
    expect(formatPrice(1n)).toBe('0.000000001');
    expect(formatAmount(1n)).toBe(`0.${'0'.repeat(26)}1`);
    expect(formatAmount(-units(125n, 3))).toBe('-0.125');
    expect(formatAmount(0n)).toBe('0');
  });

  it('round-trips with parseDecimal for any value', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }),
        fc.integer({ min: 0, max: 30 }),
        (value, decimals) => {
          const text = formatDecimal(value, decimals);
          expect(parseDecimal(text, { decimals, allowNegative: true })).toBe(value);
        },
      ),
    );
  });
});

describe('amountForTokens', () => {
  it('is tokens × price / 1e6, exact', () => {
    // 32,768 × 0.8 / 1e6 = 0.0262144
    expect(amountForTokens(32_768, parsePrice('0.8'))).toBe(units(262_144n, 7));
    // 1 × 0.000000001 / 1e6 = 1e-15
    expect(amountForTokens(1, 1n)).toBe(units(1n, 15));
    // 3 × 1.2 / 1e6 = 0.0000036
    expect(amountForTokens(3n, parsePrice('1.2'))).toBe(units(36n, 7));
  });
});

describe('discountEffect', () => {
  it('takes the fraction off exactly', () => {
    expect(discountEffect(units(8n, 1), parseDiscount('0.5'))).toBe(-units(4n, 1));
    expect(discountEffect(units(1n, 0), parseDiscount('0.0001'))).toBe(-units(1n, 4));
    expect(discountEffect(units(7n, 0), parseDiscount('1'))).toBe(-units(7n, 0));
  });

  it('refuses a result below the sub-unit instead of rounding it away', () => {
    expect(() => discountEffect(1n, parseDiscount('0.5'))).toThrow(RangeError);
  });
});

describe('roundToMinor (half-even)', () => {
  it('rounds ties to the even minor unit, both ways', () => {
    expect(roundToMinor(units(125n, 3), 'CNY')).toBe(12n); // 0.125 → 0.12
    expect(roundToMinor(units(135n, 3), 'CNY')).toBe(14n); // 0.135 → 0.14
    expect(roundToMinor(units(145n, 3), 'USD')).toBe(14n); // 0.145 → 0.14
    expect(roundToMinor(units(155n, 3), 'USD')).toBe(16n); // 0.155 → 0.16
    expect(roundToMinor(units(1005n, 3), 'CNY')).toBe(100n); // 1.005 → 1.00
    expect(roundToMinor(units(1015n, 3), 'CNY')).toBe(102n); // 1.015 → 1.02
    expect(roundToMinor(-units(125n, 3), 'CNY')).toBe(-12n);
    expect(roundToMinor(-units(135n, 3), 'CNY')).toBe(-14n);
  });

  it('rounds non-ties to the nearest', () => {
    expect(roundToMinor(units(125n, 3) + 1n, 'CNY')).toBe(13n); // a hair above 0.125
    expect(roundToMinor(units(135n, 3) - 1n, 'CNY')).toBe(13n); // a hair below 0.135
    expect(roundToMinor(units(1234n, 4), 'CNY')).toBe(12n); // 0.1234
    expect(roundToMinor(units(1236n, 4), 'CNY')).toBe(12n); // 0.1236
    expect(roundToMinor(units(1264n, 4), 'CNY')).toBe(13n); // 0.1264
    expect(roundToMinor(-units(1264n, 4), 'CNY')).toBe(-13n);
    expect(roundToMinor(0n, 'CNY')).toBe(0n);
    expect(roundToMinor(1n, 'CNY')).toBe(0n);
  });

  it('divideHalfEven lands within half a divisor, ties on even', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
        fc.bigInt({ min: 1n, max: 10n ** 12n }),
        (n, d) => {
          const q = divideHalfEven(n, d);
          const error = n - q * d;
          const twice = 2n * (error < 0n ? -error : error);
          expect(twice <= d).toBe(true);
          if (twice === d) expect(q % 2n).toBe(0n);
        },
      ),
    );
  });

  it('property (d): rounding each invoice line moves the total by at most lines × half a minor unit', () => {
    const minor = units(1n, 2);
    fc.assert(
      fc.property(
        fc.array(fc.bigInt({ min: -(10n ** 33n), max: 10n ** 33n }), { minLength: 1, maxLength: 50 }),
        (lines) => {
          const exact = lines.reduce((sum, line) => sum + line, 0n);
          const rounded = lines.reduce((sum, line) => sum + roundToMinor(line, 'CNY') * minor, 0n);
          const drift = rounded > exact ? rounded - exact : exact - rounded;
          expect(2n * drift <= BigInt(lines.length) * minor).toBe(true);
        },
      ),
    );
  });
});

describe('minor units', () => {
  it('formats with every minor digit', () => {
    expect(formatMinor(1230n, 'CNY')).toBe('12.30');
    expect(formatMinor(5n, 'USD')).toBe('0.05');
    expect(formatMinor(-5n, 'USD')).toBe('-0.05');
    expect(formatMinor(0n, 'CNY')).toBe('0.00');
  });

  it('converts minor units to amounts', () => {
    expect(minorToAmount(1234n, 'CNY')).toBe(units(1234n, 2));
    expect(minorToAmount(100n, 'USD')).toBe(AMOUNT_ONE);
  });
});
