import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { groupHeapSnapshot, heapGrowth } from './heap-snapshot-diff.js';

class HeldPerStream {
  constructor(readonly index: number) {}
}

function snapshot(dir: string, name: string) {
  return groupHeapSnapshot(JSON.parse(readFileSync(writeHeapSnapshot(path.join(dir, name)), 'utf8')));
}

describe('heap-snapshot-diff', () => {
  it('finds the objects made between two real snapshots, by constructor, with their count', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tg-heap-'));
    const before = snapshot(dir, 'before.heapsnapshot');
    const held = Array.from({ length: 5000 }, (_, index) => new HeldPerStream(index));
    const after = snapshot(dir, 'after.heapsnapshot');
    expect(held).toHaveLength(5000);
    const growth = heapGrowth(before, after);
    const mine = growth.find((entry) => entry.kind === 'HeldPerStream');
    expect(mine?.count).toBe(5000);
    expect(before.has('HeldPerStream')).toBe(false);
    expect(mine?.bytes).toBe(after.get('HeldPerStream')?.bytes);
    expect(mine!.bytes).toBeGreaterThanOrEqual(5000 * 16);
    // Sorted by the size of the change, largest first.
    const sizes = growth.map((entry) => Math.abs(entry.bytes));
    expect(sizes).toEqual([...sizes].sort((a, b) => b - a));
  });
});
