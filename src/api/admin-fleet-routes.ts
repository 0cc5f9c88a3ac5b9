/** Admin routes for plans, key limits and the fleet view (`/admin/v1`). */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Limits, Plan } from '../admission/limits.js';
import { NotFoundError } from '../errors/gateway-error.js';
import type { AdmissionGate } from '../relay/admission-gate.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import type { Store } from '../store/store.js';
import type { PlanService } from '../tenancy/plan-service.js';

const Count = Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]);
const LimitsBody = {
  rpm: Type.Optional(Count),
  tpm: Type.Optional(Count),
  tpd: Type.Optional(Count),
  concurrency: Type.Optional(Count),
};
const ServiceClassBody = Type.Union([
  Type.Literal('priority'),
  Type.Literal('default'),
  Type.Literal('flex'),
  Type.Literal('batch'),
]);
const LimitsObject = Type.Object(LimitsBody, { additionalProperties: false });
/** Per-model overrides, by public model name. */
const ModelLimits = Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 128 }), LimitsObject));
const PlanBody = Type.Object(
  {
    ...LimitsBody,
    models: ModelLimits,
    tiers: Type.Optional(Type.Array(ServiceClassBody, { minItems: 1 })),
    weight: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1000 })),
  },
  { additionalProperties: false },
);
const KeyLimitsBody = Type.Object({ ...LimitsBody, models: ModelLimits }, { additionalProperties: false });

interface LimitsInput {
  rpm?: number | null;
  tpm?: number | null;
  tpd?: number | null;
  concurrency?: number | null;
  models?: Record<string, LimitsInput>;
}

/** Registers plan, key-limit and fleet routes. */
export function registerAdminFleetRoutes(
  admin: FastifyInstance,
  deps: { store: Store; plans: PlanService; router: DeploymentRouter; gate: AdmissionGate },
): void {
  const { store, plans, router, gate } = deps;

  admin.put<{ Params: { id: string }; Body: LimitsInput & { tiers?: ServiceClass[]; weight?: number } }>(
    '/tenants/:id/plan',
    { schema: { body: PlanBody } },
    async (request) => {
      if ((await store.getTenant(request.params.id)) === undefined) {
        throw new NotFoundError(`No tenant with id "${request.params.id}".`, 'tenant_not_found');
      }
      const defaults = plans.defaultPlan();
      const models = modelLimitsOf(request.body.models);
      const plan: Plan = {
        limits: limitsOf(request.body),
        tiers: request.body.tiers ?? defaults.tiers,
        weight: request.body.weight ?? defaults.weight,
        ...(models === undefined ? {} : { models }),
      };
      await plans.setTenantPlan(request.params.id, plan);
      return {
        object: 'plan',
        tenant_id: request.params.id,
        ...plan.limits,
        tiers: plan.tiers,
        weight: plan.weight,
        models: plan.models ?? {},
      };
    },
  );

  admin.put<{ Params: { id: string }; Body: LimitsInput }>(
    '/keys/:id/limits',
    { schema: { body: KeyLimitsBody } },
    async (request) => {
      if ((await store.getKey(request.params.id)) === undefined) {
        throw new NotFoundError(`No key with id "${request.params.id}".`, 'key_not_found');
      }
      const models = modelLimitsOf(request.body.models);
      const limits = { ...limitsOf(request.body), ...(models === undefined ? {} : { models }) };
      await plans.setKeyLimits(request.params.id, limits);
      return { object: 'key_limits', key_id: request.params.id, ...limits };
    },
  );

  admin.get('/fleet', async () => ({
    object: 'fleet',
    deployments: router.fleetSnapshot(),
    models: [...gate.modelSchedulers].map(([model, scheduler]) => ({ model, ...scheduler.stats() })),
  }));
}

function modelLimitsOf(models: Record<string, LimitsInput> | undefined): Record<string, Limits> | undefined {
  if (models === undefined) return undefined;
  return Object.fromEntries(Object.entries(models).map(([model, limits]) => [model, limitsOf(limits)]));
}

/** Limits from a body: absent or null fields are unlimited. */
function limitsOf(body: LimitsInput): Limits {
  const limits: Limits = {};
  if (typeof body.rpm === 'number') limits.rpm = body.rpm;
  if (typeof body.tpm === 'number') limits.tpm = body.tpm;
  if (typeof body.tpd === 'number') limits.tpd = body.tpd;
  if (typeof body.concurrency === 'number') limits.concurrency = body.concurrency;
  return limits;
}
