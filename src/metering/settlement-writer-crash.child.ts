import { createStore } from '../store/create-store.js';
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
  const receivedAt = Date.now();
  const log = {
    requestId: `crash-${index}`,
    tenantId: 'ten_crash',
    keyId: null,
    endpoint: 'chat',
    model: 'model-a',
    deployment: 'sim/model-a',
    status: 200,
    errorCode: null,
    stream: false,
    promptTokens: index,
    cachedTokens: 0,
    completionTokens: 1,
    reasoningTokens: 0,
    usageEstimated: false,
    latencyMs: 1.5,
    ttftMs: null,
    attempts: 1,
    createdAt: receivedAt,
  };
  const amount = BigInt(index + 1);
  const event = {
    requestId: log.requestId,
    tenantId: 'ten_crash',
    keyId: null,
    model: 'model-a',
    deployment: 'sim/model-a',
    batch: false,
    receivedAt,
    currency: 'CNY',
    priceVersion: 'v1',
    tier: '0-32768',
    outputCondition: null,
    inputTokens: index,
    cachedTokens: 0,
    outputTokens: 1,
    reasoningTokens: 0,
    estimated: false,
    inputListAmount: amount,
    cachedListAmount: 0n,
    outputListAmount: 0n,
    batchDiscount: 0n,
    offPeakDiscount: 0n,
    contractDiscount: 0n,
    volumeDiscount: 0n,
    amount,
    cost: null,
    detail: '{}',
  };
  return writer.write({ log, event });
});
const outcomes = await Promise.all(writes);
process.stdout.write(outcomes.every(Boolean) ? 'committed\n' : 'dropped\n');
// Block the thread (no CPU) until the parent kills the process: nothing more can be flushed after "committed", so
// a record whose promise resolved before its commit would be missing from the file.
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
