/**
 * Failover against real HTTP upstreams: simulated OpenAI-compatible servers with injected faults, reached through the
 * real OpenAI-compatible adapter (undici, real timeouts). Real clock (the first test's router stops its own once);
 * the fast replica profile keeps it to ~1 s.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refusedBaseUrl } from '../../test/support/refused-url.js';
import { Catalog, type CatalogModel, type Deployment, defaultHttpCapacity } from '../catalog/catalog.js';
import { RealClock } from '../clock/clock.js';
import { UpstreamError } from '../errors/gateway-error.js';
import { createOpenAICompatibleUpstream } from '../upstreams/openai-compatible/openai-compatible-upstream.js';
import { type SimServer, startSimServer } from '../upstreams/simulated/sim-server.js';
import type { StreamEvent, Upstream, UpstreamRequest, UpstreamResult, UpstreamStream } from '../upstreams/upstream.js';
import { callWithFailover, summarizeAttempts } from './call-with-failover.js';
import { DeploymentRouter } from './deployment-router.js';
import { HealthProber, tinyRequestProbe } from './health-prober.js';

const fastProfile = { t_prefill_us: 1, t_fixed_ms: 0.2, t_seq_ms: 0.01 };
/** The hanging upstream's first-byte timeout: short, it is waited for. */
const firstByteMs = 300;
/** Every other upstream's: they answer at once, and must not time out on a stalled machine. */
const answeringFirstByteMs = 2_000;

/** The wall clock, until `hold` stops it: for questions about what a router does within a second of something. */
class HoldableClock extends RealClock {
  private held: number | undefined;

  override now(): number {
    return this.held ?? super.now();
  }

  hold(at: number): void {
    this.held = at;
  }
}

const servers: SimServer[] = [];
const upstreams: Upstream[] = [];
const deadUrl = refusedBaseUrl;
let hang: SimServer;
let limited: SimServer;
let healthy: SimServer;
let midStream: SimServer;
let badKey: SimServer;
let unknownModel: SimServer;

function upstreamFor(name: string, baseUrl: string, firstByte = answeringFirstByteMs): Upstream {
  const upstream = createOpenAICompatibleUpstream({
    name,
    type: 'openai',
    base_url: baseUrl,
    connections: 8,
    send_priority: false,
    timeouts: { connect_ms: 2_000, first_byte_ms: firstByte, idle_ms: 5_000 },
  });
  upstreams.push(upstream);
  return upstream;
}

function deployment(name: string, baseUrl: string, firstByte = answeringFirstByteMs): Deployment {
  return {
    id: `${name}/simulated`,
    upstream: upstreamFor(name, baseUrl, firstByte),
    upstreamModel: 'simulated',
    capacity: defaultHttpCapacity,
    weight: 1,
  };
}

function chatModel(deployments: Deployment[]): CatalogModel {
  return { name: 'chat', kind: 'chat', contextWindow: 32_768, maxOutputTokens: 64, deployments, created: 0 };
}

function chatRequest(stream: boolean, signal = new AbortController().signal): UpstreamRequest {
  return {
    endpoint: 'chat',
    body: { model: 'simulated', messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 12, stream },
    requestId: `test-${Math.random().toString(36).slice(2)}`,
    signal,
  };
}

beforeAll(async () => {
  hang = await startSimServer({ profile: fastProfile, faults: 'hang' });
  limited = await startSimServer({ profile: fastProfile, faults: 'status:429' });
  healthy = await startSimServer({ profile: fastProfile });
  midStream = await startSimServer({ profile: fastProfile, faults: 'die-mid-stream' });
  badKey = await startSimServer({ profile: fastProfile, faults: 'status:401' });
  unknownModel = await startSimServer({ profile: fastProfile, faults: 'status:404' });
  servers.push(hang, limited, healthy, midStream, badKey, unknownModel);
});

afterAll(async () => {
  await Promise.all(upstreams.map((upstream) => upstream.close()));
  await Promise.all(servers.map((server) => server.close()));
});

