import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Catalog, type Deployment } from '../catalog/catalog.js';
import { VirtualClock } from '../clock/clock.js';
import { UpstreamError } from '../errors/gateway-error.js';
import { DeploymentRouter } from './deployment-router.js';
import { type HealthProbe, HealthProber, type ProbeResult } from './health-prober.js';
import { testDeployments, testModel } from './test-deployments.js';

/** A probe whose verdict per deployment is set by the test; counts its calls. */
function controllableProbe() {
  const healthy = new Map<string, boolean>();
  const calls: string[] = [];
  const probe: HealthProbe = async (deployment) => {
    calls.push(deployment.id);
    if (healthy.get(deployment.id) === false) {
      throw new UpstreamError('refused', { code: 'upstream_unreachable' });
    }
  };
  return { healthy, calls, probe };
}

function setup(names: string[]) {
  const clock = new VirtualClock(0);
  const deployments = testDeployments(...names);
  // Two models share deployment a: it must be probed once per round.
  const catalog = new Catalog([testModel(deployments, 'one'), testModel([deployments[0]!], 'two')]);
  const router = new DeploymentRouter({ clock, catalog, breaker: { failureThreshold: 2, openMs: 5_000 } });
  return { clock, deployments, catalog, router };
}

/** Advances virtual time and lets the probes' promises settle. */
async function advance(clock: VirtualClock, ms: number): Promise<void> {
  clock.advance(ms);
  await nextTurn();
}

describe('HealthProber', () => {
  it('probes each deployment once per interval and opens the circuit of one that keeps failing', async () => {
    const { clock, deployments, catalog, router } = setup(['a', 'b']);
    const [a, b] = deployments as [Deployment, Deployment];
    const { healthy, calls, probe } = controllableProbe();
    healthy.set('b/m', false);
    const results: ProbeResult[] = [];
    const prober = new HealthProber(router, catalog, {
      clock,
      intervalMs: 1_000,
      probe,
      skipAfterSuccessMs: 0,
      onProbe: (result) => results.push(result),
    });
    prober.start();
    await advance(clock, 999);
    expect(calls).toEqual([]);
    await advance(clock, 1);
    expect(calls).toEqual(['a/m', 'b/m']);
    expect(router.snapshot(b).circuit).toBe('closed');
    await advance(clock, 1_000);
    expect(router.snapshot(b).circuit).toBe('open');
    expect(router.snapshot(a).circuit).toBe('closed');
    expect(results.filter((result) => result.deployment === 'b/m').map((result) => result.outcome)).toEqual([
      'unhealthy',
      'unhealthy',
    ]);
    expect(results.filter((result) => result.deployment === 'b/m').map((result) => result.errorCode)).toEqual([
      'upstream_unreachable',
      'upstream_unreachable',
    ]);

    // During the 5 s cool-down b is left alone; a is still probed every second.
    calls.length = 0;
    await advance(clock, 1_000);
    await advance(clock, 1_000);
    await advance(clock, 1_000);
    await advance(clock, 1_000);
    expect(calls).toEqual(['a/m', 'a/m', 'a/m', 'a/m']);

    // It recovers; after the cool-down the prober's probe is the half-open trial and closes the circuit.
    healthy.set('b/m', true);
    await advance(clock, 1_000);
    expect(calls.filter((id) => id === 'b/m')).toEqual(['b/m']);
    expect(router.snapshot(b).circuit).toBe('closed');
    prober.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it('fails a probe that does not answer within timeoutMs and aborts it', async () => {
    const { clock, deployments, catalog, router } = setup(['a']);
    let signal: AbortSignal | undefined;
    const hanging: HealthProbe = (_deployment, _kind, probeSignal) => {
      signal = probeSignal;
      return new Promise(() => {});
    };
    const prober = new HealthProber(router, catalog, { clock, intervalMs: 10_000, timeoutMs: 300, probe: hanging });
    const round = prober.probeAll();
    await advance(clock, 299);
    expect(signal?.aborted).toBe(false);
    await advance(clock, 1);
    const results = await round;
    expect(results).toEqual([
      { deployment: 'a/m', outcome: 'unhealthy', errorCode: 'upstream_timeout', durationMs: 300 },
    ]);
    expect(signal?.aborted).toBe(true);
    expect(router.snapshot(deployments[0]!).consecutiveFailures).toBe(1);
    expect(router.snapshot(deployments[0]!).inFlightRequests).toBe(0);
  });

  it('skips a deployment that served traffic successfully within the last interval', async () => {
    const { clock, deployments, catalog, router } = setup(['a', 'b']);
    const { calls, probe } = controllableProbe();
    const prober = new HealthProber(router, catalog, { clock, intervalMs: 1_000, probe });
    router.begin(deployments[0]!, 10).succeed();
    await advance(clock, 500);
    await prober.probeAll();
    expect(calls).toEqual(['b/m']);
    await advance(clock, 500);
    await prober.probeAll();
    expect(calls).toEqual(['b/m', 'a/m']);
  });

  it('does not record a verdict for probes aborted by stop()', async () => {
    const { deployments, catalog, router } = setup(['a']);
    const clock = new VirtualClock(0);
    const abortable: HealthProbe = (_deployment, _kind, signal) =>
      new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    const prober = new HealthProber(router, catalog, { clock, probe: abortable });
    const round = prober.probeAll();
    prober.stop();
    expect(await round).toEqual([{ deployment: 'a/m', outcome: 'cancelled', errorCode: null, durationMs: 0 }]);
    expect(router.snapshot(deployments[0]!).consecutiveFailures).toBe(0);
    expect(router.snapshot(deployments[0]!).inFlightRequests).toBe(0);
  });
});
