/**
 * The body of the SQLite settle thread (see `SqliteSettleThread`): its own connection to the store's file, and one
 * `settle` transaction per request, answered in order. The thread also owns the WAL checkpoints (the main
 * connection's automatic checkpoints are off): its own commits trigger them past the threshold, and a passive
 * checkpoint every second catches what the main connection wrote (key changes, batch progress) while no request
 * settled.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { SettleThreadData, SettleThreadReply, SettleThreadRequest } from './sqlite-settle-thread.js';
import { openSqliteStore } from './sqlite-store.js';

const port = parentPort;
if (port === null) throw new Error('sqlite-settle-worker runs only as a worker thread');
const { path } = workerData as SettleThreadData;
const store = openSqliteStore(path);

/** Interval of the passive checkpoint, ms. */
const CHECKPOINT_INTERVAL_MS = 1000;

setInterval(() => {
  try {
    store.checkpoint();
  } catch {
    // A busy or failed passive checkpoint is harmless: the next one (or the next commit's) copies the same frames.
  }
}, CHECKPOINT_INTERVAL_MS);

port.on('message', (request: SettleThreadRequest) => {
  let reply: SettleThreadReply;
  try {
    store.settleNow(request.batch);
    reply = { id: request.id };
  } catch (error: unknown) {
    reply = { id: request.id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(reply);
});
