/**
 * Plans and rate limits: what a tenant is promised, how per-key and per-model overrides combine with its plan, and
 * how the counters behind each limit measure time.
 *
 * ## Windows (the same in the in-process and the Redis store)
 *
 * - **RPM and TPM: a sliding window of sub-bucket counters.** Time is cut into buckets of `bucketMs` (default 1 s);
 *   a window of `windowMs` (default 60 s) is `windowMs / bucketMs` buckets (`N`). A take at time `t` lands in bucket
 *   `b = floor(t / bucketMs)`, and the usage checked against the limit is the sum of buckets `b − N … b`, i.e. the
 *   current bucket and the `N` before it. Those `N + 1` buckets always cover the last `windowMs` entirely, so **no
 *   interval of `windowMs` ever holds more than the limit** (the guarantee the cluster test checks: 600 RPM means at
 *   most 600 in any minute). The price is that a unit of budget comes back between `windowMs` and
 *   `windowMs + bucketMs` after it was taken, never earlier. Why not GCRA or a token bucket: they refill
 *   continuously, so with a burst equal to the limit they admit up to twice the limit inside one 60 s interval — what
 *   an operator protecting a fleet means by "600 per minute" is the sliding-window bound. Why not a log of
 *   timestamps: memory grows with the limit (a 10M-TPM tenant), buckets stay at `N + 1` numbers per counter.
 * - **TPD: the calendar day in UTC** (a fixed window from 00:00:00.000 UTC), the same day usage reports and invoices
 *   use, so "tokens per day" reads the same everywhere. It resets at midnight UTC.
 * - **Concurrency: leases.** Each admitted request holds one lease per scope with a concurrency limit until it is
 *   released or `leaseMs` passes, so a crashed process cannot leak concurrency forever.
 */
import type { ServiceClass } from '../scheduling/service-class.js';

/** Rate limits of one scope. Every field is optional: undefined means unlimited. */
export interface Limits {
  /** Requests per sliding window (per minute by default). */
  rpm?: number;
  /** Tokens (input + output) per sliding window (per minute by default). */
  tpm?: number;
  /** Tokens (input + output) per calendar day in UTC. */
  tpd?: number;
  /** Requests in flight at once. */
  concurrency?: number;
}

/** The fields of `Limits`, in the order they are checked. */
export const limitFields = ['rpm', 'tpm', 'tpd', 'concurrency'] as const;

/** One field of `Limits`; also the reason a request is refused. */
export type LimitField = (typeof limitFields)[number];

/** What a tenant is sold: its limits, the service classes it may use and its fair-share weight. */
export interface Plan {
  /** Limits of the tenant as a whole (shared by its keys and models unless overridden). */
  limits: Limits;
  /** Per-model overrides of `limits`, by public model name. */
  models?: Record<string, Limits>;
  /** Service classes the tenant may use; a request asking for another class is downgraded. */
  tiers: ServiceClass[];
  /** Weight in fair sharing between tenants (> 0). Default 1. */
  weight: number;
}

/** A plan with no limits, every class and weight 1. */
export const unlimitedPlan: Plan = Object.freeze({
  limits: Object.freeze({}),
  tiers: ['priority', 'default', 'flex', 'batch'],
  weight: 1,
}) as Plan;

/**
 * Combines limit layers, least specific first (tenant plan, key override, per-model override): for each field the
 * most specific layer that sets it wins. `undefined` layers are skipped.
 */
export function resolveLimits(...layers: ReadonlyArray<Limits | undefined>): Limits {
  const resolved: Limits = {};
  for (const layer of layers) {
    if (layer === undefined) continue;
    for (const field of limitFields) {
      const value = layer[field];
      if (value !== undefined) resolved[field] = value;
    }
  }
  return resolved;
}

/** One set of counters and the limits that apply to them. */
export interface AdmissionScope {
  /**
   * Stable id of the counters, e.g. `tenant:ten_x`, `key:key_y`, `key:key_y:model:m`. Requests naming the same id
   * share its counters.
   */
  id: string;
  /** Limits checked on this scope's counters; an undefined field is neither checked nor counted. */
  limits: Limits;
}

