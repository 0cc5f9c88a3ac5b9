/**
 * Settlements the store could not take, kept on local disk until it can. While the store is down or hangs, a response
 * would otherwise go out with its settlement only in memory, lost to a `kill -9` (guarantee 3); with a spool the
 * writer appends the failed (or slow) batch here, `fdatasync`s it, and the settlement counts as durable.
 *
 * Files: one segment per process and rotation, `<pid>-<ms>-<random>.ndjson` in the spool directory, one settlement
 * per line (`settlementToJson`: nano amounts as decimal strings, as in stream checkpoints). A process appends only
 * to its own segment. `drain` settles segments through the store and removes them: this process's earlier
 * segments, and, with `orphans`, those of processes that are gone (a crashed gateway's, found by the next one to
 * start). Settling is idempotent by request id, so a segment settled twice (a crash between its commit and its
 * removal, two processes draining one orphan) counts each request once.
 *
 * A settlement the store refuses while it takes others (a poison record, which would otherwise be retried forever)
 * moves to `rejected.ndjson` beside the segments, logged, for an operator: nothing is deleted. A line cut short by a
 * crash mid-append is skipped: its append never completed, so its response never went out.
 *
 * (Written here: no library keeps an append-only, fsynced file of records and replays it into our store; the file
 * format and the drain's refusal rules are the whole of it, on `fs/promises`.)
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { settlementFromJson, settlementToJson } from '../store/ledger-rows.js';
import type { Settlement } from '../store/ledger-store.js';

const SEGMENT = /^(\d+)-\d+-[0-9a-f]+\.ndjson$/;
const REJECTED = 'rejected.ndjson';

/** What one `drain` did. */
export interface SpoolDrainResult {
  /** Settlements the store took (including ones it already had). */
  settled: number;
  /** Settlements moved to `rejected.ndjson`. */
  rejected: number;
  /** Settlements still spooled: the store failed before they were taken. */
  left: number;
}

/** Options of `SettlementSpool.drain`. */
export interface SpoolDrainOptions {
  /** Settlements per `settle` call. */
  batchSize: number;
  /** Also drain the segments of processes that no longer run. */
  orphans: boolean;
}

/** A process's spool of settlements waiting for the store (see the module comment). */
export class SettlementSpool {
  private segment: string;
  private handle: FileHandle | undefined;
  /** Appends and rotations, one at a time, so lines never interleave and a rotation never cuts an append. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Settlements this process appended or found left over and has not settled yet. */
  private waiting = 0;

  constructor(
    readonly directory: string,
    private readonly logger?: Logger,
  ) {
    this.segment = newSegmentName();
  }

  /** Settlements this process appended, or left by its last drain, not settled yet: a drain is due when above 0. */
  get pending(): number {
    return this.waiting;
  }

  /**
   * Appends `settlements` and waits until they are on disk (`fdatasync`). `encoded`, when the caller has it, is each
   * one's `settlementToJson` line (the journal wrote them), which is then not made again.
   */
  append(settlements: readonly Settlement[], encoded?: readonly string[]): Promise<void> {
    if (encoded !== undefined && encoded.length !== settlements.length) {
      // A caller's bug: the lines are what is written, so they must not silently differ from the settlements.
      return Promise.reject(new RangeError(`${encoded.length} journal lines for ${settlements.length} settlements`));
    }
    if (settlements.length === 0) return Promise.resolve();
    const lines = encoded ?? settlements.map(settlementToJson);
    const text = `${lines.join('\n')}\n`;
    return this.serially(async () => {
      if (this.handle === undefined) {
        await mkdir(this.directory, { recursive: true });
        this.handle = await open(path.join(this.directory, this.segment), 'a');
        // A new file's name must be durable too: sync the directory that holds it.
        await syncDirectory(this.directory);
      }
      await this.handle.write(text);
      await this.handle.datasync();
      this.waiting += settlements.length;
    });
  }

  /**
   * Settles spooled segments through `settle` (each batch's settlements, and their lines as read:
   * `LedgerStore.settle`'s `encoded`) and removes what it took (see the module comment). This process's open segment
   * is closed first, so appends during the drain go to a new one. Stops at the first segment the store fails
   * on as a whole (it is down): that segment keeps what is left, and so do the ones after it.
   */
  async drain(
    settle: (batch: readonly Settlement[], encoded: readonly string[]) => Promise<void>,
    options: SpoolDrainOptions,
  ): Promise<SpoolDrainResult> {
    const result: SpoolDrainResult = { settled: 0, rejected: 0, left: 0 };
    const appended = await this.serially(async () => {
      await this.handle?.close();
      this.handle = undefined;
      this.segment = newSegmentName();
      return this.waiting;
    });
    const names = await this.segmentsToDrain(options.orphans);
    let storeDown = false;
    for (const name of names) {
      const file = path.join(this.directory, name);
      if (storeDown) {
        result.left += (await readSegment(file, this.logger)).length;
        continue;
      }
      const outcome = await settleSegment(file, settle, options.batchSize, this.logger);
      result.settled += outcome.settled;
      result.rejected += outcome.rejected.length;
      result.left += outcome.left.length;
      if (outcome.rejected.length > 0) await this.reject(outcome.rejected);
      // A segment the store took nothing of stays as it is (no rewrite every retry while the store is down).
      if (outcome.left.length === 0 || outcome.settled + outcome.rejected.length > 0) {
        await rewriteSegment(file, outcome.left);
      }
      storeDown = outcome.left.length > 0;
    }
    // Appends made during the drain stay counted; what the drain could not settle is counted instead of the rest.
    this.waiting += result.left - appended;
    return result;
  }

