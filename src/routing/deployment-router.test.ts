import { describe, expect, it } from 'vitest';
import { Catalog, type Deployment } from '../catalog/catalog.js';
import { VirtualClock } from '../clock/clock.js';
import { InvalidRequestError, UpstreamError, UpstreamTimeoutError } from '../errors/gateway-error.js';
import { DeploymentRouter, type DeploymentRouterOptions } from './deployment-router.js';
import { testDeployments, testModel } from './test-deployments.js';

function setup(names: string[], options: DeploymentRouterOptions = {}) {
  const clock = new VirtualClock(1_000_000);
  const deployments = testDeployments(...names);
  const model = testModel(deployments);
  const router = new DeploymentRouter({ clock, ...options });
  const byName = Object.fromEntries(names.map((name, index) => [name, deployments[index]!]));
  return { clock, model, router, d: byName };
}

const serverError = () => new UpstreamError('boom', { code: 'upstream_http_error', upstreamStatus: 503 });

describe('DeploymentRouter: least outstanding work', () => {
  it('picks the deployment with the fewest tokens in flight relative to its capacity', () => {
    const { model, router, d } = setup(['a', 'b', 'c'], {
      loadTieTolerance: 0,
      deployments: {
        'a/m': { capacityTokens: 1_000 },
        'b/m': { capacityTokens: 10_000 },
        'c/m': { capacityTokens: 4_000 },
      },
    });
    router.begin(d.a!, 100); // 0.1
    router.begin(d.b!, 500); // 0.05
    router.begin(d.c!, 300); // 0.075
    expect(router.pick(model)?.id).toBe('b/m');
    router.begin(d.b!, 600); // 0.11
    expect(router.pick(model)?.id).toBe('c/m');
  });

  it('counts requests against the sequence capacity as well as tokens', () => {
    const { model, router, d } = setup(['a', 'b'], {
      loadTieTolerance: 0,
      deployments: { 'a/m': { capacitySequences: 4 }, 'b/m': { capacitySequences: 100 } },
    });
    router.begin(d.a!, 10); // 1/4 of a's sequences, a sliver of its tokens
    router.begin(d.b!, 20_000); // 20000/262144 ≈ 0.076 of b's tokens
    expect(router.pick(model)?.id).toBe('b/m');
    expect(router.snapshot(d.a!).load).toBe(0.25);
    expect(router.snapshot(d.b!).load).toBe(20_000 / 262_144);
  });

  it('releases tokens exactly once whether the attempt succeeds, fails or is cancelled', () => {
    const { router, d } = setup(['a']);
    const first = router.begin(d.a!, 100);
    const second = router.begin(d.a!, 200);
    const third = router.begin(d.a!, 400);
    expect(router.snapshot(d.a!).inFlightTokens).toBe(700);
    expect(router.snapshot(d.a!).inFlightRequests).toBe(3);
    first.succeed();
    first.succeed();
    first.fail(serverError());
    second.fail(serverError());
    third.cancel();
    expect(router.snapshot(d.a!).inFlightTokens).toBe(0);
    expect(router.snapshot(d.a!).inFlightRequests).toBe(0);
    expect(first.settled && second.settled && third.settled).toBe(true);
  });

  it('uses an idle fleet round-robin', () => {
    const { model, router } = setup(['a', 'b', 'c']);
    const picked = Array.from({ length: 6 }, () => router.pick(model)?.id);
    expect(picked).toEqual(['a/m', 'b/m', 'c/m', 'a/m', 'b/m', 'c/m']);
  });

  it('breaks load ties by the latency EWMA and ignores it beyond the tie tolerance', () => {
    const { clock, model, router, d } = setup(['a', 'b'], { latencyEwmaAlpha: 0.25, loadTieTolerance: 0.01 });
    const timeToFirstByte = (deployment: typeof d.a, ms: number) => {
      const attempt = router.begin(deployment!, 10);
      clock.advance(ms);
      attempt.firstByte();
      clock.advance(1_000); // the rest of the answer does not count
      attempt.succeed();
    };
    timeToFirstByte(d.a, 100);
    timeToFirstByte(d.b, 20);
    timeToFirstByte(d.b, 120);
    expect(router.snapshot(d.a!).latencyEwmaMs).toBe(100);
    // 20 + 0.25 × (120 − 20)
    expect(router.snapshot(d.b!).latencyEwmaMs).toBe(45);
    expect(router.pick(model)?.id).toBe('b/m');
    expect(router.pick(model)?.id).toBe('b/m');

    // b slightly busier (0.5% of capacity): still a tie, the faster one wins.
    const small = router.begin(d.b!, 1_310);
    expect(router.pick(model)?.id).toBe('b/m');
    // b clearly busier (2%): least outstanding work wins over latency.
    const large = router.begin(d.b!, 3_932);
    expect(router.pick(model)?.id).toBe('a/m');
    small.succeed();
    large.succeed();
  });

  it('counts a first-byte timeout as a latency sample, so a hanging deployment stops looking fast', () => {
    const { clock, model, router, d } = setup(['a', 'b']);
    const fast = router.begin(d.a!, 1);
    clock.advance(50);
    fast.succeed();
    const slow = router.begin(d.b!, 1);
    clock.advance(300);
    slow.fail(new UpstreamTimeoutError('no headers', 'first_byte'));
    expect(router.snapshot(d.b!).latencyEwmaMs).toBe(300);
    expect(router.pick(model)?.id).toBe('a/m');
  });

  it('gives weighted deployments work in proportion to their weights', () => {
    const { model, router } = setup(['a', 'b', 'c'], {
      loadTieTolerance: 0,
      // b's weight comes from the settings, c's from the deployment itself.
      deployments: { 'a/m': { weight: 1 }, 'b/m': { weight: 3 } },
    });
    const weighted = { ...model.deployments[2]!, weight: 4 };
    const weightedModel = { ...model, deployments: [model.deployments[0]!, model.deployments[1]!, weighted] };
    const counts = new Map<string, number>();
    for (let index = 0; index < 800; index++) {
      const deployment = router.pick(weightedModel)!;
      router.begin(deployment, 100);
      counts.set(deployment.id, (counts.get(deployment.id) ?? 0) + 1);
    }
    expect(counts.get('a/m')).toBe(100);
    expect(counts.get('b/m')).toBe(300);
    expect(counts.get('c/m')).toBe(400);
  });
});

