import { describe, expect, it } from 'vitest';
import { type AbRun, compareRuns, comparisonTable } from './ab-bench.js';

const run = (throughput: number, cpuUs: number): AbRun => ({
  throughput,
  p50Ms: 1,
  p99Ms: 4,
  cpuUs,
  mainCpuUs: cpuUs / 2,
});

describe('compareRuns', () => {
  it("gives each pair's ratio and the ratio of the means, which weighs pairs by size", () => {
    const comparisons = compareRuns([run(1000, 400), run(3000, 500)], [run(1500, 300), run(3000, 500)]);
    const throughput = comparisons.find((comparison) => comparison.measure === 'throughput')!;
    expect(throughput.pairRatios).toEqual([1.5, 1]);
    // (1500 + 3000) / (1000 + 3000), not the mean of the pair ratios (1.25).
    expect(throughput.ratioOfMeans).toBeCloseTo(1.125, 12);
    const cpu = comparisons.find((comparison) => comparison.measure === 'mainCpuUs')!;
    expect(cpu.before).toEqual([200, 250]);
    expect(cpu.ratioOfMeans).toBeCloseTo(400 / 450, 12);
  });

  it('refuses runs that do not pair up', () => {
    expect(() => compareRuns([run(1, 1)], [])).toThrow(/as many runs/);
    expect(() => compareRuns([], [])).toThrow(/at least one/);
  });

  it('prints one table row per measure', () => {
    const table = comparisonTable(compareRuns([run(2000, 400)], [run(2200, 380)]));
    expect(table.split('\n')).toHaveLength(2 + 5);
    expect(table).toContain('| throughput | 2000 | 2200 | 1.10 | 1.10 |');
  });
});
