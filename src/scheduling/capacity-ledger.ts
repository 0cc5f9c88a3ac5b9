/** What a pool can hold and what its running requests hold of it. */
import type { PoolCapacity } from './scheduler.js';

// Fractions of capacity are compared with a little slack so 0.85 × 20 counts as 17, not 16.999….
const epsilon = 1e-9;

/** The in-flight side of a pool: sequences and tokens taken by running requests. */
export class CapacityLedger {
  sequences = 0;
  tokens = 0;
  private current: PoolCapacity;

  constructor(capacity: PoolCapacity) {
    this.current = checkedCapacity(capacity);
  }

  get capacity(): Readonly<PoolCapacity> {
    return this.current;
  }

  setCapacity(partial: Partial<PoolCapacity>): void {
    this.current = checkedCapacity({ ...this.current, ...partial });
  }

  /**
   * Whether one more request holding `tokens` keeps the pool within `ceiling` (a fraction ≤ 1) of its capacity. The
   * sequence limit is `max(1, ⌊ceiling × sequences⌋)`: on a pool of a few slots every class may still use one.
   */
  fits(tokens: number, ceiling: number): boolean {
    return (
      this.sequences + 1 <= this.sequenceLimit(ceiling) &&
      this.tokens + tokens <= ceiling * this.current.tokens + epsilon
    );
  }

  /** Whether a request holding `tokens` could ever run within `ceiling` of the capacity. */
  canEverFit(tokens: number, ceiling: number): boolean {
    return tokens <= ceiling * this.current.tokens + epsilon;
  }

  /** Most sequences that may run once a class with this ceiling is dispatched. */
  sequenceLimit(ceiling: number): number {
    return Math.max(1, Math.floor(ceiling * this.current.sequences + epsilon));
  }

  take(tokens: number): void {
    this.sequences++;
    this.tokens += tokens;
  }

  release(tokens: number): void {
    this.sequences--;
    this.tokens -= tokens;
  }

  /** The larger of the two in-flight fractions. */
  utilisation(): number {
    return Math.max(this.sequences / this.current.sequences, this.tokens / this.current.tokens);
  }
}

function checkedCapacity(capacity: PoolCapacity): PoolCapacity {
  const { sequences, tokens } = capacity;
  if (!Number.isInteger(sequences) || sequences < 1)
    throw new RangeError(`capacity.sequences must be an integer ≥ 1, got ${sequences}`);
  if (!Number.isFinite(tokens) || tokens < 1) throw new RangeError(`capacity.tokens must be ≥ 1, got ${tokens}`);
  return Object.freeze({ sequences, tokens });
}