describe('DeploymentRouter: cost mode', () => {
  it('fills the cheapest deployments first, then the dearer, then falls back to least outstanding', () => {
    const { model, router } = setup(['dear', 'cheap1', 'cheap2'], {
      mode: 'cost',
      deployments: {
        'dear/m': { cost: 3, capacityTokens: 1_000 },
        'cheap1/m': { cost: 1, capacityTokens: 1_000 },
        'cheap2/m': { cost: 1, capacityTokens: 1_000 },
      },
    });
    const send = (tokens: number) => {
      const deployment = router.pick(model, { tokens })!;
      router.begin(deployment, tokens);
      return deployment.id;
    };
    expect(send(400)).toBe('cheap1/m');
    expect(send(400)).toBe('cheap2/m');
    expect(send(400)).toBe('cheap1/m'); // 800 ≤ 1000 on both: least loaded, then least recently picked
    expect(send(400)).toBe('cheap2/m');
    // Neither cheap one has room for 400 more (800 + 400 > 1000): the dear one takes it.
    expect(send(400)).toBe('dear/m');
    // A request that fits nowhere (400 + 700 > 1000, 800 + 700 > 1000) goes to the least loaded.
    expect(send(700)).toBe('dear/m');
    // The cheap ones still have room for a small request.
    expect(send(200)).toBe('cheap1/m');
  });
});

