/**
 * Argument parsers for the bench CLIs (commander): each returns the number or throws `InvalidArgumentError`, which
 * commander reports as "option '--x <n>' argument 'y' is invalid. <reason>" and exits non-zero.
 */
import { InvalidArgumentError } from 'commander';

function checked(value: string, valid: (parsed: number) => boolean, expected: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !valid(parsed)) throw new InvalidArgumentError(`expected ${expected}`);
  return parsed;
}

/** An integer ≥ 1. */
export function positiveInteger(value: string): number {
  return checked(value, (parsed) => Number.isSafeInteger(parsed) && parsed >= 1, 'a positive integer');
}

/** An integer ≥ 0. */
export function wholeNumber(value: string): number {
  return checked(value, (parsed) => Number.isSafeInteger(parsed) && parsed >= 0, 'a whole number ≥ 0');
}

/** A finite number > 0. */
export function positiveNumber(value: string): number {
  return checked(value, (parsed) => Number.isFinite(parsed) && parsed > 0, 'a positive number');
}

/** A finite number ≥ 0. */
export function nonNegativeNumber(value: string): number {
  return checked(value, (parsed) => Number.isFinite(parsed) && parsed >= 0, 'a number ≥ 0');
}

/** A share, 0 to 1. */
export function share(value: string): number {
  return checked(value, (parsed) => Number.isFinite(parsed) && parsed >= 0 && parsed <= 1, 'a share, 0 to 1');
}

/** `--a --b=1` → `['--a', '--b=1']`: flags separated by spaces (`--node-args`); at least one. */
export function spaceSeparatedFlags(value: string): string[] {
  const flags = value.split(' ').filter((flag) => flag !== '');
  if (flags.length === 0) throw new InvalidArgumentError('expected flags separated by spaces');
  return flags;
}

/** `1,2,4` → `[1, 2, 4]`: positive integers separated by commas. */
export function positiveIntegerList(value: string): number[] {
  const numbers = value.split(',').map((part) => Number(part.trim()));
  if (value.trim() === '' || numbers.some((number) => !Number.isSafeInteger(number) || number < 1)) {
    throw new InvalidArgumentError('expected positive integers separated by commas');
  }
  return numbers;
}
