import { describe, expect, it } from 'vitest';
import type { Deployment } from '../catalog/catalog.js';
import { VirtualClock } from '../clock/clock.js';
import { UpstreamError, UpstreamTimeoutError } from '../errors/gateway-error.js';
import { callWithFailover, type FailoverAttempt, summarizeAttempts } from './call-with-failover.js';
import { DeploymentRouter, type DeploymentRouterOptions } from './deployment-router.js';
import { NoDeploymentAvailableError } from './no-deployment-available-error.js';
import { testDeployments, testModel } from './test-deployments.js';

function setup(names: string[], options: DeploymentRouterOptions = {}) {
  const clock = new VirtualClock(0);
  const deployments = testDeployments(...names);
  return { clock, model: testModel(deployments), router: new DeploymentRouter({ clock, ...options }), deployments };
}

/** An attempt function whose behaviour per deployment id is scripted; records the order of calls. */
function scripted(script: Record<string, () => Promise<string>>) {
  const calls: string[] = [];
  const attemptFn = async (deployment: Deployment) => {
    calls.push(deployment.id);
    const step = script[deployment.id];
    if (step === undefined) throw new Error(`unexpected deployment ${deployment.id}`);
    return step();
  };
  return { calls, attemptFn };
}

const http = (status: number, retryAfterSeconds?: number) =>
  new UpstreamError(`status ${status}`, {
    code: 'upstream_http_error',
    upstreamStatus: status,
    retryable: status >= 500 || status === 429,
    ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }),
  });