describe('DeploymentRouter: availability', () => {
  it('skips excluded and saturated deployments and says when one frees up', () => {
    const { clock, model, router, d } = setup(['a', 'b']);
    router.markSaturated(d.a!, 1_500);
    expect(router.pick(model)?.id).toBe('b/m');
    expect(router.pick(model, { exclude: new Set(['b/m']) })).toBeUndefined();
    expect(router.retryAfterMs(model, new Set(['b/m']))).toBe(1_500);
    expect(router.retryAfterMs(model)).toBe(0);
    expect(router.snapshot(d.a!).saturatedUntil).toBe(clock.now() + 1_500);
    clock.advance(1_500);
    expect(router.pick(model, { exclude: new Set(['b/m']) })?.id).toBe('a/m');
    expect(router.snapshot(d.a!).saturatedUntil).toBeNull();
  });

  it('marks a deployment saturated for the upstream Retry-After of a 429, a default without one, capped', () => {
    const { clock, router, d } = setup(['a', 'b', 'c', 'e'], { defaultSaturationMs: 700, maxSaturationMs: 30_000 });
    const now = clock.now();
    const withHeader = new UpstreamError('slow down', {
      code: 'upstream_http_error',
      upstreamStatus: 429,
      retryAfterSeconds: 2,
    });
    expect(router.begin(d.a!, 1).fail(withHeader)).toBe('saturated');
    const without = new UpstreamError('slow down', { code: 'upstream_http_error', upstreamStatus: 429 });
    expect(router.begin(d.b!, 1).fail(without)).toBe('saturated');
    const huge = new UpstreamError('later', {
      code: 'upstream_http_error',
      upstreamStatus: 429,
      retryAfterSeconds: 3600,
    });
    router.begin(d.c!, 1).fail(huge);
    // A 503 with Retry-After is a failure and a saturation.
    const unavailable = new UpstreamError('down', {
      code: 'upstream_http_error',
      upstreamStatus: 503,
      retryAfterSeconds: 4,
    });
    expect(router.begin(d.e!, 1).fail(unavailable)).toBe('unhealthy');
    expect(router.snapshot(d.a!).saturatedUntil).toBe(now + 2_000);
    expect(router.snapshot(d.b!).saturatedUntil).toBe(now + 700);
    expect(router.snapshot(d.c!).saturatedUntil).toBe(now + 30_000);
    expect(router.snapshot(d.e!).saturatedUntil).toBe(now + 4_000);
    expect(router.snapshot(d.e!).consecutiveFailures).toBe(1);
    // A 429 shows the deployment alive: it does not count against the breaker.
    expect(router.snapshot(d.a!).consecutiveFailures).toBe(0);
  });

  it('opens the circuit on 5xx and timeouts but not on client errors or cancellations', () => {
    const { model, router, d } = setup(['a', 'b'], { breaker: { failureThreshold: 3 } });
    router.begin(d.a!, 1).fail(serverError());
    router.begin(d.a!, 1).fail(new UpstreamTimeoutError('slow', 'first_byte'));
    router.begin(d.a!, 1).fail(new UpstreamError('bad', { code: 'upstream_http_error', upstreamStatus: 400 }));
    router.begin(d.a!, 1).fail(new InvalidRequestError('bad'));
    router.begin(d.a!, 1).cancel();
    const aborted = new DOMException('client went away', 'AbortError');
    expect(router.begin(d.a!, 1).fail(aborted)).toBe('cancelled');
    // The 400 broke the run of failures: two more are needed, not one.
    expect(router.snapshot(d.a!).circuit).toBe('closed');
    router.begin(d.a!, 1).fail(serverError());
    router.begin(d.a!, 1).fail(new UpstreamError('reset', { code: 'upstream_connection_lost' }));
    expect(router.snapshot(d.a!).circuit).toBe('closed');
    router.begin(d.a!, 1).fail(serverError());
    expect(router.snapshot(d.a!).circuit).toBe('open');
    for (let index = 0; index < 4; index++) expect(router.pick(model)?.id).toBe('b/m');
  });

  it('sends one probe to a half-open deployment and closes it at the probe’s first byte', () => {
    const { clock, model, router, d } = setup(['a', 'b'], { breaker: { failureThreshold: 1, openMs: 2_000 } });
    router.begin(d.a!, 1).fail(serverError());
    expect(router.pick(model, { exclude: new Set(['b/m']) })).toBeUndefined();
    expect(router.retryAfterMs(model, new Set(['b/m']))).toBe(2_000);
    clock.advance(2_000);
    expect(router.snapshot(d.a!).circuit).toBe('half-open');
    const only = new Set(['b/m']);
    expect(router.pick(model, { exclude: only })?.id).toBe('a/m');
    const probe = router.begin(d.a!, 1);
    expect(probe.probe).toBe(true);
    // The probe slot is taken: nothing else goes to a until it answers.
    expect(router.pick(model, { exclude: only })).toBeUndefined();
    expect(router.isAvailable(d.a!)).toBe(false);
    probe.firstByte();
    expect(router.snapshot(d.a!).circuit).toBe('closed');
    expect(router.pick(model, { exclude: only })?.id).toBe('a/m');
    // A failure later in the probe's stream counts as an ordinary failure of a closed circuit.
    probe.fail(new UpstreamError('cut', { code: 'upstream_connection_lost' }));
    expect(router.snapshot(d.a!).circuit).toBe('open');
  });

  it('reopens a half-open deployment whose probe fails', () => {
    const { clock, router, d } = setup(['a'], { breaker: { failureThreshold: 1, openMs: 1_000 } });
    router.begin(d.a!, 1).fail(serverError());
    clock.advance(1_000);
    router.begin(d.a!, 1).fail(new UpstreamTimeoutError('slow', 'first_byte'));
    const snapshot = router.snapshot(d.a!);
    expect(snapshot.circuit).toBe('open');
    expect(snapshot.circuitOpenUntil).toBe(clock.now() + 2_000);
  });

  it('lists every catalog deployment in the fleet snapshot before any traffic', () => {
    const clock = new VirtualClock(5_000);
    const [first, second] = testDeployments('a', 'b') as [Deployment, Deployment];
    const deployments = [first, { ...second, capacity: { sequences: 8, tokens: 9_000 }, weight: 2 }];
    const catalog = new Catalog([testModel(deployments, 'one'), testModel([deployments[1]!], 'two')]);
    const router = new DeploymentRouter({
      clock,
      catalog,
      deployments: { 'b/m': { cost: 0.5 } },
    });
    router.begin(deployments[1]!, 250);
    router.begin(deployments[1]!, 250);
    expect(router.fleetSnapshot()).toEqual([
      {
        id: 'a/m',
        upstream: 'a',
        inFlightTokens: 0,
        inFlightRequests: 0,
        capacityTokens: 262_144,
        capacitySequences: 256,
        load: 0,
        weight: 1,
        cost: 0,
        circuit: 'closed',
        consecutiveFailures: 0,
        errorRate: 0,
        circuitOpenUntil: null,
        latencyEwmaMs: null,
        saturatedUntil: null,
        lastSuccessAt: null,
      },
      {
        id: 'b/m',
        upstream: 'b',
        inFlightTokens: 500,
        inFlightRequests: 2,
        capacityTokens: 9_000,
        capacitySequences: 8,
        // max(500 / 9000, 2 / 8) / 2
        load: 0.125,
        weight: 2,
        cost: 0.5,
        circuit: 'closed',
        consecutiveFailures: 0,
        errorRate: 0,
        circuitOpenUntil: null,
        latencyEwmaMs: null,
        saturatedUntil: null,
        lastSuccessAt: null,
      },
    ]);
  });
});
