/**
 * Active health checks: every `intervalMs` each deployment in the catalog gets one cheap probe, whose outcome feeds
 * its circuit breaker exactly like a request's. A deployment whose circuit is open is left alone until its cool-down
 * ends; then the probe is the half-open trial, so an idle deployment recovers without risking a client request on it.
 * A deployment that served a request successfully within the last interval is not probed: traffic already proved it.
 *
 * The default probe is a one-token request (`tinyRequestProbe`), not `Upstream.load()`: the OpenAI-compatible
 * adapter's `load()` answers `undefined` both for a server without `/metrics` and for one that is down, so it cannot
 * tell health. On a paid upstream that token is billed; pass another `probe` if that matters.
 */
import { randomUUID } from 'node:crypto';
import type { Catalog, Deployment, ModelKind } from '../catalog/catalog.js';
import { type Clock, type ClockTimer, RealClock } from '../clock/clock.js';
import { GatewayError, UpstreamTimeoutError } from '../errors/gateway-error.js';
import type { FailureKind } from './classify-failure.js';
import type { DeploymentRouter } from './deployment-router.js';

/** Checks one deployment; resolves when it is healthy, rejects with the upstream's error otherwise. */
export type HealthProbe = (deployment: Deployment, kind: ModelKind, signal: AbortSignal) => Promise<void>;

/** One probe's result. */
export interface ProbeResult {
  /** Deployment id. */
  deployment: string;
  /** `ok`, or how the probe failed. */
  outcome: 'ok' | FailureKind;
  /** The error's stable code, `null` when ok. */
  errorCode: string | null;
  /** Probe duration on the prober's clock, ms. */
  durationMs: number;
}

/** Options of `HealthProber`. */
export interface HealthProberOptions {
  /** Time source. Default: a `RealClock`. */
  clock?: Clock;
  /** Time between probe rounds, ms. Default 10000. */
  intervalMs?: number;
  /** A probe not finished after this long fails as a timeout, ms. Default 2000. */
  timeoutMs?: number;
  /** The check. Default `tinyRequestProbe`. */
  probe?: HealthProbe;
  /** Skip a closed deployment whose last success is this recent, ms; 0 probes every round. Default `intervalMs`. */
  skipAfterSuccessMs?: number;
  /** Called with every probe result (for logs and metrics). Default none. */
  onProbe?: (result: ProbeResult) => void;
}

/** A one-token chat request (or a one-word embedding) to the deployment's model. */
export const tinyRequestProbe: HealthProbe = async (deployment, kind, signal) => {
  const embedding = kind === 'embedding';
  await deployment.upstream.complete({
    endpoint: embedding ? 'embeddings' : 'chat',
    body: embedding
      ? { model: deployment.upstreamModel, input: 'ping' }
      : { model: deployment.upstreamModel, messages: [{ role: 'user', content: 'ping' }], max_tokens: 1 },
    requestId: `probe-${randomUUID()}`,
    signal,
  });
};

/** Probes every deployment of a catalog on a timer. */
export class HealthProber {
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly probe: HealthProbe;
  private readonly skipAfterSuccessMs: number;
  private readonly onProbe: ((result: ProbeResult) => void) | undefined;
  /** Deployment ids with a probe in flight, and how to abort it. */
  private readonly running = new Map<string, AbortController>();
  private timer: ClockTimer | undefined;

  constructor(
    private readonly router: DeploymentRouter,
    private readonly catalog: Catalog,
    options: HealthProberOptions = {},
  ) {
    this.clock = options.clock ?? new RealClock();
    this.intervalMs = positive(options.intervalMs ?? 10_000, 'intervalMs');
    this.timeoutMs = positive(options.timeoutMs ?? 2_000, 'timeoutMs');
    this.probe = options.probe ?? tinyRequestProbe;
    this.skipAfterSuccessMs = options.skipAfterSuccessMs ?? this.intervalMs;
    this.onProbe = options.onProbe;
  }

  /** Starts probing: the first round runs one interval from now. Idempotent. */
  start(): void {
    if (this.timer !== undefined) return;
    const tick = () => {
      // Fixed rate: the next round is due whatever this one does; deployments still being probed are skipped.
      this.timer = this.clock.setTimer(this.intervalMs, tick);
      void this.probeAll();
    };
    this.timer = this.clock.setTimer(this.intervalMs, tick);
  }

  /** Stops the timer and aborts probes in flight (their outcome is not recorded). */
  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    for (const controller of this.running.values()) controller.abort();
  }

  /** One round now: probes every deployment that is due. Resolves with the results of the probes it ran. */
  async probeAll(): Promise<ProbeResult[]> {
    const rounds: Promise<ProbeResult | undefined>[] = [];
    for (const [deployment, kind] of this.deployments()) rounds.push(this.probeOne(deployment, kind));
    const results = await Promise.all(rounds);
    return results.filter((result) => result !== undefined);
  }

  private async probeOne(deployment: Deployment, kind: ModelKind): Promise<ProbeResult | undefined> {
    if (this.running.has(deployment.id) || !this.router.isAvailable(deployment)) return undefined;
    const state = this.router.snapshot(deployment);
    const now = this.clock.now();
    if (
      state.circuit === 'closed' &&
      state.lastSuccessAt !== null &&
      this.skipAfterSuccessMs > 0 &&
      now - state.lastSuccessAt < this.skipAfterSuccessMs
    ) {
      return undefined;
    }

    const controller = new AbortController();
    this.running.set(deployment.id, controller);
    const attempt = this.router.begin(deployment, 0);
    const startedAt = now;
    let timer: ClockTimer | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = this.clock.setTimer(this.timeoutMs, () => {
        const error = new UpstreamTimeoutError(`Health probe of ${deployment.id} timed out.`, 'total');
        controller.abort(error);
        reject(error);
      });
    });
    let result: ProbeResult;
    try {
      await Promise.race([this.probe(deployment, kind, controller.signal), timedOut]);
      attempt.succeed();
      result = { deployment: deployment.id, outcome: 'ok', errorCode: null, durationMs: this.clock.now() - startedAt };
    } catch (error: unknown) {
      const reason: unknown = controller.signal.reason;
      // A timeout aborts with its UpstreamTimeoutError, which is a verdict; `stop()` aborts without one.
      const timeout = reason instanceof UpstreamTimeoutError ? reason : undefined;
      const failure = timeout ?? error;
      let outcome: FailureKind;
      if (controller.signal.aborted && timeout === undefined) {
        attempt.cancel();
        outcome = 'cancelled';
      } else {
        outcome = attempt.fail(failure);
      }
      result = {
        deployment: deployment.id,
        outcome,
        errorCode: failure instanceof GatewayError ? failure.code : null,
        durationMs: this.clock.now() - startedAt,
      };
    } finally {
      timer?.cancel();
      this.running.delete(deployment.id);
    }
    this.onProbe?.(result);
    return result;
  }

  /** Each deployment once, with the kind of the first model that lists it. */
  private deployments(): Map<Deployment, ModelKind> {
    const seen = new Set<string>();
    const deployments = new Map<Deployment, ModelKind>();
    for (const model of this.catalog.list()) {
      for (const deployment of model.deployments) {
        if (seen.has(deployment.id)) continue;
        seen.add(deployment.id);
        deployments.set(deployment, model.kind);
      }
    }
    return deployments;
  }
}

function positive(value: number, name: string): number {
  if (!(value > 0)) throw new RangeError(`${name} must be positive, got ${value}`);
  return value;
}
