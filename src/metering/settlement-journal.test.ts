import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSegment } from '../../test/support/journal.js';
import { temporaryDirectory } from '../../test/support/temporary-directory.js';
import { settlementOf, usageEventFixture } from '../store/ledger-fixtures.js';
import { settlementFromJson } from '../store/ledger-rows.js';
import type { Settlement } from '../store/ledger-store.js';
import { SettlementJournal } from './settlement-journal.js';

function journalDirectory(): string {
  return join(temporaryDirectory('tollgate-journal-'), 'journal');
}

let sequence = 0;
function settlement(): Settlement {
  sequence++;
  return {
    ...settlementOf(
      usageEventFixture({
        requestId: `req-journal-${sequence}`,
        tenantId: 'ten_journal',
        // Past 2^53 nano-units: the line must keep them exactly.
        inputListAmount: 2n ** 60n + BigInt(sequence),
        amount: 2n ** 60n + BigInt(sequence),
      }),
    ),
    reservation: { tenantId: 'ten_journal', amount: 2n ** 55n + 3n },
  };
}

/** Waits until `condition` holds (segment removal is asynchronous). */
async function eventually(condition: () => boolean): Promise<void> {
  for (let wait = 0; wait < 500 && !condition(); wait++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(condition()).toBe(true);
}

describe('SettlementJournal', () => {
  it('appends each call as whole lines to one segment, exactly, in order', () => {
    const journal = new SettlementJournal(journalDirectory());
    const first = [settlement(), settlement()];
    const second = [settlement()];
    const { segment, lines } = journal.append(first);
    const again = journal.append(second);
    expect(again.segment).toBe(segment);
    expect(readSegment(segment.file)).toEqual([...first, ...second]);
    expect(readSegment(segment.file)).toHaveLength(3);
    // The lines handed back are the ones in the file, one per settlement, in order.
    expect([...lines, ...again.lines]).toEqual(readFileSync(segment.file, 'utf8').split('\n').slice(0, -1));
    expect(lines.map(settlementFromJson)).toEqual(first);
    journal.close();
  });

  it('keeps the open segment while it is written to, and removes a rotated one once all of it is settled', async () => {
    const directory = journalDirectory();
    // Rotates after the first append: every append here gets a segment of its own.
    const journal = new SettlementJournal(directory, { segmentBytes: 1 });
    const older = journal.append([settlement(), settlement()]).segment;
    const newer = journal.append([settlement()]).segment;
    expect(newer.file).not.toBe(older.file);
    journal.settled(older);
    // One of its two is still outstanding.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(existsSync(older.file)).toBe(true);
    journal.settled(older);
    await eventually(() => !existsSync(older.file));
    expect(existsSync(newer.file)).toBe(true);
    journal.settled(newer);
    await eventually(() => journal.removedSegments === 2);
    expect(existsSync(newer.file)).toBe(false);
  });

  it('at close removes a settled open segment and keeps one with unsettled settlements', async () => {
    const settledDirectory = journalDirectory();
    const done = new SettlementJournal(settledDirectory);
    const { segment } = done.append([settlement()]);
    done.settled(segment);
    // Open and settled: it stays until rotated or closed.
    expect(existsSync(segment.file)).toBe(true);
    done.close();
    await eventually(() => readdirSync(settledDirectory).length === 0);

    const strandedDirectory = journalDirectory();
    const stranded = new SettlementJournal(strandedDirectory);
    const kept = [settlement(), settlement()];
    const open = stranded.append(kept).segment;
    stranded.settled(open);
    stranded.close();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(readSegment(open.file)).toEqual(kept);
  });
});
