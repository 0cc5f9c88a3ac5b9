import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { settlementFromJson } from '../../src/store/ledger-rows.js';
import type { Settlement } from '../../src/store/ledger-store.js';

/** The settlements of one segment file of a settlement journal or spool, in order. */
export function readSegment(file: string): Settlement[] {
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map(settlementFromJson);
}

/** Every settlement in the segment files of a settlement journal (or spool) directory, file by file. */
export function readJournal(directory: string): Settlement[] {
  return readdirSync(directory)
    .filter((name) => name.endsWith('.ndjson'))
    .flatMap((name) => readSegment(join(directory, name)));
}
