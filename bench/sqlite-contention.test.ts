import { describe, expect, it } from 'vitest';
import { blockingSummary, contentionRun, parseBusyWaits, parseDelays } from './sqlite-contention.js';

describe('blockingSummary', () => {
  it('gives nearest-rank quantiles, the maximum and the writes over 1 ms', () => {
    const durations = Array.from({ length: 100 }, (_, index) => (index + 1) / 40);
    expect(blockingSummary(durations)).toEqual({
      probes: 100,
      p50Ms: 50 / 40,
      p90Ms: 90 / 40,
      p99Ms: 99 / 40,
      maxMs: 100 / 40,
      overOneMs: 60,
    });
    expect(() => blockingSummary([])).toThrow(/no probe writes/);
  });
});

describe('parseDelays', () => {
  it('reads a list of delays and refuses anything else, an empty list included', () => {
    expect(parseDelays('5,20, 50')).toEqual([5, 20, 50]);
    expect(parseDelays('0')).toEqual([0]);
    for (const bad of ['', '5,,20', '-5', 'fast', '5ms']) expect(() => parseDelays(bad)).toThrow(/--gather/);
  });
});

describe('parseBusyWaits', () => {
  it('reads block and yield and refuses anything else', () => {
    expect(parseBusyWaits('block, yield')).toEqual(['block', 'yield']);
    for (const bad of ['', 'block,', 'spin']) expect(() => parseBusyWaits(bad)).toThrow(/--busy-wait/);
  });
});

describe('contentionRun', () => {
  it('commits what it fed through the settle thread, fewer commits with longer gathering, and times its probes', async () => {
    const quick = { rate: 500, seconds: 2, probeEveryMs: 20 };
    const eager = await contentionRun({ gatherMs: 0, ...quick });
    const gathered = await contentionRun({ gatherMs: 200, ...quick });
    for (const run of [eager, gathered]) {
      expect(run.settlements).toBeGreaterThan(500);
      expect(run.probes).toBeGreaterThan(10);
      expect(run.p50Ms).toBeGreaterThan(0);
    }
    expect(gathered.commits).toBeLessThan(eager.commits / 2);
    for (const run of [eager, gathered]) {
      expect(run.busyWait).toBe('yield');
      expect(run.loopDelayMaxMs).toBeGreaterThanOrEqual(run.loopDelayP99Ms);
    }
  });
});
