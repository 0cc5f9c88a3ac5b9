import { createStore } from '../store/create-store.js';
import { RequestLogWriter } from './request-log-writer.js';

// Child process of request-log-writer.test.ts:
// `node request-log-writer-crash.child.js <sqlite path> <count>` writes <count> records through the writer, awaits
// their commit, prints "committed" and waits to be killed with SIGKILL.
const [path, countText] = process.argv.slice(2);
if (path === undefined || countText === undefined) throw new Error('usage: <sqlite path> <count>');
const store = await createStore(`sqlite://${path}`);
await store.migrate();
const writer = new RequestLogWriter(store);
const writes = Array.from({ length: Number(countText) }, (_, index) =>
  writer.write({
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
    createdAt: Date.now(),
  }),
);
const outcomes = await Promise.all(writes);
process.stdout.write(outcomes.every(Boolean) ? 'committed\n' : 'dropped\n');
// Block the thread (no CPU) until the parent kills the process: nothing more can be flushed after "committed", so
// a record whose promise resolved before its commit would be missing from the file.
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
