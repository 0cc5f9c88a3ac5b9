/**
 * Peak shifting for batches (issue 5, point 3): which service class a batch's next lines run at, and whether an
 * operator's daily off-peak window is open. Pure: time is an argument, never read from a clock.
 *
 * The class rule. With T = `deadline − now` (ms), W = `remainingTokens`, r = `recentTokensPerSecond` and the
 * projected time to finish at the observed rate P = W / r × 1000 (ms), the next line runs at
 *
 *   `batch`   when nothing is left, or r is unknown (≤ 0) and T > promoteToDefaultWithinMs, or T > projectWithinMs
 *             (too early to judge), or S × P ≤ T (the rest fits with the safety factor S to spare);
 *   `flex`    when P ≤ T < S × P: it still fits at the observed rate, but the safety margin is gone;
 *   `default` when P > T (it will miss at the observed rate: whatever class it runs at now is not enough), or when
 *             T ≤ promoteToDefaultWithinMs (close to the deadline, whatever the rate).
 *
 * The rate is what the batch has been getting at its current class, so the rule is a feedback loop: a promotion
 * raises r, P falls and the batch may return to `batch` class; a promotion to `flex` that does not raise r enough lets
 * P/T keep growing until it passes 1 and the lines go to `default`. Boundaries belong to the lower class (S × P = T is
 * still `batch`, P = T is still `flex`, T = promoteToDefaultWithinMs is already `default`).
 *
 * The caller should smooth r over minutes to hours and plan per line or every few seconds; the rule itself keeps no
 * state. On a fleet with a daily cycle a batch submitted at the online peak sees a much lower rate than it will get at
 * night, so a projection made then is pessimistic and would promote lines into the peak for nothing: `projectWithinMs`
 * (e.g. half the window) defers the projection to the final stretch, where the night is behind the batch.
 */

/** Where a batch stands when its next line is planned. */
export interface BatchProgress {
  /** Lines not yet executed. */
  remainingLines: number;
  /** Tokens those lines are expected to take (same unit as `recentTokensPerSecond`). */
  remainingTokens: number;
  /** Current time, ms since the epoch. */
  now: number;
  /** When the batch's completion window closes, ms since the epoch. */
  deadline: number;
  /** Observed tokens/s this batch has been getting (EWMA), 0 if unknown. */
  recentTokensPerSecond: number;
}

/** The service classes a batch line may run at, lowest first. */
export const batchLineClasses = ['batch', 'flex', 'default'] as const;

/** One of `batchLineClasses`. */
export type BatchLineClass = (typeof batchLineClasses)[number];

/** Options of `planBatchClass`. */
export interface BatchPlanOptions {
  /**
   * How many times the projected time to finish must fit into the time left for the lines to stay at `batch` class.
   * ≥ 1. Default 1.5.
   */
  safetyFactor?: number;
  /** Within this long of the deadline every line runs at `default`, ms. ≥ 0. Default 1,800,000 (30 minutes). */
  promoteToDefaultWithinMs?: number;
  /**
   * The projection is made only within this long of the deadline; earlier, lines run at `batch` whatever the rate.
   * ms, ≥ promoteToDefaultWithinMs. Default `Number.POSITIVE_INFINITY` (always project).
   */
  projectWithinMs?: number;
}

/** Default `BatchPlanOptions.safetyFactor`. */
export const defaultBatchSafetyFactor = 1.5;

/** Default `BatchPlanOptions.promoteToDefaultWithinMs`, ms. */
export const defaultPromoteToDefaultWithinMs = 30 * 60_000;

/**
 * The class the next line of a batch runs at (see the rule at the top of this file). Throws `RangeError` on a
 * non-finite or negative input or an option out of range.
 */
