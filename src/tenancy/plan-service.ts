/**
 * Plans: what each tenant is sold (limits, allowed service classes, fair-share weight), with per-key limit
 * overrides. Stored in the store's settings table as JSON (`plan:tenant:<id>`, `limits:key:<id>`), cached per
 * process for a few seconds; an admin change through this process takes effect at once.
 */
import type { Limits, Plan } from '../admission/limits.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import type { Store } from '../store/store.js';

/** A key's limit overrides, with optional per-model overrides. */
export type KeyLimits = Limits & { models?: Record<string, Limits> };

/** The default plan as configured. */
export interface PlanDefaults {
  limits: Limits;
  tiers: ServiceClass[];
  weight: number;
}

interface Cached<T> {
  value: T;
  staleAt: number;
}

/** Plans and key limits, read on the request path. */
export class PlanService {
  private readonly plans = new Map<string, Cached<Plan>>();
  private readonly keyLimits = new Map<string, Cached<KeyLimits | undefined>>();

  constructor(
    private readonly store: Pick<Store, 'getSetting' | 'putSetting'>,
    private readonly defaults: PlanDefaults,
    /** How long a read stays cached, ms. Default 5000. */
    private readonly cacheTtlMs = 5000,
  ) {}

  /** The tenant's plan (its own, or the default). */
  async planFor(tenantId: string): Promise<Plan> {
    const cached = this.plans.get(tenantId);
    if (cached !== undefined && cached.staleAt > Date.now()) return cached.value;
    const stored = await this.store.getSetting(`plan:tenant:${tenantId}`);
    const plan = stored === undefined ? this.defaultPlan() : (JSON.parse(stored) as Plan);
    this.plans.set(tenantId, { value: plan, staleAt: Date.now() + this.cacheTtlMs });
    return plan;
  }

  /** The key's limit overrides, if any. */
  async limitsForKey(keyId: string): Promise<KeyLimits | undefined> {
    const cached = this.keyLimits.get(keyId);
    if (cached !== undefined && cached.staleAt > Date.now()) return cached.value;
    const stored = await this.store.getSetting(`limits:key:${keyId}`);
    const limits = stored === undefined ? undefined : (JSON.parse(stored) as KeyLimits);
    this.keyLimits.set(keyId, { value: limits, staleAt: Date.now() + this.cacheTtlMs });
    return limits;
  }

  async setTenantPlan(tenantId: string, plan: Plan): Promise<void> {
    await this.store.putSetting(`plan:tenant:${tenantId}`, JSON.stringify(plan));
    this.plans.set(tenantId, { value: plan, staleAt: Date.now() + this.cacheTtlMs });
  }

  async setKeyLimits(keyId: string, limits: KeyLimits): Promise<void> {
    await this.store.putSetting(`limits:key:${keyId}`, JSON.stringify(limits));
    this.keyLimits.set(keyId, { value: limits, staleAt: Date.now() + this.cacheTtlMs });
  }

  defaultPlan(): Plan {
    return { limits: { ...this.defaults.limits }, tiers: [...this.defaults.tiers], weight: this.defaults.weight };
  }
}