  /** Closes the open segment. */
  async close(): Promise<void> {
    await this.serially(async () => {
      await this.handle?.close();
      this.handle = undefined;
    });
  }

  private serially<T>(step: () => Promise<T>): Promise<T> {
    const run = this.tail.then(step);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Segment names to drain, oldest first: this process's closed ones and, with `orphans`, dead processes'. */
  private async segmentsToDrain(orphans: boolean): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.directory);
    } catch (error: unknown) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    return names
      .filter((name) => {
        const match = SEGMENT.exec(name);
        if (match === null || name === this.segment) return false;
        const pid = Number(match[1]);
        return pid === process.pid || (orphans && !processRuns(pid));
      })
      .sort((a, b) => segmentTime(a) - segmentTime(b));
  }

  private async reject(lines: readonly string[]): Promise<void> {
    await writeLinesSynced(path.join(this.directory, REJECTED), 'a', lines);
    this.logger?.error(
      { settlements: lines.length, file: path.join(this.directory, REJECTED) },
      'Spooled settlements refused by the store while it took others; moved aside for an operator',
    );
  }
}

interface SegmentOutcome {
  settled: number;
  /** Lines the store refused while it took others. */
  rejected: string[];
  /** Lines not taken because the store failed (down). */
  left: string[];
}

/**
 * Settles one segment's lines in batches. A failed batch is halved down to single settlements. A single one that
 * fails is refused (poison) once the store takes a later batch; a second single failure with no success between means
 * the store is down: both, and every line not tried yet, are left in the spool.
 */
async function settleSegment(
  file: string,
  settle: (batch: readonly Settlement[], encoded: readonly string[]) => Promise<void>,
  batchSize: number,
  logger: Logger | undefined,
): Promise<SegmentOutcome> {
  const lines = await readSegment(file, logger);
  const outcome: SegmentOutcome = { settled: 0, rejected: [], left: [] };
  const batches: string[][] = [];
  for (let start = 0; start < lines.length; start += batchSize) batches.push(lines.slice(start, start + batchSize));
  /** Single settlements that failed since the store last took a batch. */
  let suspects: string[] = [];
  for (let batch = batches.shift(); batch !== undefined; batch = batches.shift()) {
    try {
      await settle(batch.map(settlementFromJson), batch);
    } catch {
      if (batch.length > 1) {
        const half = Math.ceil(batch.length / 2);
        batches.unshift(batch.slice(0, half), batch.slice(half));
        continue;
      }
      suspects.push(batch[0]!);
      if (suspects.length > 1) {
        outcome.left.push(...suspects, ...batches.flat());
        return outcome;
      }
      continue;
    }
    outcome.settled += batch.length;
    outcome.rejected.push(...suspects);
    suspects = [];
  }
  // A failure at the very end has no later success to tell a refusal from an outage: it stays spooled.
  outcome.left.push(...suspects);
  return outcome;
}

/** A segment's complete lines; a last line without its newline (a crash mid-append) is skipped. */
async function readSegment(file: string, logger: Logger | undefined): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  const lines = text.split('\n');
  const torn = lines.pop();
  if (torn !== undefined && torn !== '') {
    logger?.warn({ file }, 'Skipped a spooled settlement cut short by a crash (its response never went out)');
  }
  return lines.filter((line) => line !== '');
}

/** Replaces a segment by `lines` (written to a temporary file, synced, renamed), or removes it when none are left. */
async function rewriteSegment(file: string, lines: readonly string[]): Promise<void> {
  const temporary = `${file}.tmp`;
  if (lines.length === 0) {
    // The temporary file too: one is left when a process died in the middle of an earlier rewrite.
    for (const each of [file, temporary]) {
      await unlink(each).catch((error: unknown) => {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      });
    }
    return;
  }
  await writeLinesSynced(temporary, 'w', lines);
  await rename(temporary, file);
  await syncDirectory(path.dirname(file));
}

/** Writes `lines` (one settlement each) to `file`, opened with `flags`, and waits until they are on disk. */
async function writeLinesSynced(file: string, flags: 'a' | 'w', lines: readonly string[]): Promise<void> {
  const handle = await open(file, flags);
  try {
    await handle.write(lines.map((line) => `${line}\n`).join(''));
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A new segment's file name for this process: `<pid>-<ms>-<random>.ndjson` (also the journal's). */
export function newSegmentName(): string {
  return `${process.pid}-${Date.now()}-${randomBytes(4).toString('hex')}.ndjson`;
}

function segmentTime(name: string): number {
  return Number(name.split('-')[1]);
}

/** Whether a process with this id runs (signal 0 checks without signalling). */
function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error: unknown) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // Signal 0 also reaches a zombie: a process killed with SIGKILL whose parent has not reaped it yet (or never does,
  // as under an init that does not reap). On Linux its state in /proc says it is gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return true;
  }
}