describe('failover across real HTTP upstreams', () => {
  it('reaches the healthy upstream past a dead, a hanging and a rate-limited one, and records why', async () => {
    const deployments = [
      deployment('dead', deadUrl),
      deployment('hang', hang.url, firstByteMs),
      deployment('limited', limited.url),
      deployment('healthy', healthy.url),
    ];
    const [dead, hanging, rateLimited, good] = deployments as [Deployment, Deployment, Deployment, Deployment];
    const model = chatModel(deployments);
    // The router's clock stops when the 429 is seen: what follows asks what the router does within the second that
    // `retry-after: 1` keeps that upstream out, however long a stalled machine takes to get there.
    const clock = new HoldableClock();
    const router = new DeploymentRouter({ catalog: new Catalog([model]), breaker: { failureThreshold: 2 }, clock });
    const complete = (target: Deployment) => target.upstream.complete(chatRequest(false));

    // An idle fleet is tried in catalog order: all three bad ones fail before the healthy one answers.
    let limitedFailedAt = 0;
    const first = await callWithFailover<UpstreamResult>(router, model, complete, {
      tokens: 100,
      maxAttempts: 4,
      onAttempt: (attempt) => {
        if (attempt.deployment === 'limited/simulated') {
          limitedFailedAt = Date.now();
          clock.hold(limitedFailedAt);
        }
      },
    });
    expect(first.deployment.id).toBe('healthy/simulated');
    expect((first.value.body.choices as unknown[]).length).toBe(1);
    expect(first.value.usage?.output.total).toBe(12);
    expect(first.attempts.map((attempt) => [attempt.deployment, attempt.outcome, attempt.errorCode])).toEqual([
      ['dead/simulated', 'unhealthy', 'upstream_unreachable'],
      ['hang/simulated', 'unhealthy', 'upstream_timeout'],
      ['limited/simulated', 'saturated', 'upstream_http_error'],
      ['healthy/simulated', 'accepted', null],
    ]);
    expect(first.attempts[2]!.upstreamStatus).toBe(429);
    // The hanging upstream cost one first-byte timeout, no more (undici checks its timeouts on a ~0.5 s tick; the
    // upper bound leaves room for a stalled machine).
    expect(first.attempts[1]!.durationMs).toBeGreaterThanOrEqual(firstByteMs - 20);
    expect(first.attempts[1]!.durationMs).toBeLessThan(5_000);
    expect(summarizeAttempts(first.attempts)).toMatch(
      /^dead\/simulated unhealthy upstream_unreachable \d+ms → hang\/simulated unhealthy upstream_timeout \d+ms → limited\/simulated saturated upstream_http_error 429 \d+ms → healthy\/simulated accepted \d+ms$/,
    );

    // The 429's `retry-after: 1` keeps that upstream out for about a second.
    const saturatedUntil = router.snapshot(rateLimited).saturatedUntil;
    expect(saturatedUntil).not.toBeNull();
    expect(saturatedUntil! - limitedFailedAt).toBeGreaterThan(900);
    expect(saturatedUntil! - limitedFailedAt).toBeLessThanOrEqual(1_000);
    expect(router.snapshot(hanging).latencyEwmaMs).toBeGreaterThanOrEqual(firstByteMs - 20);

    // Second request: the dead one (never measured, so it still looks fastest) fails again and its circuit opens;
    // the limited one is skipped while saturated and the slow one loses on latency.
    const second = await callWithFailover<UpstreamResult>(router, model, complete, { tokens: 100 });
    expect(second.attempts.map((attempt) => [attempt.deployment, attempt.outcome])).toEqual([
      ['dead/simulated', 'unhealthy'],
      ['healthy/simulated', 'accepted'],
    ]);
    expect(router.snapshot(dead).circuit).toBe('open');
    expect(router.snapshot(dead).consecutiveFailures).toBe(2);

    // From now on requests go straight to the healthy one.
    const third = await callWithFailover<UpstreamResult>(router, model, complete, { tokens: 100 });
    expect(third.attempts.map((attempt) => attempt.deployment)).toEqual(['healthy/simulated']);

    // A stream through the wrapper: accepted by the healthy one, then read to the end outside it.
    const streamed = await callWithFailover<UpstreamStream>(
      router,
      model,
      (target) => target.upstream.stream(chatRequest(true)),
      { tokens: 100, keepOpen: true },
    );
    expect(streamed.deployment.id).toBe('healthy/simulated');
    expect(router.snapshot(good).inFlightTokens).toBe(100);
    const events: StreamEvent[] = [];
    for await (const event of streamed.value.events) events.push(event);
    streamed.attempt.succeed();
    expect(events.at(-1)?.type).toBe('usage');
    expect(router.fleetSnapshot().every((snapshot) => snapshot.inFlightTokens === 0)).toBe(true);
    expect(router.snapshot(good).consecutiveFailures).toBe(0);
    expect(router.snapshot(good).lastSuccessAt).not.toBeNull();
  });

  it("moves past deployments that refuse the gateway's key (401) or know no such model (404), and opens their circuits", async () => {
    const deployments = [
      deployment('bad-key', badKey.url),
      deployment('unknown-model', unknownModel.url),
      deployment('healthy', healthy.url),
    ];
    const [keyRefused, modelUnknown] = deployments as [Deployment, Deployment, Deployment];
    const model = chatModel(deployments);
    const router = new DeploymentRouter({ catalog: new Catalog([model]), breaker: { failureThreshold: 2 } });
    const complete = (target: Deployment) => target.upstream.complete(chatRequest(false));
    for (let round = 0; round < 2; round++) {
      const answered = await callWithFailover<UpstreamResult>(router, model, complete, { tokens: 100, maxAttempts: 3 });
      expect(answered.deployment.id).toBe('healthy/simulated');
      expect(answered.attempts.map((attempt) => [attempt.deployment, attempt.outcome, attempt.upstreamStatus])).toEqual(
        [
          ['bad-key/simulated', 'unhealthy', 401],
          ['unknown-model/simulated', 'unhealthy', 404],
          ['healthy/simulated', 'accepted', null],
        ],
      );
    }
    expect(router.snapshot(keyRefused).circuit).toBe('open');
    expect(router.snapshot(modelUnknown).circuit).toBe('open');
    const next = await callWithFailover<UpstreamResult>(router, model, complete, { tokens: 100 });
    expect(next.attempts.map((attempt) => attempt.deployment)).toEqual(['healthy/simulated']);
  });

  it('never retries a stream that fails after it started: the error reaches the consumer', async () => {
    const broken = deployment('mid', midStream.url);
    const fallback = deployment('fallback', healthy.url);
    const model = chatModel([broken, fallback]);
    const router = new DeploymentRouter({ catalog: new Catalog([model]) });
    const promptTokensBefore = healthy.upstream.engines.reduce((sum, engine) => sum + engine.stats.promptTokens, 0);

    const calls: string[] = [];
    const result = await callWithFailover<UpstreamStream>(
      router,
      model,
      (target) => {
        calls.push(target.id);
        return target.upstream.stream(chatRequest(true));
      },
      { tokens: 100, keepOpen: true },
    );
    // The wrapper returned as soon as the upstream accepted; nothing has been read yet.
    const returnedAt = performance.now();
    expect(result.deployment.id).toBe('mid/simulated');
    expect(result.attempts.map((attempt) => [attempt.deployment, attempt.outcome])).toEqual([
      ['mid/simulated', 'accepted'],
    ]);

    const received: StreamEvent[] = [];
    let failure: unknown;
    try {
      for await (const event of result.value.events) received.push(event);
    } catch (error: unknown) {
      failure = error;
    }
    const failedAt = performance.now();
    expect(failedAt).toBeGreaterThanOrEqual(returnedAt);
    // The server sends three chunks, then cuts the connection.
    expect(received.map((event) => event.type)).toEqual(['chunk', 'chunk', 'chunk']);
    expect(failure).toBeInstanceOf(UpstreamError);
    expect((failure as UpstreamError).retryable).toBe(true);
    expect(result.attempt.fail(failure)).toBe('unhealthy');

    // No second attempt, nothing sent to the healthy fallback, the failure counted against the broken one.
    expect(calls).toEqual(['mid/simulated']);
    expect(result.attempts).toHaveLength(1);
    const promptTokensAfter = healthy.upstream.engines.reduce((sum, engine) => sum + engine.stats.promptTokens, 0);
    expect(promptTokensAfter).toBe(promptTokensBefore);
    expect(router.snapshot(broken).consecutiveFailures).toBe(1);
    expect(router.snapshot(broken).inFlightTokens).toBe(0);
    expect(router.snapshot(fallback).inFlightRequests).toBe(0);
  });

  it('probes real upstreams with a one-token request', async () => {
    const up = deployment('probe-ok', healthy.url);
    const down = deployment('probe-dead', deadUrl);
    const catalog = new Catalog([chatModel([up, down])]);
    const router = new DeploymentRouter({ catalog, breaker: { failureThreshold: 1 } });
    const prober = new HealthProber(router, catalog, { probe: tinyRequestProbe, timeoutMs: 5_000 });
    const results = await prober.probeAll();
    expect(results.map((result) => [result.deployment, result.outcome, result.errorCode])).toEqual([
      ['probe-ok/simulated', 'ok', null],
      ['probe-dead/simulated', 'unhealthy', 'upstream_unreachable'],
    ]);
    expect(router.snapshot(up).circuit).toBe('closed');
    expect(router.snapshot(down).circuit).toBe('open');
    prober.stop();
  });
});