describe('callWithFailover', () => {
  it('returns the first deployment’s answer and releases its tokens', async () => {
    const { model, router, deployments } = setup(['a', 'b']);
    const { calls, attemptFn } = scripted({ 'a/m': async () => 'answer' });
    const result = await callWithFailover(router, model, attemptFn, { tokens: 300 });
    expect(result.value).toBe('answer');
    expect(result.deployment.id).toBe('a/m');
    expect(calls).toEqual(['a/m']);
    expect(result.attempts.map((attempt) => [attempt.deployment, attempt.outcome])).toEqual([['a/m', 'accepted']]);
    expect(result.attempt.settled).toBe(true);
    expect(router.snapshot(deployments[0]!).inFlightTokens).toBe(0);
    expect(router.snapshot(deployments[0]!).lastSuccessAt).not.toBeNull();
  });

  it('moves to another deployment on 5xx, timeouts and 429, never back to one that failed', async () => {
    const { clock, model, router, deployments } = setup(['a', 'b', 'c', 'd']);
    const { calls, attemptFn } = scripted({
      'a/m': async () => {
        throw http(503);
      },
      'b/m': async () => {
        throw new UpstreamTimeoutError('no headers', 'first_byte');
      },
      'c/m': async () => {
        throw http(429, 3);
      },
      'd/m': async () => 'from d',
    });
    const seen: FailoverAttempt[] = [];
    const result = await callWithFailover(router, model, attemptFn, {
      tokens: 10,
      maxAttempts: 4,
      onAttempt: (attempt) => seen.push(attempt),
    });
    expect(calls).toEqual(['a/m', 'b/m', 'c/m', 'd/m']);
    expect(result.value).toBe('from d');
    expect(
      result.attempts.map((attempt) => [
        attempt.deployment,
        attempt.outcome,
        attempt.errorCode,
        attempt.upstreamStatus,
      ]),
    ).toEqual([
      ['a/m', 'unhealthy', 'upstream_http_error', 503],
      ['b/m', 'unhealthy', 'upstream_timeout', null],
      ['c/m', 'saturated', 'upstream_http_error', 429],
      ['d/m', 'accepted', null, null],
    ]);
    expect(seen).toEqual(result.attempts);
    expect(router.snapshot(deployments[2]!).saturatedUntil).toBe(clock.now() + 3_000);
    expect(router.snapshot(deployments[0]!).consecutiveFailures).toBe(1);
    for (const deployment of deployments) expect(router.snapshot(deployment).inFlightTokens).toBe(0);
  });

  it('throws the last error after maxAttempts (default 3), with every attempt reported', async () => {
    const { model, router } = setup(['a', 'b', 'c', 'd']);
    const failing = async (): Promise<string> => {
      throw http(502);
    };
    const { calls, attemptFn } = scripted({ 'a/m': failing, 'b/m': failing, 'c/m': failing, 'd/m': failing });
    const seen: FailoverAttempt[] = [];
    const error = await callWithFailover(router, model, attemptFn, {
      tokens: 1,
      onAttempt: (attempt) => seen.push(attempt),
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(UpstreamError);
    expect(calls).toEqual(['a/m', 'b/m', 'c/m']);
    expect(seen.map((attempt) => attempt.outcome)).toEqual(['unhealthy', 'unhealthy', 'unhealthy']);
  });

  it('throws a client error at once, without retrying or blaming the deployment', async () => {
    const { model, router, deployments } = setup(['a', 'b']);
    const rejected = http(400);
    const { calls, attemptFn } = scripted({
      'a/m': async () => {
        throw rejected;
      },
      'b/m': async () => 'never',
    });
    await expect(callWithFailover(router, model, attemptFn, { tokens: 1 })).rejects.toBe(rejected);
    expect(calls).toEqual(['a/m']);
    expect(router.snapshot(deployments[0]!).consecutiveFailures).toBe(0);
  });

  it('stops when the request is aborted and does not hold it against the deployment', async () => {
    const { model, router, deployments } = setup(['a', 'b']);
    const abort = new AbortController();
    const { calls, attemptFn } = scripted({
      'a/m': async () => {
        abort.abort();
        throw new UpstreamError('cut', { code: 'upstream_connection_lost' });
      },
      'b/m': async () => 'never',
    });
    const seen: FailoverAttempt[] = [];
    await expect(
      callWithFailover(router, model, attemptFn, {
        tokens: 1,
        signal: abort.signal,
        onAttempt: (attempt) => seen.push(attempt),
      }),
    ).rejects.toBeInstanceOf(UpstreamError);
    expect(calls).toEqual(['a/m']);
    expect(seen.map((attempt) => attempt.outcome)).toEqual(['cancelled']);
    expect(router.snapshot(deployments[0]!).consecutiveFailures).toBe(0);
  });

  it('throws NoDeploymentAvailableError with Retry-After when every circuit is open or saturated', async () => {
    const { model, router, deployments } = setup(['a', 'b'], { breaker: { failureThreshold: 1, openMs: 4_200 } });
    router.begin(deployments[0]!, 1).fail(http(500));
    router.markSaturated(deployments[1]!, 2_500);
    const { calls, attemptFn } = scripted({});
    const error = await callWithFailover(router, model, attemptFn, { tokens: 1 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(NoDeploymentAvailableError);
    const unavailable = error as NoDeploymentAvailableError;
    expect(unavailable.status).toBe(503);
    expect(unavailable.code).toBe('no_deployment_available');
    expect(unavailable.retryAfterMs).toBe(2_500);
    expect(unavailable.headers['retry-after']).toBe('3');
    expect(calls).toEqual([]);
  });

  it('throws the upstream error, not NoDeploymentAvailableError, when the fleet runs out after failures', async () => {
    const { model, router } = setup(['a', 'b']);
    const last = http(503);
    const { attemptFn } = scripted({
      'a/m': async () => {
        throw http(500);
      },
      'b/m': async () => {
        throw last;
      },
    });
    await expect(callWithFailover(router, model, attemptFn, { tokens: 1, maxAttempts: 5 })).rejects.toBe(last);
  });

  it('with keepOpen, keeps the tokens in flight until the caller finishes the attempt', async () => {
    const { clock, model, router, deployments } = setup(['a']);
    const result = await callWithFailover(
      router,
      model,
      async () => {
        clock.advance(40);
        return 'stream';
      },
      { tokens: 500, keepOpen: true },
    );
    expect(router.snapshot(deployments[0]!).inFlightTokens).toBe(500);
    expect(router.snapshot(deployments[0]!).latencyEwmaMs).toBe(40);
    clock.advance(5_000);
    result.attempt.succeed();
    expect(router.snapshot(deployments[0]!).inFlightTokens).toBe(0);
    // The time to first byte was taken when the upstream accepted, not when the stream ended.
    expect(router.snapshot(deployments[0]!).latencyEwmaMs).toBe(40);
  });

  it('summarizes attempts on one line', () => {
    expect(
      summarizeAttempts([
        {
          deployment: 'a/m',
          outcome: 'unhealthy',
          errorCode: 'upstream_unreachable',
          upstreamStatus: null,
          durationMs: 1.6,
        },
        {
          deployment: 'b/m',
          outcome: 'saturated',
          errorCode: 'upstream_http_error',
          upstreamStatus: 429,
          durationMs: 3,
        },
        { deployment: 'c/m', outcome: 'accepted', errorCode: null, upstreamStatus: null, durationMs: 12.2 },
      ]),
    ).toBe('a/m unhealthy upstream_unreachable 2ms → b/m saturated upstream_http_error 429 3ms → c/m accepted 12ms');
  });
});
