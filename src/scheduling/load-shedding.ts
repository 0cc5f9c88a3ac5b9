/**
 * The load-shedding curve. Saturation `s` as seen by a class is the demand at or above that class relative to the
 * pool: `s = max((running + queued≥class) sequences / capacity.sequences, (running + queued≥class) tokens /
 * capacity.tokens)`, so 1 means "full, nobody of this class or higher waiting" and 2 means "full, and a whole pool's
 * worth waiting ahead". A new job that cannot run at once is refused with probability
 *
 *   p(s) = 0                                   for s ≤ start
 *   p(s) = ((s − start) / (full − start))^k    for start < s < full   (k = exponent, convex: steep near `full`)
 *   p(s) = 1                                   for s ≥ full
 *
 * Lower classes get lower `start`/`full`, and since queued lower-class work does not count towards a higher class's
 * saturation, a flood of batch work sheds batch, never priority.
 */

/** Parameters of `p(s)` for one class. */
export interface SheddingCurve {
  /** Saturation above which shedding starts (p = 0 at and below). */
  start: number;
  /** Saturation at which every job that would have to queue is shed (p = 1). Must exceed `start`. */
  full: number;
  /** Exponent k of the curve; > 1 sheds little at first and steeply near `full`. */
  exponent: number;
}

/** The probability of shedding a job at `saturation` under `curve`, in [0, 1]. */
export function shedProbability(saturation: number, curve: SheddingCurve): number {
  if (saturation <= curve.start) return 0;
  if (saturation >= curve.full) return 1;
  return ((saturation - curve.start) / (curve.full - curve.start)) ** curve.exponent;
}

/** Throws `RangeError` unless `0 ≤ start < full` and `exponent > 0`. */
export function checkSheddingCurve(curve: SheddingCurve, label: string): void {
  const { start, full, exponent } = curve;
  if (!(start >= 0 && full > start && Number.isFinite(start))) {
    throw new RangeError(`${label}: shedding needs 0 ≤ start < full, got start ${start}, full ${full}`);
  }
  if (!(exponent > 0 && Number.isFinite(exponent))) {
    throw new RangeError(`${label}: shedding exponent must be > 0, got ${exponent}`);
  }
}