/** Inputs of `admissionScopes`. */
export interface AdmissionScopesInput {
  /** Tenant id (also the hash tag of every Redis key of the request). */
  tenantId: string;
  /** API key id. */
  keyId: string;
  /** Public model name the request is for. */
  model: string;
  /** The tenant's plan limits. */
  plan: Limits;
  /** The plan's overrides for this model, if any (shared by the tenant's keys). */
  planModel?: Limits;
  /** The key's overrides, if any. */
  key?: Limits;
  /** Overrides for this key and model, if any. */
  keyModel?: Limits;
}

/**
 * The scopes one request is counted in, following `resolveLimits`' rule (most specific wins per field): each field
 * is counted at the level that set it. A field set only by the plan is counted on `tenant:<id>`, shared by every key
 * of the tenant that does not override it; a field a key overrides is counted on `key:<id>` (that key's own
 * allowance, no longer drawn from the tenant's); a key's per-model override on `key:<id>:model:<name>`; a plan's
 * per-model override (weaker than any key override) on `tenant:<id>:model:<name>`. Scopes left without any limit are
 * omitted, so an unlimited request touches no counter at all.
 */
export function admissionScopes(input: AdmissionScopesInput): AdmissionScope[] {
  const tenant: Limits = {};
  const tenantModel: Limits = {};
  const key: Limits = {};
  const keyModel: Limits = {};
  for (const field of limitFields) {
    const modelValue = input.keyModel?.[field];
    const keyValue = input.key?.[field];
    const planModelValue = input.planModel?.[field];
    const planValue = input.plan[field];
    if (modelValue !== undefined) keyModel[field] = modelValue;
    else if (keyValue !== undefined) key[field] = keyValue;
    else if (planModelValue !== undefined) tenantModel[field] = planModelValue;
    else if (planValue !== undefined) tenant[field] = planValue;
  }
  const scopes: AdmissionScope[] = [];
  if (hasLimit(tenant)) scopes.push({ id: `tenant:${input.tenantId}`, limits: tenant });
  if (hasLimit(tenantModel)) scopes.push({ id: `tenant:${input.tenantId}:model:${input.model}`, limits: tenantModel });
  if (hasLimit(key)) scopes.push({ id: `key:${input.keyId}`, limits: key });
  if (hasLimit(keyModel)) scopes.push({ id: `key:${input.keyId}:model:${input.model}`, limits: keyModel });
  return scopes;
}

function hasLimit(limits: Limits): boolean {
  return (
    limits.rpm !== undefined || limits.tpm !== undefined || limits.tpd !== undefined || limits.concurrency !== undefined
  );
}

/** How the RPM/TPM windows measure time. */
export interface RateWindowOptions {
  /** Length of the RPM/TPM window, ms. Default 60000 (a minute). Must be a multiple of `bucketMs`. */
  windowMs?: number;
  /** Length of one sub-bucket, ms. Default 1000. */
  bucketMs?: number;
}

/** `RateWindowOptions` with defaults applied and checked. */
export interface RateWindow {
  readonly windowMs: number;
  readonly bucketMs: number;
  /** `windowMs / bucketMs`: the window is the current bucket and the `buckets` before it. */
  readonly buckets: number;
}

/** Length of the TPD window (a UTC day), ms. */
export const DAY_MS = 86_400_000;

/** Applies defaults to `RateWindowOptions` and rejects inconsistent values. */
export function rateWindow(options: RateWindowOptions = {}): RateWindow {
  const windowMs = options.windowMs ?? 60_000;
  const bucketMs = options.bucketMs ?? 1000;
  const buckets = windowMs / bucketMs;
  if (!Number.isInteger(bucketMs) || bucketMs <= 0 || !Number.isInteger(buckets) || buckets < 1) {
    throw new Error(`windowMs (${windowMs}) must be a positive multiple of bucketMs (${bucketMs})`);
  }
  return { windowMs, bucketMs, buckets };
}