export function planBatchClass(progress: BatchProgress, options: BatchPlanOptions = {}): BatchLineClass {
  const safetyFactor = options.safetyFactor ?? defaultBatchSafetyFactor;
  const promoteToDefaultWithinMs = options.promoteToDefaultWithinMs ?? defaultPromoteToDefaultWithinMs;
  const projectWithinMs = options.projectWithinMs ?? Number.POSITIVE_INFINITY;
  if (!(safetyFactor >= 1 && Number.isFinite(safetyFactor))) {
    throw new RangeError(`safetyFactor must be a finite number ≥ 1, got ${safetyFactor}`);
  }
  if (!(promoteToDefaultWithinMs >= 0 && Number.isFinite(promoteToDefaultWithinMs))) {
    throw new RangeError(`promoteToDefaultWithinMs must be a finite number ≥ 0, got ${promoteToDefaultWithinMs}`);
  }
  if (!(projectWithinMs >= promoteToDefaultWithinMs)) {
    throw new RangeError(`projectWithinMs must be ≥ promoteToDefaultWithinMs, got ${projectWithinMs}`);
  }
  const { remainingLines, remainingTokens, now, deadline, recentTokensPerSecond } = progress;
  for (const [name, value] of [
    ['remainingLines', remainingLines],
    ['remainingTokens', remainingTokens],
    ['recentTokensPerSecond', recentTokensPerSecond],
  ] as const) {
    if (!(value >= 0 && Number.isFinite(value)))
      throw new RangeError(`${name} must be a finite number ≥ 0, got ${value}`);
  }
  if (!Number.isFinite(now) || !Number.isFinite(deadline)) {
    throw new RangeError(`now and deadline must be finite, got ${now} and ${deadline}`);
  }

  if (remainingLines === 0) return 'batch';
  const timeLeftMs = deadline - now;
  if (timeLeftMs <= promoteToDefaultWithinMs) return 'default';
  // No rate observed yet: nothing says the batch is behind; the last-stretch rule above is the backstop.
  if (recentTokensPerSecond === 0 || timeLeftMs > projectWithinMs) return 'batch';
  const projectedMs = (remainingTokens / recentTokensPerSecond) * 1_000;
  if (safetyFactor * projectedMs <= timeLeftMs) return 'batch';
  if (projectedMs <= timeLeftMs) return 'flex';
  return 'default';
}

/** A daily window of UTC wall-clock time, e.g. `{ start: '16:30', end: '00:30' }` (crosses midnight). */
export interface OffPeakWindow {
  /** First minute of the window, `HH:MM` UTC (inclusive). */
  start: string;
  /** Minute the window closes, `HH:MM` UTC (exclusive); before `start` for a window that crosses midnight. */
  end: string;
}

const minutesPerDay = 24 * 60;

/**
 * Whether `now` (ms since the epoch) falls inside any of the daily UTC `windows`: start inclusive, end exclusive, a
 * window whose end is before its start crosses midnight, and one whose end equals its start covers the whole day.
 * Throws `RangeError` on a malformed `HH:MM`.
 */
export function inOffPeakWindow(now: number, windows: readonly OffPeakWindow[]): boolean {
  if (!Number.isFinite(now)) throw new RangeError(`now must be finite, got ${now}`);
  const dayMs = minutesPerDay * 60_000;
  const minuteOfDay = (((now % dayMs) + dayMs) % dayMs) / 60_000;
  return windows.some((window) => {
    const start = parseMinuteOfDay(window.start);
    const end = parseMinuteOfDay(window.end);
    if (start === end) return true;
    return start < end ? minuteOfDay >= start && minuteOfDay < end : minuteOfDay >= start || minuteOfDay < end;
  });
}

/** Minutes since midnight of an `HH:MM` time (`00:00` … `23:59`; `24:00` is accepted as the end of the day). */
export function parseMinuteOfDay(text: string): number {
  const match = /^(\d{2}):(\d{2})$/.exec(text);
  const hours = Number(match?.[1]);
  const minutes = Number(match?.[2]);
  if (match === null || minutes > 59 || hours > 24 || (hours === 24 && minutes > 0)) {
    throw new RangeError(`Expected a UTC time HH:MM, got ${JSON.stringify(text)}`);
  }
  return hours * 60 + minutes;
}
