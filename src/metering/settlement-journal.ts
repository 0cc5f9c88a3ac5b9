/**
 * The write-ahead journal of settlements: what makes a finished request's usage durable before its response ends,
 * without waiting for the store's commit (guarantee 3).
 *
 * The settlement writer appends every event-loop turn's settlements here with one `write` system call, counts them
 * durable, and commits them to the store afterwards, in the background. Once written, the bytes are the kernel's:
 * they survive `kill -9` of the process, as a SQLite commit in WAL mode with `synchronous = NORMAL` does (the store's
 * own setting; neither survives a power cut before the next sync). Waiting for the commit instead cost every response
 * a round trip to the settle thread and its transaction: 0.15–0.17 ms of p50 at 1,000 req/s on the reference machine
 * (docs/benchmarks.md, sessions 9 and 10).
 *
 * Files are the settlement spool's segments (`<pid>-<ms>-<random>.ndjson`, one `settlementToJson` line per
 * settlement) in a directory of their own, so recovery is the spool's: at start the gateway settles the segments of
 * processes that are gone into the store (idempotent by request id: what was committed already counts once) and
 * removes them. While the process runs, a segment is removed once every settlement in it is committed (or spooled);
 * the open segment is rotated after `segmentBytes`. A settlement the store never takes keeps its segment for the
 * next start, whose drain moves a refused one aside for an operator: nothing is deleted unsettled.
 *
 * Appends are synchronous on purpose: an asynchronous write goes through libuv's thread pool and back, which costs
 * more than the ~2 µs a page-cache write takes, and the response must not go out before the bytes are written.
 * (Written here: no library keeps an append-only file of our records with per-segment completion counts.)
 */
import { closeSync, mkdirSync, openSync, unlink, writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { settlementToJson } from '../store/ledger-rows.js';
import type { Settlement } from '../store/ledger-store.js';
import { newSegmentName } from './settlement-spool.js';

/** Bytes after which the open segment is rotated. Default of `SettlementJournalOptions.segmentBytes`. */
export const DEFAULT_JOURNAL_SEGMENT_BYTES = 16 * 1024 * 1024;

/** Options of `SettlementJournal`. */
export interface SettlementJournalOptions {
  /** Bytes after which the open segment is rotated (a new file started). Default 16 MiB. */
  segmentBytes?: number;
  /** Receives failures to remove a settled segment (warn level). */
  logger?: Logger;
}

/** One journal file: where a settlement was appended, handed back to `settled` once it is committed. */
export interface JournalSegment {
  readonly file: string;
}

/** What `append` wrote: the segment, and each settlement's line (without its newline). */
export interface JournalAppend {
  segment: JournalSegment;
  lines: string[];
}

interface OpenSegment extends JournalSegment {
  fd: number | undefined;
  bytes: number;
  /** Settlements appended and not yet settled. */
  outstanding: number;
}

/** A process's settlement journal (see the module comment). Not safe to share between processes. */
export class SettlementJournal {
  private readonly segmentBytes: number;
  private readonly logger: Logger | undefined;
  private current: OpenSegment | undefined;
  private directoryMade = false;
  private removedCount = 0;

  constructor(
    readonly directory: string,
    options: SettlementJournalOptions = {},
  ) {
    this.segmentBytes = Math.max(1, options.segmentBytes ?? DEFAULT_JOURNAL_SEGMENT_BYTES);
    this.logger = options.logger;
  }

  /** Segments removed because everything in them was settled. */
  get removedSegments(): number {
    return this.removedCount;
  }

  /**
   * Appends `settlements` in one write; returns their segment and their lines (each one's `settlementToJson`, in
   * order), which the settlement writer hands on to the store with their commit. Throws when the write fails (a full
   * disk): the settlements are then not durable here, and the segment written to is closed so that no later line
   * follows a partial one (a partial last line is skipped when the segment is read back).
   */
  append(settlements: readonly Settlement[]): JournalAppend {
    const lines = settlements.map(settlementToJson);
    const text = `${lines.join('\n')}\n`;
    const segment = this.openSegment();
    try {
      segment.bytes += writeFully(segment.fd!, text);
    } catch (error: unknown) {
      this.closeCurrent();
      throw error;
    }
    segment.outstanding += settlements.length;
    if (segment.bytes >= this.segmentBytes) this.closeCurrent();
    return { segment, lines };
  }

  /** Records that `count` settlements appended to `segment` are in the store; removes it once it holds no other. */
  settled(segment: JournalSegment, count = 1): void {
    const open = segment as OpenSegment;
    open.outstanding -= count;
    if (open.outstanding > 0) return;
    // The open segment stays until it is rotated: a new file per idle moment would cost a file per request.
    if (open === this.current) return;
    this.remove(open);
  }

  /**
   * Closes the open segment, and removes it when everything in it was settled. Segments holding unsettled
   * settlements (the store was down at close) stay for the next start to settle.
   */
  close(): void {
    this.closeCurrent();
  }

  private openSegment(): OpenSegment {
    if (this.current !== undefined) return this.current;
    if (!this.directoryMade) {
      mkdirSync(this.directory, { recursive: true });
      this.directoryMade = true;
    }
    const file = path.join(this.directory, newSegmentName());
    this.current = { file, fd: openSync(file, 'a'), bytes: 0, outstanding: 0 };
    return this.current;
  }

  /** Closes the open segment's file (it is removed once settled); the next append starts a new one. */
  private closeCurrent(): void {
    const open = this.current;
    if (open === undefined) return;
    this.current = undefined;
    if (open.fd !== undefined) closeSync(open.fd);
    open.fd = undefined;
    if (open.outstanding <= 0) this.remove(open);
  }

  private remove(segment: OpenSegment): void {
    if (segment.fd !== undefined) return;
    // Asynchronous: the request path never waits for the file system's bookkeeping.
    unlink(segment.file, (error) => {
      if (error === null) {
        this.removedCount++;
        return;
      }
      // Left behind, the next start settles it again: idempotent, so only a little work is lost.
      if (error.code !== 'ENOENT')
        this.logger?.warn({ err: error, file: segment.file }, 'Could not remove a journal segment');
    });
  }
}

/**
 * Writes all of `text`, returns its length in bytes. A regular file takes a write whole unless the disk is full; the
 * loop covers a partial write.
 */
function writeFully(fd: number, text: string): number {
  const bytes = Buffer.from(text);
  let offset = 0;
  while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
  return bytes.length;
}
