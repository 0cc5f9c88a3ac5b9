/**
 * A seeded pseudo-random source (mulberry32), uniform in [0, 1): the scheduler's only randomness, so load-shedding
 * decisions replay exactly in tests and experiments; the simulated replica draws its deterministic text and
 * embeddings from it too. Not for anything security-related.
 */
export function createSeededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4_294_967_296;
  };
}
