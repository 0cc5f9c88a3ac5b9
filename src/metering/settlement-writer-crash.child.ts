import { createStore } from '../store/create-store.js';
import { settlementOf, usageEventFixture } from '../store/ledger-fixtures.js';
import { SettlementJournal } from './settlement-journal.js';
import { SettlementWriter } from './settlement-writer.js';

// Child process of settlement-writer.test.ts:
// `node settlement-writer-crash.child.js <sqlite path> <count> [<journal directory>]` writes <count> settlements
// (request-log row and usage event of index + 1 nano-units each) through the writer, awaits their promises, prints
// "committed" and waits to be killed with SIGKILL. With a journal directory the store never finishes a commit: the
// writes are durable through the journal alone.
const [path, countText, journalDirectory] = process.argv.slice(2);
if (path === undefined || countText === undefined)
  throw new Error('usage: <sqlite path> <count> [<journal directory>]');
const store = await createStore(`sqlite://${path}`);
await store.migrate();
const writer =
  journalDirectory === undefined
    ? new SettlementWriter(store)
    : new SettlementWriter(
        { settle: () => new Promise<void>(() => {}) },
        { journal: new SettlementJournal(journalDirectory) },
      );
const writes = Array.from({ length: Number(countText) }, (_, index) => {
  const event = usageEventFixture({
    requestId: `crash-${index}`,
    tenantId: 'ten_crash',
    receivedAt: Date.now(),
    inputTokens: index,
    outputTokens: 1,
    inputListAmount: BigInt(index + 1),
  });
  return writer.write(settlementOf(event));
});
const outcomes = await Promise.all(writes);
process.stdout.write(outcomes.every(Boolean) ? 'committed\n' : 'dropped\n');
// Block the thread (no CPU) until the parent kills the process: nothing more can be flushed after "committed", so
// a record whose promise resolved before it was durable would be missing from the file.
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
