import { afterEach, describe, expect, it } from 'vitest';
import { RedisVolumePositionStore } from './volume-position.js';

const stores: RedisVolumePositionStore[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
});

function twoProcesses() {
  const prefix = `tgtest:volume:${process.pid}:${Date.now()}:`;
  const first = new RedisVolumePositionStore({ url: 'redis://127.0.0.1:6379', prefix });
  const second = new RedisVolumePositionStore({ url: 'redis://127.0.0.1:6379', prefix });
  stores.push(first, second);
  return [first, second] as const;
}

describe('RedisVolumePositionStore', () => {
  it('gives every token of 200 concurrent requests from two processes exactly one month position', async () => {
    const [first, second] = twoProcesses();
    let seeds = 0;
    const seed = async () => {
      seeds++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      return 1_000n;
    };
    const sizes = Array.from({ length: 200 }, (_, index) => BigInt(1 + (index % 7) * 100));
    const befores = await Promise.all(
      sizes.map((tokens, index) => (index % 2 === 0 ? first : second).advance('ten_a', '2026-11', tokens, seed)),
    );
    // The spans [before, before + tokens) tile the month from the ledger's 1,000 on, with no gap and no overlap.
    const spans = befores
      .map((before, index) => [before, before + sizes[index]!] as const)
      .sort((a, b) => (a[0] < b[0] ? -1 : 1));
    expect(spans[0]![0]).toBe(1_000n);
    for (let index = 1; index < spans.length; index++) expect(spans[index]![0]).toBe(spans[index - 1]![1]);
    expect(spans.at(-1)![1]).toBe(1_000n + sizes.reduce((sum, tokens) => sum + tokens, 0n));
    // Seeded by whichever call found no counter; later calls never ask the ledger again.
    expect(seeds).toBeGreaterThanOrEqual(1);
    expect(seeds).toBeLessThanOrEqual(200);
    const after = await first.advance('ten_a', '2026-11', 0n, async () => {
      throw new Error('must not seed a counter that exists');
    });
    expect(after).toBe(spans.at(-1)![1]);
  });

  it('keeps tenants and months apart', async () => {
    const [first] = twoProcesses();
    expect(await first.advance('ten_a', '2026-11', 10n, async () => 0n)).toBe(0n);
    expect(await first.advance('ten_b', '2026-11', 10n, async () => 5n)).toBe(5n);
    expect(await first.advance('ten_a', '2026-12', 10n, async () => 0n)).toBe(0n);
    expect(await first.advance('ten_a', '2026-11', 1n, async () => 0n)).toBe(10n);
  });

  it('counts exactly past 2^53, where a double rounds (a budget spend of ~9 million currency units in nano-units)', async () => {
    const [first, second] = twoProcesses();
    const seed = 2n ** 53n + 1n; // not a double
    expect(await first.advance('spend:tenant:ten_a:1', '2026-11', 1n, async () => seed)).toBe(seed);
    expect(await second.advance('spend:tenant:ten_a:1', '2026-11', 2n, async () => 0n)).toBe(seed + 1n);
    const nearTop = 2n ** 63n - 10n; // the largest count Redis's INCRBY can reach is 2^63 - 1
    expect(await first.advance('spend:tenant:ten_b:1', '2026-11', 7n, async () => nearTop)).toBe(nearTop);
    expect(await first.advance('spend:tenant:ten_b:1', '2026-11', 0n, async () => 0n)).toBe(nearTop + 7n);
  });
});
