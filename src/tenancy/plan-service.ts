/**
 * Plans: what each tenant is sold (limits, allowed service classes, fair-share weight), with per-key limit
 * overrides. Stored in the store's settings table as JSON (`plan:tenant:<id>`, `limits:key:<id>`), cached per
 * process for a few seconds; an admin change takes effect at once in this process, and, announced on the bus under
 * the setting's name, in the others.
 */
import type { Limits, Plan } from '../admission/limits.js';
import { StoreUnavailableError } from '../errors/gateway-error.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import type { Store } from '../store/store.js';
import { ConfigSubject, type InvalidationBus } from './invalidation-bus.js';
import { SharedReads } from './shared-reads.js';

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

const TENANT_PLAN = 'plan:tenant:';
const KEY_LIMITS = 'limits:key:';

/** Options of `PlanService`. */
export interface PlanServiceOptions {
  /** How long a read stays cached, ms. Default 5000. */
  cacheTtlMs?: number;
  /** Where changes are announced to the other processes, and heard from them. Default: this process only. */
  bus?: InvalidationBus;
  /**
   * Told of every store failure while refreshing a plan or a key's limits. The last value read is then kept in use
   * (`stale`) — a change made meanwhile is announced on the bus, which drops it — and without one the request is
   * refused with 503 `store_unavailable` (`refused`).
   */
  onStoreFailure?: (error: unknown, outcome: 'stale' | 'refused') => void;
}

/** Plans and key limits, read on the request path. */
export class PlanService {
  private readonly plans = new Map<string, Cached<Plan>>();
  private readonly keyLimits = new Map<string, Cached<KeyLimits | undefined>>();
  private readonly cacheTtlMs: number;
  private readonly bus: InvalidationBus | undefined;
  private readonly onStoreFailure: ((error: unknown, outcome: 'stale' | 'refused') => void) | undefined;
  private readonly unsubscribe: (() => void) | undefined;
  /** Reads in flight, by tenant or key id: a burst of requests at expiry makes one query, not one each. */
  private readonly planReads = new SharedReads<Plan>();
  private readonly limitReads = new SharedReads<KeyLimits | undefined>();
  /** Bumped by every change heard: a read that started before one must not fill the cache with what it read. */
  private generation = 0;

  constructor(
    private readonly store: Pick<Store, 'getSetting' | 'putSetting'>,
    private readonly defaults: PlanDefaults,
    options: PlanServiceOptions = {},
  ) {
    this.cacheTtlMs = options.cacheTtlMs ?? 5000;
    this.bus = options.bus;
    this.onStoreFailure = options.onStoreFailure;
    this.unsubscribe = options.bus?.subscribe((subject) => this.heard(subject));
  }

  /** The tenant's plan (its own, or the default). */
  planFor(tenantId: string): Promise<Plan> {
    return this.cachedRead(this.plans, this.planReads, TENANT_PLAN, tenantId, 'your plan', this.parsePlan);
  }

  /** The key's limit overrides, if any. */
  limitsForKey(keyId: string): Promise<KeyLimits | undefined> {
    return this.cachedRead(this.keyLimits, this.limitReads, KEY_LIMITS, keyId, "your key's limits", parseKeyLimits);
  }

  /** Stores a tenant's plan; it applies at once here and, once the bus has carried it, in the other processes. */
  async setTenantPlan(tenantId: string, plan: Plan): Promise<void> {
    await this.store.putSetting(`${TENANT_PLAN}${tenantId}`, JSON.stringify(plan));
    await this.announce(`${TENANT_PLAN}${tenantId}`);
    this.plans.set(tenantId, { value: plan, staleAt: Date.now() + this.cacheTtlMs });
  }

  /** Stores a key's limit overrides; as `setTenantPlan`. */
  async setKeyLimits(keyId: string, limits: KeyLimits): Promise<void> {
    await this.store.putSetting(`${KEY_LIMITS}${keyId}`, JSON.stringify(limits));
    await this.announce(`${KEY_LIMITS}${keyId}`);
    this.keyLimits.set(keyId, { value: limits, staleAt: Date.now() + this.cacheTtlMs });
  }

  /** Stops listening to the bus. */
  close(): void {
    this.unsubscribe?.();
  }

  /**
   * The cached value while fresh, else the stored setting `prefix + id` (parsed and cached), read once for all the
   * requests that want it meanwhile. When the store fails, the stale cached value if there is one, else
   * `StoreUnavailableError`.
   */
  private cachedRead<T>(
    cache: Map<string, Cached<T>>,
    reads: SharedReads<T>,
    prefix: string,
    id: string,
    what: string,
    parse: (stored: string | undefined) => T,
  ): Promise<T> {
    const cached = cache.get(id);
    if (cached !== undefined && cached.staleAt > Date.now()) return Promise.resolve(cached.value);
    const generation = this.generation;
    return reads.join(id, generation, async () => {
      let stored: string | undefined;
      try {
        stored = await this.store.getSetting(`${prefix}${id}`);
      } catch (error: unknown) {
        this.onStoreFailure?.(error, cached === undefined ? 'refused' : 'stale');
        if (cached === undefined) throw new StoreUnavailableError(error, what);
        return cached.value;
      }
      const value = parse(stored);
      if (generation === this.generation) cache.set(id, { value, staleAt: Date.now() + this.cacheTtlMs });
      return value;
    });
  }

  private readonly parsePlan = (stored: string | undefined): Plan =>
    stored === undefined ? this.defaultPlan() : (JSON.parse(stored) as Plan);

  private async announce(subject: string): Promise<void> {
    // Delivered here too: drops this process's entry (and voids reads in flight) before the new one is cached.
    await this.bus?.publish(subject);
  }

  private heard(subject: string): void {
    if (subject === ConfigSubject.all) {
      this.generation++;
      this.plans.clear();
      this.keyLimits.clear();
    } else if (subject.startsWith(TENANT_PLAN)) {
      this.generation++;
      this.plans.delete(subject.slice(TENANT_PLAN.length));
    } else if (subject.startsWith(KEY_LIMITS)) {
      this.generation++;
      this.keyLimits.delete(subject.slice(KEY_LIMITS.length));
    }
  }

  defaultPlan(): Plan {
    return { limits: { ...this.defaults.limits }, tiers: [...this.defaults.tiers], weight: this.defaults.weight };
  }
}

function parseKeyLimits(stored: string | undefined): KeyLimits | undefined {
  return stored === undefined ? undefined : (JSON.parse(stored) as KeyLimits);
}
