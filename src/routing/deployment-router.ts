/**
 * Chooses the deployment that serves a request and keeps what the choice needs: work in flight per deployment, a
 * latency EWMA (time to first byte), a circuit breaker, and a saturation deadline set by an upstream's `Retry-After`.
 *
 * Choice (`least_outstanding` mode): among deployments that are not excluded, not saturated and whose circuit admits
 * a request, the least loaded one — load is the larger of tokens in flight ÷ capacity tokens and requests in flight ÷
 * capacity sequences, divided by the weight. Loads within `loadTieTolerance` of the least count as a tie, broken by
 * the lower latency EWMA (a deployment never measured counts as fastest, so it gets tried), then by the least recently
 * picked (so an idle fleet is used round-robin). `cost` mode first keeps the cheapest deployments that still have room
 * for the request, then chooses among them the same way; when none has room it falls back to least outstanding work
 * over all.
 *
 * Every request that goes out is an attempt (`begin`), finished exactly once with `succeed`, `fail` or `cancel`, so
 * work in flight, the EWMA and the breaker stay exact. Everything reads time from a `Clock`.
 */
import type { Catalog, CatalogModel, Deployment } from '../catalog/catalog.js';
import { type Clock, RealClock } from '../clock/clock.js';
import { assertNever } from '../errors/assert-never.js';
import { UpstreamError, UpstreamTimeoutError } from '../errors/gateway-error.js';
import { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from './circuit-breaker.js';
import { classifyFailure, type FailureKind } from './classify-failure.js';

/** How `pick` chooses. */
export const routingModes = ['least_outstanding', 'cost'] as const;
/** One of `routingModes`. */
export type RoutingMode = (typeof routingModes)[number];

/** Per-deployment routing settings, overriding what the `Deployment` itself says. */
export interface DeploymentRoutingSettings {
  /** Tokens (prompt + output cap) in flight at full load. Default: the deployment's `capacity.tokens`. */
  capacityTokens?: number;
  /** Concurrent requests at full load. Default: the deployment's `capacity.sequences`. */
  capacitySequences?: number;
  /** Static weight (> 0): a deployment of weight 2 is given twice the work of one of weight 1. Default: its `weight`. */
  weight?: number;
  /** Cost of serving a token here, in any unit shared by the model's deployments (e.g. currency per 1M). Default 0. */
  cost?: number;
}

/** Options of `DeploymentRouter`. All are optional. */
export interface DeploymentRouterOptions {
  /** Time source of the EWMA, breakers and saturation. Default: a `RealClock`. */
  clock?: Clock;
  /** How deployments are chosen (the configuration's `routing.strategy`). Default `least_outstanding`. */
  mode?: RoutingMode;
  /** Settings by deployment id (`upstream/model`). Default none. */
  deployments?: Readonly<Record<string, DeploymentRoutingSettings>>;
  /** Deployments to know from the start, so `fleetSnapshot()` lists them before any traffic. Default none. */
  catalog?: Catalog;
  /** Weight of the newest sample in the latency EWMA, 0–1. Default 0.2. */
  latencyEwmaAlpha?: number;
  /** Loads (fractions of weighted capacity) this close to the least one count as ties. Default 0.01. */
  loadTieTolerance?: number;
  /** Circuit breaker settings, shared by every deployment. Defaults: see `CircuitBreakerOptions`. */
  breaker?: CircuitBreakerOptions;
  /** How long an upstream 429 without `Retry-After` marks a deployment saturated, ms. Default 1000. */
  defaultSaturationMs?: number;
  /** Cap on a saturation period, whatever the upstream asked, ms. Default 60000. */
  maxSaturationMs?: number;
}

/** Options of `pick`. */
export interface PickOptions {
  /** Deployment ids not to choose (e.g. those that already failed this request). Default none. */
  exclude?: ReadonlySet<string>;
  /** Tokens the request will hold (prompt + output cap), used by `cost` mode to test for room. Default 0. */
  tokens?: number;
}

/** One request sent to one deployment. Finish it exactly once; later calls are ignored. */
export interface RouteAttempt {
  readonly deployment: Deployment;
  /** Tokens the request holds in flight. */
  readonly tokens: number;
  /** When it began, clock ms. */
  readonly startedAt: number;
  /** Whether it is its deployment's half-open probe. */
  readonly probe: boolean;
  /** Whether it has been finished. */
  readonly settled: boolean;
  /**
   * The upstream accepted the request (stream headers or whole answer arrived): records the time to first byte in
   * the EWMA and, for a half-open probe, closes the circuit. Only the first call counts.
   */
  firstByte(): void;
  /** The request completed: releases its tokens. Implies `firstByte()` if that was not called. */
  succeed(): void;
  /** The request failed: releases its tokens and feeds the breaker or saturation as the error says. */
  fail(error: unknown): FailureKind;
  /** The request was abandoned (client gone): releases its tokens without a verdict on the deployment. */
  cancel(): void;
}

/** One deployment's routing state, for `/admin/v1/fleet` and metrics. */
export interface DeploymentSnapshot {
  /** Deployment id, `upstream/model`. */
  id: string;
  /** Upstream name. */
  upstream: string;
  /** Tokens held by requests in flight. */
  inFlightTokens: number;
  /** Requests in flight. */
  inFlightRequests: number;
  /** Capacity, tokens in flight. */
  capacityTokens: number;
  /** Capacity, concurrent requests. */
  capacitySequences: number;
  /** Outstanding work: the larger of the token and request fractions of capacity, divided by the weight. */
  load: number;
  /** Static weight. */
  weight: number;
  /** Cost per token, in the unit it was configured in. */
  cost: number;
  /** Breaker state. */
  circuit: CircuitState;
  /** Failures since the last success. */
  consecutiveFailures: number;
  /** Failure fraction over the breaker's window. */
  errorRate: number;
  /** When an open circuit turns half-open, epoch ms; `null` unless open. */
  circuitOpenUntil: number | null;
  /** Latency EWMA (time to first byte), ms; `null` before the first sample. */
  latencyEwmaMs: number | null;
  /** Until when the deployment is saturated (upstream `Retry-After`), epoch ms; `null` when it is not. */
  saturatedUntil: number | null;
  /** Last success (request or probe), epoch ms; `null` if none yet. */
  lastSuccessAt: number | null;
}

/** Router-wide settings a deployment's state needs. */
interface SharedSettings {
  clock: Clock;
  alpha: number;
  defaultSaturationMs: number;
  maxSaturationMs: number;
}

/** Everything the router keeps about one deployment. */
class DeploymentState {
  readonly breaker: CircuitBreaker;
  inFlightTokens = 0;
  inFlightRequests = 0;
  latencyEwmaMs: number | undefined;
  saturatedUntil = 0;
  lastSuccessAt: number | undefined;
  /** Sequence number of the last pick; 0 if never picked. */
  lastPicked = 0;

  constructor(
    readonly deployment: Deployment,
    readonly capacityTokens: number,
    readonly capacitySequences: number,
    readonly weight: number,
    readonly cost: number,
    private readonly shared: SharedSettings,
    breakerOptions: CircuitBreakerOptions,
  ) {
    this.breaker = new CircuitBreaker(shared.clock, breakerOptions);
  }

  now(): number {
    return this.shared.clock.now();
  }

  recordLatency(ms: number): void {
    const previous = this.latencyEwmaMs;
    this.latencyEwmaMs = previous === undefined ? ms : previous + this.shared.alpha * (ms - previous);
  }

  saturate(ms: number): void {
    const until = this.now() + Math.min(Math.max(0, ms), this.shared.maxSaturationMs);
    this.saturatedUntil = Math.max(this.saturatedUntil, until);
  }

  /** Saturation from a failure: the upstream's `Retry-After`, or the default for a 429 without one. */
  saturateAfter(error: unknown): void {
    const retryAfterSeconds = error instanceof UpstreamError ? error.retryAfterSeconds : undefined;
    this.saturate(retryAfterSeconds === undefined ? this.shared.defaultSaturationMs : retryAfterSeconds * 1000);
  }
}

/** Picks deployments and tracks their load and health. */
export class DeploymentRouter {
  private readonly mode: RoutingMode;
  private readonly settings: Readonly<Record<string, DeploymentRoutingSettings>>;
  private readonly tieTolerance: number;
  private readonly breakerOptions: CircuitBreakerOptions;
  private readonly shared: SharedSettings;
  private readonly states = new Map<string, DeploymentState>();
  private picks = 0;

  constructor(options: DeploymentRouterOptions = {}) {
    this.mode = options.mode ?? 'least_outstanding';
    this.settings = options.deployments ?? {};
    const alpha = options.latencyEwmaAlpha ?? 0.2;
    if (!(alpha > 0 && alpha <= 1)) throw new RangeError(`latencyEwmaAlpha must be in (0, 1], got ${alpha}`);
    this.tieTolerance = Math.max(0, options.loadTieTolerance ?? 0.01);
    this.breakerOptions = options.breaker ?? {};
    this.shared = {
      clock: options.clock ?? new RealClock(),
      alpha,
      defaultSaturationMs: options.defaultSaturationMs ?? 1_000,
      maxSaturationMs: options.maxSaturationMs ?? 60_000,
    };
    for (const model of options.catalog?.list() ?? []) {
      for (const deployment of model.deployments) this.state(deployment);
    }
  }

  /**
   * The deployment of `model` to send the next request to, or `undefined` when every one is excluded, saturated or
   * has its circuit open (see `retryAfterMs`). Call `begin` right after, before yielding to the event loop: a
   * half-open deployment's single probe slot is taken by `begin`, not by `pick`.
   */
  pick(model: CatalogModel, options: PickOptions = {}): Deployment | undefined {
    const now = this.shared.clock.now();
    const exclude = options.exclude;
    let candidates: DeploymentState[] = [];
    for (const deployment of model.deployments) {
      if (exclude?.has(deployment.id) === true) continue;
      const state = this.state(deployment);
      if (state.saturatedUntil > now || !state.breaker.admits()) continue;
      candidates.push(state);
    }
    if (candidates.length === 0) return undefined;
    const mode = this.mode;
    switch (mode) {
      case 'least_outstanding':
        break;
      case 'cost':
        candidates = cheapestWithRoom(candidates, options.tokens ?? 0) ?? candidates;
        break;
      default:
        return assertNever(mode);
    }
    const chosen = this.leastOutstanding(candidates);
    chosen.lastPicked = ++this.picks;
    return chosen.deployment;
  }

  /** Starts a request of `tokens` (prompt + output cap) on `deployment`. */
  begin(deployment: Deployment, tokens: number): RouteAttempt {
    const state = this.state(deployment);
    state.inFlightTokens += tokens;
    state.inFlightRequests++;
    return new Attempt(state, tokens, state.now(), state.breaker.start());
  }

  /** Keeps `deployment` out of `pick` for `ms` (capped at `maxSaturationMs`); a later deadline already set stays. */
  markSaturated(deployment: Deployment, ms: number): void {
    this.state(deployment).saturate(ms);
  }

  /**
   * How long until some deployment of `model` (not in `exclude`) may be picked again, ms: 0 when one may be picked
   * now; `undefined` when it cannot be told (every remaining one is a half-open deployment busy with its probe, or
   * none remains).
   */
  retryAfterMs(model: CatalogModel, exclude?: ReadonlySet<string>): number | undefined {
    const now = this.shared.clock.now();
    let soonest: number | undefined;
    for (const deployment of model.deployments) {
      if (exclude?.has(deployment.id) === true) continue;
      const state = this.state(deployment);
      const circuit = state.breaker.snapshot();
      if (circuit.state === 'half-open' && !state.breaker.admits()) continue;
      const circuitWait = circuit.openUntil === null ? 0 : circuit.openUntil - now;
      const wait = Math.max(0, circuitWait, state.saturatedUntil - now);
      soonest = soonest === undefined ? wait : Math.min(soonest, wait);
    }
    return soonest;
  }

  /** Whether `deployment` could be picked now (its circuit admits a request and it is not saturated). */
  isAvailable(deployment: Deployment): boolean {
    const state = this.state(deployment);
    return state.saturatedUntil <= state.now() && state.breaker.admits();
  }

  /** Routing state of every deployment the router knows, in the order it learnt them. */
  fleetSnapshot(): DeploymentSnapshot[] {
    return [...this.states.values()].map(snapshotOf);
  }

  /** Routing state of one deployment. */
  snapshot(deployment: Deployment): DeploymentSnapshot {
    return snapshotOf(this.state(deployment));
  }

  private leastOutstanding(candidates: readonly DeploymentState[]): DeploymentState {
    let least = Number.POSITIVE_INFINITY;
    for (const state of candidates) least = Math.min(least, load(state));
    let best: DeploymentState | undefined;
    for (const state of candidates) {
      if (load(state) > least + this.tieTolerance) continue;
      if (best === undefined || fasterOrFresher(state, best)) best = state;
    }
    return best!;
  }

  private state(deployment: Deployment): DeploymentState {
    let state = this.states.get(deployment.id);
    if (state === undefined) {
      const settings = this.settings[deployment.id] ?? {};
      state = new DeploymentState(
        deployment,
        positive(settings.capacityTokens ?? deployment.capacity.tokens, `${deployment.id} capacity tokens`),
        positive(settings.capacitySequences ?? deployment.capacity.sequences, `${deployment.id} capacity sequences`),
        positive(settings.weight ?? deployment.weight, `${deployment.id} weight`),
        settings.cost ?? 0,
        this.shared,
        this.breakerOptions,
      );
      this.states.set(deployment.id, state);
    }
    return state;
  }
}

class Attempt implements RouteAttempt {
  settled = false;
  private firstByteSeen = false;
  /** Set once a half-open probe has given its verdict at first byte; the probe slot is then gone. */
  private probeDecided = false;

  constructor(
    private readonly state: DeploymentState,
    readonly tokens: number,
    readonly startedAt: number,
    readonly probe: boolean,
  ) {}

  get deployment(): Deployment {
    return this.state.deployment;
  }

  firstByte(): void {
    if (this.settled || this.firstByteSeen) return;
    this.firstByteSeen = true;
    this.state.recordLatency(this.state.now() - this.startedAt);
    // A probe that got an answer has shown the deployment works; waiting for the end of a long stream would keep
    // every other request off a healthy deployment meanwhile.
    if (this.probe) {
      this.state.breaker.recordSuccess(true);
      this.probeDecided = true;
    }
  }

  succeed(): void {
    if (this.settled) return;
    this.firstByte();
    this.finish();
    if (!this.probeDecided) this.state.breaker.recordSuccess(this.probe);
    this.state.lastSuccessAt = this.state.now();
  }

  fail(error: unknown): FailureKind {
    const kind = classifyFailure(error);
    if (this.settled) return kind;
    this.finish();
    const probe = this.probe && !this.probeDecided;
    switch (kind) {
      case 'unhealthy':
        this.state.breaker.recordFailure(probe);
        // A timeout bounds the time to first byte from below: count it, so a slow deployment stops looking fast.
        if (!this.firstByteSeen && error instanceof UpstreamTimeoutError) {
          this.state.recordLatency(this.state.now() - this.startedAt);
        }
        break;
      case 'saturated':
      case 'rejected':
        // The deployment answered: it is alive, whatever it thought of this request.
        this.state.breaker.recordSuccess(probe);
        break;
      case 'cancelled':
        this.state.breaker.releaseProbe(probe);
        break;
      default:
        return assertNever(kind);
    }
    if (kind === 'saturated' || (error instanceof UpstreamError && error.retryAfterSeconds !== undefined)) {
      this.state.saturateAfter(error);
    }
    return kind;
  }

  cancel(): void {
    if (this.settled) return;
    this.finish();
    this.state.breaker.releaseProbe(this.probe && !this.probeDecided);
  }

  private finish(): void {
    this.settled = true;
    this.state.inFlightTokens -= this.tokens;
    this.state.inFlightRequests--;
  }
}

function snapshotOf(state: DeploymentState): DeploymentSnapshot {
  const circuit = state.breaker.snapshot();
  return {
    id: state.deployment.id,
    upstream: state.deployment.upstream.name,
    inFlightTokens: state.inFlightTokens,
    inFlightRequests: state.inFlightRequests,
    capacityTokens: state.capacityTokens,
    capacitySequences: state.capacitySequences,
    load: load(state),
    weight: state.weight,
    cost: state.cost,
    circuit: circuit.state,
    consecutiveFailures: circuit.consecutiveFailures,
    errorRate: circuit.errorRate,
    circuitOpenUntil: circuit.openUntil,
    latencyEwmaMs: state.latencyEwmaMs ?? null,
    saturatedUntil: state.saturatedUntil > state.now() ? state.saturatedUntil : null,
    lastSuccessAt: state.lastSuccessAt ?? null,
  };
}

function load(state: DeploymentState): number {
  const tokens = state.inFlightTokens / state.capacityTokens;
  const sequences = state.inFlightRequests / state.capacitySequences;
  return Math.max(tokens, sequences) / state.weight;
}

/** Whether `a` wins a load tie against `b`: lower latency EWMA (unmeasured counts as 0), then least recently picked. */
function fasterOrFresher(a: DeploymentState, b: DeploymentState): boolean {
  const latencyA = a.latencyEwmaMs ?? 0;
  const latencyB = b.latencyEwmaMs ?? 0;
  if (latencyA !== latencyB) return latencyA < latencyB;
  return a.lastPicked < b.lastPicked;
}

/** The cheapest deployments with room for `tokens` more, or `undefined` when none has room. */
function cheapestWithRoom(candidates: readonly DeploymentState[], tokens: number): DeploymentState[] | undefined {
  const withRoom = candidates.filter(
    (state) =>
      state.inFlightRequests < state.capacitySequences &&
      state.inFlightTokens < state.capacityTokens &&
      state.inFlightTokens + tokens <= state.capacityTokens,
  );
  if (withRoom.length === 0) return undefined;
  const cheapest = Math.min(...withRoom.map((state) => state.cost));
  return withRoom.filter((state) => state.cost === cheapest);
}

function positive(value: number, name: string): number {
  if (!(value > 0)) throw new RangeError(`${name} must be positive, got ${value}`);
  return value;
}
