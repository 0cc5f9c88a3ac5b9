import { describe, expect, it } from 'vitest';
import { busyRetryDelayMs, isSqliteBusy, retryWhileBusy } from './sqlite-busy-wait.js';

/** An error as better-sqlite3 raises it (`SqliteError` with the extended result code's name). */
function sqliteError(code: string): Error {
  return Object.assign(new Error(`database ${code}`), { code });
}

describe('retryWhileBusy', () => {
  it('runs the statement at once and returns its result when the lock is free', async () => {
    let calls = 0;
    await expect(retryWhileBusy(() => ++calls, 1000)).resolves.toBe(1);
    expect(calls).toBe(1);
  });

  it('runs the statement again while it fails with SQLITE_BUSY (or _RECOVERY), then returns its result', async () => {
    let calls = 0;
    const result = await retryWhileBusy(() => {
      calls++;
      if (calls < 4) throw sqliteError(calls === 2 ? 'SQLITE_BUSY_RECOVERY' : 'SQLITE_BUSY');
      return 'written';
    }, 1000);
    expect(result).toBe('written');
    expect(calls).toBe(4);
  });

  it('waits on timers, so other work runs between the tries', async () => {
    let ticks = 0;
    const ticking = setInterval(() => ticks++, 1);
    let calls = 0;
    try {
      await retryWhileBusy(() => {
        // The lock is "released" only once the event loop has turned a few times.
        if (ticks < 3) {
          calls++;
          throw sqliteError('SQLITE_BUSY');
        }
      }, 5000);
    } finally {
      clearInterval(ticking);
    }
    expect(ticks).toBeGreaterThanOrEqual(3);
    expect(calls).toBeGreaterThan(0);
  });

  it('gives up with the last SQLITE_BUSY once the planned pauses add up to the timeout', async () => {
    let calls = 0;
    const busy = sqliteError('SQLITE_BUSY');
    await expect(
      retryWhileBusy(() => {
        calls++;
        throw busy;
      }, 20),
    ).rejects.toBe(busy);
    // Pauses of 1, 2, 3, 4, 5 ms, then the 5 left of the 20: the first try and six retries.
    expect(calls).toBe(7);
  });

  it('does not retry other errors, nor extended busy codes that a retry cannot cure', async () => {
    for (const code of ['SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_BUSY_SNAPSHOT']) {
      let calls = 0;
      const error = sqliteError(code);
      await expect(
        retryWhileBusy(() => {
          calls++;
          throw error;
        }, 1000),
      ).rejects.toBe(error);
      expect(calls).toBe(1);
    }
    expect(isSqliteBusy('SQLITE_BUSY')).toBe(false);
  });

  it('also retries a statement that reports SQLITE_BUSY through a rejected promise', async () => {
    let calls = 0;
    const result = await retryWhileBusy(async () => {
      calls++;
      if (calls === 1) throw sqliteError('SQLITE_BUSY');
      return calls;
    }, 1000);
    expect(result).toBe(2);
  });

  it('pauses 1, 2, … ms, at most 10', () => {
    expect([0, 1, 2, 8, 9, 10, 50].map(busyRetryDelayMs)).toEqual([1, 2, 3, 9, 10, 10, 10]);
  });
});
