import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualClock } from '../clock/clock.js';
import type { AcquireRequest, AcquireResult, AdmissionStore, AdmissionTicket } from './admission-store.js';
import type { AdmissionScope, Limits } from './limits.js';
import { rateLimitHeaders } from './rate-limit-headers.js';

/** How the conformance suite reaches one `AdmissionStore` implementation. */
export interface AdmissionStoreConformanceOptions {
  /** The clock every opened store reads; the suite moves it forward. Stores use the default windows (60 s / 1 s). */
  clock: VirtualClock;
  /**
   * Returns a store sharing its counters with every store returned before (the same instance for an in-process
   * store; a new connection to the same Redis and key prefix for Redis). The suite closes what it opens.
   */
  open: () => Promise<AdmissionStore>;
  /** Runs after every store is closed (e.g. deletes the test's keys). */
  cleanup?: () => Promise<void>;
}

const SECOND = 1000;
const WINDOW_MS = 60_000;
const DAY_MS = 86_400_000;
// With the default windows budget taken in bucket b returns at the start of bucket b + 61 (limits.ts).
const RETURN_AFTER_BUCKETS = WINDOW_MS / SECOND + 1;

/** Registers the `AdmissionStore` conformance tests (Vitest) for one implementation. */
export function describeAdmissionStoreConformance(name: string, options: AdmissionStoreConformanceOptions): void {
  describe(`AdmissionStore conformance: ${name}`, () => {
    const clock = options.clock;
    const opened: AdmissionStore[] = [];
    let store: AdmissionStore;
    let tenantSequence = 0;
    const run = Math.random().toString(36).slice(2, 8);

    beforeAll(async () => {
      store = await options.open();
      opened.push(store);
    });

    afterAll(async () => {
      for (const instance of opened) await instance.close();
      await options.cleanup?.();
    });

    const newTenant = (): string => `ten_${run}_${++tenantSequence}`;
    /** Moves the clock to `offsetMs` into the next whole second and returns that time. */
    const alignToSecond = (offsetMs: number): number => {
      const target = (Math.floor(clock.now() / SECOND) + 1) * SECOND + offsetMs;
      clock.advanceTo(target);
      return target;
    };
    const request = (tenantId: string, scopes: AdmissionScope[], tokens = 0, leaseMs = 30_000): AcquireRequest => ({
      tenantId,
      scopes,
      tokens,
      leaseMs,
    });
    const tenantScope = (tenantId: string, limits: Limits): AdmissionScope => ({ id: `tenant:${tenantId}`, limits });
    const granted = (result: AcquireResult): AdmissionTicket => {
      if (!result.ok) throw new Error(`expected an admission, got a refusal (${result.reason} on ${result.scope})`);
      return result.ticket;
    };
    /** Acquires `request` until refused; returns how many passed (at most `cap`). */
    const admitUntilRefused = async (acquire: AcquireRequest, cap = 1000): Promise<number> => {
      let passed = 0;
      while (passed < cap && (await store.acquire(acquire)).ok) passed++;
      return passed;
    };

    it('admits a request with no limited scope and reports no window', async () => {
      const result = await store.acquire(request(newTenant(), [], 100));
      expect(result.ok).toBe(true);
      expect(result.state).toEqual({});
    });

    describe('requests per minute', () => {
      it('passes the limit, refuses one more until the first bucket leaves the window, then passes again', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { rpm: 5 });
        const start = alignToSecond(250);
        const bucket = Math.floor(start / SECOND);
        const expectedWait = (bucket + RETURN_AFTER_BUCKETS) * SECOND - start;
        for (let i = 0; i < 5; i++) {
          const result = await store.acquire(request(tenantId, [scope]));
          expect(result.ok).toBe(true);
          // The reset is when the next request would be admitted: at once while one remains.
          expect(result.state.requests).toEqual({ limit: 5, remaining: 4 - i, resetMs: i < 4 ? 0 : expectedWait });
        }
        const refused = await store.acquire(request(tenantId, [scope]));
        expect(refused).toMatchObject({ ok: false, reason: 'rpm', scope: scope.id, retryAfterMs: expectedWait });
        expect(refused.state.requests).toEqual({ limit: 5, remaining: 0, resetMs: expectedWait });

        clock.advance(expectedWait - 1);
        const stillRefused = await store.acquire(request(tenantId, [scope]));
        expect(stillRefused).toMatchObject({ ok: false, reason: 'rpm', retryAfterMs: 1 });

        clock.advance(1);
        expect(await admitUntilRefused(request(tenantId, [scope]))).toBe(5);
      });

      it('slides: budget comes back bucket by bucket, never more than the limit within a minute', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { rpm: 4 });
        const start = alignToSecond(0);
        const firstBucket = start / SECOND;
        expect(await admitUntilRefused(request(tenantId, [scope]), 2)).toBe(2);
        clock.advance(30 * SECOND);
        expect(await admitUntilRefused(request(tenantId, [scope]))).toBe(2);
        const refused = await store.acquire(request(tenantId, [scope]));
        const firstFree = (firstBucket + RETURN_AFTER_BUCKETS) * SECOND - clock.now();
        expect(refused).toMatchObject({ ok: false, retryAfterMs: firstFree });
        // The next request is admitted when the first two leave the window, not the last two (30 s later).
        expect(refused.state.requests).toEqual({ limit: 4, remaining: 0, resetMs: firstFree });
        // Exactly 60 s after the first two: they are still counted (the window covers at least a full minute).
        clock.advanceTo(start + WINDOW_MS);
        expect((await store.acquire(request(tenantId, [scope]))).ok).toBe(false);
        clock.advanceTo((firstBucket + RETURN_AFTER_BUCKETS) * SECOND);
        expect(await admitUntilRefused(request(tenantId, [scope]))).toBe(2);
        const second = await store.acquire(request(tenantId, [scope]));
        expect(second).toMatchObject({
          ok: false,
          retryAfterMs: (firstBucket + 30 + RETURN_AFTER_BUCKETS) * SECOND - clock.now(),
        });
      });

      it('resets when every exhausted scope has a request free again', async () => {
        const tenantId = newTenant();
        const tenant = tenantScope(tenantId, { rpm: 2 });
        const keyA: AdmissionScope = { id: `key:a_${tenantId}`, limits: { rpm: 1 } };
        const keyB: AdmissionScope = { id: `key:b_${tenantId}`, limits: { rpm: 1 } };
        const start = alignToSecond(0);
        granted(await store.acquire(request(tenantId, [tenant, keyA])));
        clock.advance(30 * SECOND);
        const second = await store.acquire(request(tenantId, [tenant, keyB]));
        // The tenant frees a request 61 s after the first take, key B 61 s after the second: B decides.
        const keyBFree = start + 30 * SECOND + RETURN_AFTER_BUCKETS * SECOND - clock.now();
        expect(second.state.requests).toEqual({ limit: 1, remaining: 0, resetMs: keyBFree });
        clock.advance(SECOND);
        const refused = await store.acquire(request(tenantId, [tenant, keyB]));
        expect(refused).toMatchObject({ ok: false, reason: 'rpm', retryAfterMs: keyBFree - SECOND });
        expect(refused.state.requests).toEqual({ limit: 1, remaining: 0, resetMs: keyBFree - SECOND });
      });
    });

    describe('tokens per minute', () => {
      it('charges the estimate and reconcile returns an over-estimate and charges an under-estimate', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { tpm: 1000 });
        alignToSecond(500);
        const first = await store.acquire(request(tenantId, [scope], 600));
        expect(first.state.tokens).toMatchObject({ limit: 1000, remaining: 400 });
        const tooMany = await store.acquire(request(tenantId, [scope], 500));
        expect(tooMany).toMatchObject({ ok: false, reason: 'tpm', scope: scope.id });
        expect(tooMany.ok === false && tooMany.retryAfterMs).toBeGreaterThan(0);

        // The request used 100 of its 600: 500 come back at once.
        const firstTicket = granted(first);
        await store.reconcile(firstTicket, 100);
        expect(firstTicket.chargedTokens).toBe(100);
        await store.reconcile(firstTicket, 100);
        const second = await store.acquire(request(tenantId, [scope], 500));
        expect(second.state.tokens).toMatchObject({ remaining: 400 });

        // This one used 700 of its 500: 200 more are charged.
        await store.reconcile(granted(second), 700);
        const refused = await store.acquire(request(tenantId, [scope], 201));
        expect(refused).toMatchObject({ ok: false, reason: 'tpm' });
        const last = await store.acquire(request(tenantId, [scope], 200));
        expect(last.state.tokens).toMatchObject({ remaining: 0 });
      });

      it('returns tokens to the bucket they were taken from, which leaves the window on time', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { tpm: 1000 });
        const start = alignToSecond(0);
        const early = granted(await store.acquire(request(tenantId, [scope], 400)));
        clock.advance(20 * SECOND);
        granted(await store.acquire(request(tenantId, [scope], 400)));
        await store.reconcile(early, 300);
        // Usage: 300 at second 0, 400 at second 20. When second 0 leaves the window 300 come back, not 400.
        clock.advanceTo(start + RETURN_AFTER_BUCKETS * SECOND);
        const state = await store.acquire(request(tenantId, [scope], 0));
        expect(state.state.tokens).toMatchObject({ remaining: 600 });
      });

      it('refuses a request larger than the limit itself, with the window as retry-after', async () => {
        const tenantId = newTenant();
        const result = await store.acquire(request(tenantId, [tenantScope(tenantId, { tpm: 100 })], 101));
        expect(result).toMatchObject({ ok: false, reason: 'tpm', retryAfterMs: WINDOW_MS });
      });
    });

    describe('tokens per day', () => {
      it('counts the UTC day and resets at midnight', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { tpd: 1000 });
        const midnight = (Math.floor(clock.now() / DAY_MS) + 1) * DAY_MS;
        clock.advanceTo(midnight - 10 * SECOND);
        const first = granted(await store.acquire(request(tenantId, [scope], 800)));
        const refused = await store.acquire(request(tenantId, [scope], 300));
        expect(refused).toMatchObject({ ok: false, reason: 'tpd', scope: scope.id, retryAfterMs: 10 * SECOND });
        expect(refused.state.tokensPerDay).toEqual({ limit: 1000, remaining: 200, resetMs: 10 * SECOND });

        clock.advanceTo(midnight);
        granted(await store.acquire(request(tenantId, [scope], 300)));
        // Yesterday's over-estimate is not credited to today.
        await store.reconcile(first, 0);
        expect(await store.acquire(request(tenantId, [scope], 701))).toMatchObject({ ok: false, reason: 'tpd' });
        const last = await store.acquire(request(tenantId, [scope], 700));
        expect(last.state.tokensPerDay).toEqual({ limit: 1000, remaining: 0, resetMs: DAY_MS });
      });
    });

    describe('concurrency', () => {
      it('holds a lease per request until released', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { concurrency: 2 });
        const first = granted(await store.acquire(request(tenantId, [scope], 0, 10_000)));
        granted(await store.acquire(request(tenantId, [scope], 0, 10_000)));
        const refused = await store.acquire(request(tenantId, [scope], 0, 10_000));
        // Earliest lease expiry is 10 s away; the suggested wait is capped at 1 s.
        expect(refused).toMatchObject({ ok: false, reason: 'concurrency', scope: scope.id, retryAfterMs: 1000 });
        await store.release(first);
        await store.release(first);
        granted(await store.acquire(request(tenantId, [scope], 0, 10_000)));
        expect((await store.acquire(request(tenantId, [scope], 0, 10_000))).ok).toBe(false);
      });

      it('lets leases expire after leaseMs so a crashed holder cannot leak them', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { concurrency: 2 });
        granted(await store.acquire(request(tenantId, [scope], 0, 5000)));
        clock.advance(2000);
        granted(await store.acquire(request(tenantId, [scope], 0, 5000)));
        clock.advance(2700);
        expect(await store.acquire(request(tenantId, [scope], 0, 5000))).toMatchObject({
          ok: false,
          reason: 'concurrency',
          retryAfterMs: 300,
        });
        clock.advance(300);
        granted(await store.acquire(request(tenantId, [scope], 0, 5000)));
        expect((await store.acquire(request(tenantId, [scope], 0, 5000))).ok).toBe(false);
        clock.advance(2000);
        granted(await store.acquire(request(tenantId, [scope], 0, 5000)));
      });
    });

    describe('atomicity', () => {
      it('a refusal by one scope takes nothing from the others', async () => {
        const tenantId = newTenant();
        const tenant = tenantScope(tenantId, { rpm: 10, tpm: 10_000, tpd: 100_000, concurrency: 10 });
        const key: AdmissionScope = { id: `key:key_${tenantId}`, limits: { rpm: 2 } };
        alignToSecond(100);
        expect(await admitUntilRefused(request(tenantId, [tenant, key], 100), 5)).toBe(2);
        const refused = await store.acquire(request(tenantId, [tenant, key], 100));
        expect(refused).toMatchObject({ ok: false, reason: 'rpm', scope: key.id });
        // The tenant scope holds exactly the two admitted requests: 3 in total with this one.
        const probe = await store.acquire(request(tenantId, [tenant], 100));
        expect(probe.state.requests).toMatchObject({ remaining: 7 });
        expect(probe.state.tokens).toMatchObject({ remaining: 10_000 - 300 });
        expect(probe.state.tokensPerDay).toMatchObject({ remaining: 100_000 - 300 });
      });

      it('a refusal by a later limit of the same scope takes nothing from its earlier ones', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { rpm: 10, tpm: 1000 });
        alignToSecond(0);
        granted(await store.acquire(request(tenantId, [scope], 900)));
        expect(await store.acquire(request(tenantId, [scope], 200))).toMatchObject({ ok: false, reason: 'tpm' });
        const probe = await store.acquire(request(tenantId, [scope], 100));
        expect(probe.state.requests).toMatchObject({ remaining: 8 });
      });

      it('rollback restores every counter exactly, once', async () => {
        const tenantId = newTenant();
        const limits: Limits = { rpm: 5, tpm: 1000, tpd: 5000, concurrency: 1 };
        const scopes = [tenantScope(tenantId, limits), { id: `key:key_${tenantId}`, limits: { rpm: 3 } }];
        alignToSecond(0);
        const first = await store.acquire(request(tenantId, scopes, 400));
        const ticket = granted(first);
        await store.rollback(ticket);
        expect(ticket.rolledBack).toBe(true);
        // As if the first never happened: the same request sees the same state, concurrency included.
        const again = await store.acquire(request(tenantId, scopes, 400));
        expect(again.ok).toBe(true);
        expect(again.state).toEqual(first.state);
        // A second rollback of the same ticket must not undo the new take.
        await store.rollback(ticket);
        const withoutConcurrency = [tenantScope(tenantId, { rpm: 5 }), scopes[1]!];
        expect(await admitUntilRefused(request(tenantId, withoutConcurrency, 0))).toBe(2);
        expect((await store.acquire(request(tenantId, scopes, 0))).ok).toBe(false);
      });

      it('rollback after reconcile returns the reconciled tokens, not the estimate', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { tpm: 1000 });
        alignToSecond(0);
        granted(await store.acquire(request(tenantId, [scope], 300)));
        const ticket = granted(await store.acquire(request(tenantId, [scope], 500)));
        await store.reconcile(ticket, 200);
        await store.rollback(ticket);
        const probe = await store.acquire(request(tenantId, [scope], 0));
        expect(probe.state.tokens).toMatchObject({ remaining: 700 });
      });

      it('reports the refusing limit that frees up last', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { rpm: 1, tpd: 100 });
        const midnight = (Math.floor(clock.now() / DAY_MS) + 1) * DAY_MS;
        clock.advanceTo(midnight - 2 * 3600 * SECOND);
        granted(await store.acquire(request(tenantId, [scope], 100)));
        expect(await store.acquire(request(tenantId, [scope], 1))).toMatchObject({
          ok: false,
          reason: 'tpd',
          retryAfterMs: 2 * 3600 * SECOND,
        });
      });

      it('200 concurrent acquires against a limit of 20 admit exactly 20', async () => {
        const stores = [store];
        for (let i = 0; i < 3; i++) {
          const other = await options.open();
          opened.push(other);
          stores.push(other);
        }
        const tenantId = newTenant();
        const scopes = [tenantScope(tenantId, { rpm: 20, tpm: 1_000_000 })];
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, index) =>
            stores[index % stores.length]!.acquire(request(tenantId, scopes, 5)),
          ),
        );
        expect(results.filter((result) => result.ok)).toHaveLength(20);
        const refusals = results.filter((result) => !result.ok);
        expect(refusals).toHaveLength(180);
        for (const refusal of refusals)
          expect(refusal).toMatchObject({ reason: 'rpm', state: { requests: { remaining: 0 } } });
        const probe = await store.acquire(request(tenantId, [tenantScope(tenantId, { tpm: 1_000_000 })], 0));
        expect(probe.state.tokens).toMatchObject({ remaining: 1_000_000 - 20 * 5 });
      });
    });

    describe('state and headers', () => {
      it("reports the most constraining scope in OpenAI's headers", async () => {
        const tenantId = newTenant();
        const tenant = tenantScope(tenantId, { rpm: 60, tpm: 150_000 });
        const key: AdmissionScope = { id: `key:key_${tenantId}`, limits: { rpm: 100, tpm: 40_000 } };
        const now = alignToSecond(250);
        const reset = (Math.floor(now / SECOND) + RETURN_AFTER_BUCKETS) * SECOND - now;
        const result = await store.acquire(request(tenantId, [tenant, key], 16));
        expect(result.ok).toBe(true);
        // A next request is admitted at once (59 remain); the tokens' window is empty again when the take leaves it.
        expect(result.state).toEqual({
          requests: { limit: 60, remaining: 59, resetMs: 0 },
          tokens: { limit: 40_000, remaining: 39_984, resetMs: reset },
        });
        expect(rateLimitHeaders(result.state)).toEqual({
          'x-ratelimit-limit-requests': '60',
          'x-ratelimit-remaining-requests': '59',
          'x-ratelimit-reset-requests': '0s',
          'x-ratelimit-limit-tokens': '40000',
          'x-ratelimit-remaining-tokens': '39984',
          'x-ratelimit-reset-tokens': '1m0.75s',
        });
      });

      it('adds retry-after in whole seconds to a refusal', async () => {
        const tenantId = newTenant();
        const scope = tenantScope(tenantId, { rpm: 1 });
        const now = alignToSecond(400);
        granted(await store.acquire(request(tenantId, [scope])));
        clock.advance(59_000);
        const refused = await store.acquire(request(tenantId, [scope]));
        if (refused.ok) throw new Error('expected a refusal');
        const wait = (Math.floor(now / SECOND) + RETURN_AFTER_BUCKETS) * SECOND - clock.now();
        expect(refused.retryAfterMs).toBe(wait);
        expect(rateLimitHeaders(refused.state, refused.retryAfterMs)).toEqual({
          'x-ratelimit-limit-requests': '1',
          'x-ratelimit-remaining-requests': '0',
          'x-ratelimit-reset-requests': '1.6s',
          'retry-after': '2',
        });
      });
    });
  });
}
