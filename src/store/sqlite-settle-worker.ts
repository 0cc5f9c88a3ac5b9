/**
 * The body of the SQLite settle and checkpoint threads (see `SqliteSettleThread`), each with its own connection to
 * the store's file. The settle thread runs one transaction per request (a batch of settlements, or a save of stream
 * checkpoints), answered in order. The checkpoint thread runs a passive WAL checkpoint every
 * `CHECKPOINT_INTERVAL_MS`, copying into the database file what the settle thread and the main connection (key
 * changes, batch progress; its automatic checkpoints are off) committed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { settlementFromJson } from './ledger-rows.js';
import type { SettleThreadData, SettleThreadReply, SettleThreadRequest } from './sqlite-settle-thread.js';
import { openSqliteStore } from './sqlite-store.js';

const port = parentPort;
if (port === null) throw new Error('sqlite-settle-worker runs only as a worker thread');
const { path, role } = workerData as SettleThreadData;
// This thread serves nothing else: waiting for the lock inside the call (another process's write) blocks no one.
const store = openSqliteStore(path, { busyWait: 'block' });

/**
 * Interval of the passive checkpoint, ms. At the settle thread's peak (~12,000 metered settlements/s in commits of
 * ~10, each appending ~15 pages to the WAL) a quarter second is ~4,500 pages: below the settle connection's
 * automatic checkpoint (10,000), which would stall its commits.
 */
const CHECKPOINT_INTERVAL_MS = 250;

if (role === 'checkpoint') {
  setInterval(() => {
    try {
      store.checkpoint();
    } catch {
      // A busy or failed passive checkpoint is harmless: the next one copies the same frames.
    }
  }, CHECKPOINT_INTERVAL_MS);
}

port.on('message', (request: SettleThreadRequest) => {
  let reply: SettleThreadReply;
  try {
    if ('checkpoints' in request) store.saveCheckpointsNow(request.checkpoints);
    // A settlement's JSON line holds no raw newline (JSON escapes it), so the joined lines split back exactly.
    else store.settleNow('lines' in request ? request.lines.split('\n').map(settlementFromJson) : request.batch);
    reply = { id: request.id };
  } catch (error: unknown) {
    reply = { id: request.id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(reply);
});
