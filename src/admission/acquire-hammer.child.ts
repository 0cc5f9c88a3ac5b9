import { setTimeout as sleep } from 'node:timers/promises';
import type { Limits } from './limits.js';
import { createRedisAdmissionStore } from './redis-admission-store.js';

// Child process of redis-cluster.test.ts: one "gateway process" hammering `acquire` on one scope until `endAt`,
// then printing the store times (Redis TIME) of its admissions as JSON.
interface HammerArguments {
  redisUrl: string;
  keyPrefix: string;
  tenantId: string;
  limits: Limits;
  windowMs: number;
  bucketMs: number;
  /** Wall-clock ms at which to start (all children start together). */
  startAt: number;
  endAt: number;
  /** Acquires in flight at once. */
  parallel: number;
}

const argument = process.argv[2];
if (argument === undefined) throw new Error('usage: acquire-hammer.child.js <json arguments>');
const options = JSON.parse(argument) as HammerArguments;
const store = await createRedisAdmissionStore({
  redis: options.redisUrl,
  keyPrefix: options.keyPrefix,
  windowMs: options.windowMs,
  bucketMs: options.bucketMs,
  commandTimeoutMs: 2000,
});
const scopes = [{ id: `tenant:${options.tenantId}`, limits: options.limits }];
const admitted: number[] = [];
let attempts = 0;
await sleep(Math.max(0, options.startAt - Date.now()));
await Promise.all(
  Array.from({ length: options.parallel }, async () => {
    while (Date.now() < options.endAt) {
      attempts++;
      const result = await store.acquire({ tenantId: options.tenantId, scopes, tokens: 1, leaseMs: 1000 });
      if (result.ok) admitted.push(result.ticket.at);
      else await sleep(Math.min(result.retryAfterMs, 3));
    }
  }),
);
await store.close();
process.stdout.write(`${JSON.stringify({ admitted, attempts })}\n`);
