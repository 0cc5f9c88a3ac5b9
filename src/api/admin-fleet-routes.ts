/** Admin routes for plans, key limits and the fleet view (`/admin/v1`). */
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../errors/gateway-error.js';
import type { AdmissionGate } from '../relay/admission-gate.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import type { Store } from '../store/store.js';
import { keyLimitsFromInput, planFromInput } from '../tenancy/plan-input.js';
import type { PlanService } from '../tenancy/plan-service.js';

/** Registers plan, key-limit and fleet routes. */
export function registerAdminFleetRoutes(
  admin: FastifyInstance,
  deps: { store: Store; plans: PlanService; router: DeploymentRouter; gate: AdmissionGate },
): void {
  const { store, plans, router, gate } = deps;

  // Validated by `planFromInput`, not by a route schema: `tollgate plans set` on the store applies the same check,
  // so both refuse a bad plan with the same error.
  admin.put<{ Params: { id: string }; Body: unknown }>('/tenants/:id/plan', async (request) => {
    const plan = planFromInput(request.body, plans.defaultPlan());
    if ((await store.getTenant(request.params.id)) === undefined) {
      throw new NotFoundError(`No tenant with id "${request.params.id}".`, 'tenant_not_found');
    }
    await plans.setTenantPlan(request.params.id, plan);
    return {
      object: 'plan',
      tenant_id: request.params.id,
      ...plan.limits,
      tiers: plan.tiers,
      weight: plan.weight,
      models: plan.models ?? {},
    };
  });

  admin.put<{ Params: { id: string }; Body: unknown }>('/keys/:id/limits', async (request) => {
    const limits = keyLimitsFromInput(request.body);
    if ((await store.getKey(request.params.id)) === undefined) {
      throw new NotFoundError(`No key with id "${request.params.id}".`, 'key_not_found');
    }
    await plans.setKeyLimits(request.params.id, limits);
    return { object: 'key_limits', key_id: request.params.id, ...limits };
  });

  admin.get('/fleet', async () => ({
    object: 'fleet',
    deployments: router.fleetSnapshot(),
    models: [...gate.modelSchedulers].map(([model, scheduler]) => ({ model, ...scheduler.stats() })),
  }));
}
