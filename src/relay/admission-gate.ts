/**
 * Admission, between authentication and the upstream call: the plan decides the service class; rate limits (RPM,
 * TPM, TPD, concurrency) are taken in one atomic step in the admission store; then the wallet reservation (atomic in
 * the ledger); then capacity from the model's scheduler (queue by class, fair share, shedding).
 *
 * "All pass or nothing is taken": a wallet refusal rolls the rate-limit take back before the error leaves this
 * function, and a rate-limit refusal never touches the wallet — so a request refused by either takes no budget of
 * the other. The two stores are different systems (counters in memory or Redis, money in SQLite/PostgreSQL), so
 * the rollback is a compensation, not one transaction: between the take and the rollback (one wallet round trip)
 * another request may see the counters briefly lower.
 *
 * Whatever happens next, `trace.release` undoes or settles the admission exactly once (called by the recorder at
 * the end of every request): completed requests reconcile TPM/TPD with real usage and free their concurrency and
 * scheduler capacity; requests that produced no usage roll the rate-limit take back.
 */
import type { AdmissionStore, AdmissionTicket } from '../admission/admission-store.js';
import { admissionScopes } from '../admission/limits.js';
import type { BillingService } from '../billing/billing-service.js';
import { type CatalogModel, modelCapacity } from '../catalog/catalog.js';
import type { Clock } from '../clock/clock.js';
import { abortedRequestError, GatewayError, RateLimitError } from '../errors/gateway-error.js';
import type { RequestTrace } from '../metering/request-recorder.js';
import type { Logger } from '../observability/logger.js';
import type { Scheduler, SchedulerRefusal, SchedulerTicket } from '../scheduling/scheduler.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import { TieredScheduler, type TieredSchedulerOptions } from '../scheduling/tiered-scheduler.js';
import type { Principal } from '../tenancy/key-service.js';
import type { PlanService } from '../tenancy/plan-service.js';
import type { Usage } from '../upstreams/usage.js';
import { resolveServiceClass } from './service-tier.js';

/** What the gate needs to know about one request. */
export interface AdmissionInput {
  trace: RequestTrace;
  principal: Principal;
  model: CatalogModel;
  estimatedPromptTokens: number;
  maxOutputTokens: number;
  /** The body's `service_tier`. */
  requestedTier: unknown;
  /** Aborted when the client goes away (a queued request then leaves the queue). */
  signal: AbortSignal;
  /** Batch traces only: the class to run in instead of the plan/tier mapping's (deadline promotion). */
  serviceClass?: ServiceClass;
}

/** Options of `AdmissionGate`. */
export interface AdmissionGateOptions {
  /** Per-class scheduler policy overrides; undefined disables scheduling (dispatch at once). */
  scheduling: TieredSchedulerOptions['classes'] | undefined;
  /** The batch class's capacity ceiling at an instant (off-peak windows give batch more). Default: fixed. */
  batchCeilingAt?: (now: number) => number;
  /** Slots batch leaves free as online load grows. Default: none beyond the ceiling. */
  onlineHeadroom?: TieredSchedulerOptions['onlineHeadroom'];
  clock: Clock;
  logger: Logger;
  /** Concurrency leases expire after this long if never released (crashed process), ms. Default 15 min. */
  leaseMs?: number;
}

/** Plans, rate limits, wallet and capacity for every request. */
export class AdmissionGate {
  private readonly schedulers = new Map<string, TieredScheduler>();
  private readonly leaseMs: number;

  constructor(
    private readonly plans: PlanService,
    private readonly limits: AdmissionStore,
    private readonly billing: BillingService,
    models: readonly CatalogModel[],
    private readonly options: AdmissionGateOptions,
  ) {
    this.leaseMs = options.leaseMs ?? 15 * 60_000;
    if (options.scheduling !== undefined) {
      for (const model of models) {
        this.schedulers.set(
          model.name,
          new TieredScheduler({
            clock: options.clock,
            capacity: modelCapacity(model),
            classes: options.scheduling,
            ...(options.batchCeilingAt === undefined ? {} : { batchCeilingAt: options.batchCeilingAt }),
            ...(options.onlineHeadroom === undefined ? {} : { onlineHeadroom: options.onlineHeadroom }),
          }),
        );
      }
    }
  }

  /** The schedulers by model, for metrics, the fleet view, capacity refinement and cluster fair-share sync. */
  get modelSchedulers(): ReadonlyMap<string, TieredScheduler> {
    return this.schedulers;
  }

