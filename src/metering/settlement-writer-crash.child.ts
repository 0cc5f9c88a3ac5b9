import { createStore } from '../store/create-store.js';
import { settlementOf, usageEventFixture } from '../store/ledger-fixtures.js';
import { SettlementWriter } from './settlement-writer.js';

// Child process of settlement-writer.test.ts:
// `node settlement-writer-crash.child.js <sqlite path> <count>` writes <count> settlements (request-log row and
// usage event of index + 1 nano-units each) through the writer, awaits their commit, prints "committed" and waits
// to be killed with SIGKILL.
const [path, countText] = process.argv.slice(2);
if (path === undefined || countText === undefined) throw new Error('usage: <sqlite path> <count>');
const store = await createStore(`sqlite://${path}`);
await store.migrate();
const writer = new SettlementWriter(store);
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
// a record whose promise resolved before its commit would be missing from the file.
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