  /** Admits the request or throws (429 with `Retry-After`, 503 when the limit store is down). */
  async admit(input: AdmissionInput): Promise<void> {
    const { trace, principal, model } = input;
    const [plan, keyLimits] = await Promise.all([
      this.plans.planFor(principal.tenantId),
      this.plans.limitsForKey(principal.keyId),
    ]);
    const serviceClass =
      trace.batch && input.serviceClass !== undefined
        ? input.serviceClass
        : resolveServiceClass(input.requestedTier, trace.batch, plan.tiers);
    trace.serviceClass = serviceClass;
    const tokens = input.estimatedPromptTokens + input.maxOutputTokens;

    const scopes = admissionScopes({
      tenantId: principal.tenantId,
      keyId: principal.keyId,
      model: model.name,
      plan: plan.limits,
      ...(plan.models?.[model.name] === undefined ? {} : { planModel: plan.models[model.name] }),
      ...(keyLimits === undefined ? {} : { key: keyLimits }),
      ...(keyLimits?.models?.[model.name] === undefined ? {} : { keyModel: keyLimits.models[model.name] }),
    });
    let ticket: AdmissionTicket | undefined;
    if (scopes.length > 0) {
      const result = await this.limits.acquire({ tenantId: principal.tenantId, scopes, tokens, leaseMs: this.leaseMs });
      trace.rateLimit = result.state;
      if (!result.ok) {
        throw new RateLimitError(
          `Rate limit reached for ${result.scope.replace(/:.*$/, '')} on ${limitName(result.reason)}. Retry later.`,
          result.retryAfterMs / 1000,
        );
      }
      ticket = result.ticket;
    }

    const quote = this.billing.quote({
      tenantId: principal.tenantId,
      model: model.name,
      receivedAt: trace.receivedAt,
      promptTokens: input.estimatedPromptTokens,
      maxOutputTokens: input.maxOutputTokens,
      batch: trace.batch,
    });
    try {
      trace.reservation = await this.billing.reserve(principal.tenantId, principal.keyId, quote, trace.receivedAt);
    } catch (error: unknown) {
      if (ticket !== undefined) await this.limits.rollback(ticket);
      throw error;
    }

    let scheduled: { scheduler: Scheduler; ticket: SchedulerTicket } | undefined;
    trace.release = (usage: Usage | undefined) => {
      if (scheduled !== undefined) {
        if (usage === undefined) scheduled.scheduler.cancel(scheduled.ticket);
        else
          scheduled.scheduler.complete(scheduled.ticket, {
            inputTokens: usage.input.total,
            outputTokens: usage.output.total,
          });
      }
      if (ticket !== undefined) this.settleLimits(ticket, usage);
    };

    const scheduler = this.schedulers.get(model.name);
    if (scheduler === undefined) return;
    const submitted = scheduler.submit({
      id: trace.requestId,
      tenantId: principal.tenantId,
      weight: plan.weight,
      serviceClass,
      inputTokens: input.estimatedPromptTokens,
      maxOutputTokens: input.maxOutputTokens,
    });
    if (submitted.outcome === 'refused') throw capacityRefusal(submitted.refusal);
    scheduled = { scheduler, ticket: submitted.ticket };
    if (submitted.outcome === 'dispatched') return;
    const leave = () => scheduler.cancel(submitted.ticket);
    // A signal aborted before this point fires no event: leave now, or a batch-class ticket (no wait limit) would
    // wait in the queue for ever.
    if (input.signal.aborted) leave();
    else input.signal.addEventListener('abort', leave, { once: true });
    const outcome = await submitted.ticket.settled();
    input.signal.removeEventListener('abort', leave);
    if (outcome.outcome === 'refused') {
      scheduled = undefined;
      throw capacityRefusal(outcome.refusal);
    }
    if (outcome.outcome === 'cancelled') {
      scheduled = undefined;
      throw abortedRequestError(input.signal);
    }
  }

  private settleLimits(ticket: AdmissionTicket, usage: Usage | undefined): void {
    const done =
      usage === undefined
        ? this.limits.rollback(ticket)
        : this.limits.reconcile(ticket, usage.input.total + usage.output.total).then(() => this.limits.release(ticket));
    done.catch((error: unknown) => this.options.logger.warn({ err: error }, 'rate-limit settlement failed'));
  }
}

function capacityRefusal(refusal: SchedulerRefusal): GatewayError {
  if (refusal.reason === 'too_large') {
    return new GatewayError(
      400,
      'invalid_request_error',
      'request_too_large_for_capacity',
      'The request is larger than this model can ever run at once; lower max_tokens.',
      false,
      { param: 'max_tokens' },
    );
  }
  const message =
    refusal.reason === 'shed'
      ? 'The model is overloaded; this request was shed. Retry later or use a higher service tier.'
      : 'The model is busy: the wait for capacity would exceed the limit of this service tier. Retry later.';
  return new RateLimitError(message, refusal.retryAfterMs / 1000, 'server_overloaded');
}

function limitName(reason: string): string {
  switch (reason) {
    case 'rpm':
      return 'requests per minute';
    case 'tpm':
      return 'tokens per minute';
    case 'tpd':
      return 'tokens per day';
    default:
      return 'concurrent requests';
  }
}
