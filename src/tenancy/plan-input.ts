/**
 * Plans and key limits as an operator writes them (the admin API's `PUT /tenants/{id}/plan` and
 * `PUT /keys/{id}/limits` bodies, and `tollgate plans set` on the store): one schema, checked the same way on every
 * path, so a plan no request could be served under (weight 0, rpm 0) is refused before it is stored.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler, ValueErrorType } from '@sinclair/typebox/compiler';
import type { Limits, Plan } from '../admission/limits.js';
import { InvalidRequestError } from '../errors/gateway-error.js';
import { paramOfPointer } from '../errors/param-path.js';
import type { KeyLimits } from './plan-service.js';

/** Largest fair-share weight. */
export const MAX_PLAN_WEIGHT = 1000;

const Count = Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
  description: 'a whole number ≥ 1, or null for no limit',
});
const limitsFields = {
  rpm: Type.Optional(Count),
  tpm: Type.Optional(Count),
  tpd: Type.Optional(Count),
  concurrency: Type.Optional(Count),
};
const ServiceClassInput = Type.Union(
  [Type.Literal('priority'), Type.Literal('default'), Type.Literal('flex'), Type.Literal('batch')],
  { description: 'one of priority, default, flex, batch' },
);
/** Per-model overrides, by public model name. */
const ModelLimitsInput = Type.Optional(
  Type.Record(
    Type.String({ minLength: 1, maxLength: 128 }),
    Type.Object(limitsFields, { additionalProperties: false }),
    {
      description: 'an object of limits by model name',
    },
  ),
);

/** A plan as an operator sends it. Absent limits are unlimited; absent tiers and weight are the default plan's. */
export const PlanInputSchema = Type.Object(
  {
    ...limitsFields,
    models: ModelLimitsInput,
    tiers: Type.Optional(
      Type.Array(ServiceClassInput, { minItems: 1, description: 'a non-empty list of service tiers' }),
    ),
    weight: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: MAX_PLAN_WEIGHT,
        description: `a number > 0 and ≤ ${MAX_PLAN_WEIGHT}`,
      }),
    ),
  },
  { additionalProperties: false },
);

/** A key's limit overrides as an operator sends them. */
export const KeyLimitsInputSchema = Type.Object(
  { ...limitsFields, models: ModelLimitsInput },
  { additionalProperties: false },
);

/** A plan as an operator sends it. */
export type PlanInput = Static<typeof PlanInputSchema>;
/** A key's limit overrides as an operator sends them. */
export type KeyLimitsInput = Static<typeof KeyLimitsInputSchema>;

const checkPlanInput = TypeCompiler.Compile(PlanInputSchema);
const checkKeyLimitsInput = TypeCompiler.Compile(KeyLimitsInputSchema);

/** The plan `input` describes, on top of `defaults`; throws `InvalidRequestError` naming the first bad field. */
export function planFromInput(input: unknown, defaults: Plan): Plan {
  const checked = validated(checkPlanInput, input);
  const models = modelLimitsOf(checked.models);
  return {
    limits: limitsOf(checked),
    tiers: checked.tiers ?? defaults.tiers,
    weight: checked.weight ?? defaults.weight,
    ...(models === undefined ? {} : { models }),
  };
}

/** The key limits `input` describes; throws `InvalidRequestError` naming the first bad field. */
export function keyLimitsFromInput(input: unknown): KeyLimits {
  const checked = validated(checkKeyLimitsInput, input);
  const models = modelLimitsOf(checked.models);
  return { ...limitsOf(checked), ...(models === undefined ? {} : { models }) };
}

function validated<T extends TSchema>(check: TypeCheck<T>, input: unknown): Static<T> {
  if (check.Check(input)) return input;
  const error = check.Errors(input).First();
  const param = error === undefined ? '' : paramOfPointer(error.path);
  if (error === undefined || param === '') {
    throw new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_type' });
  }
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    throw new InvalidRequestError(`Unrecognized request argument supplied: '${param}'.`, {
      param,
      code: 'unknown_parameter',
    });
  }
  const expected = typeof error.schema.description === 'string' ? error.schema.description : error.message;
  throw new InvalidRequestError(`Invalid value for '${param}': expected ${expected}.`, {
    param,
    code: hasAcceptedType(error.schema, error.value) ? 'invalid_value' : 'invalid_type',
  });
}

/** Whether `value` is of a JSON type the schema takes (so the value, not its type, is wrong). */
function hasAcceptedType(schema: TSchema, value: unknown): boolean {
  const members: TSchema[] = Array.isArray(schema.anyOf) ? schema.anyOf : [schema];
  const valueType = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return members.some((member) => {
    const type = member.type === 'integer' ? 'number' : member.type;
    return type === valueType;
  });
}

type LimitsInput = Static<typeof KeyLimitsInputSchema>;

function modelLimitsOf(models: LimitsInput['models']): Record<string, Limits> | undefined {
  if (models === undefined) return undefined;
  return Object.fromEntries(Object.entries(models).map(([model, limits]) => [model, limitsOf(limits)]));
}

/** Limits from a body: absent or null fields are unlimited. */
function limitsOf(body: Omit<LimitsInput, 'models'>): Limits {
  const limits: Limits = {};
  if (typeof body.rpm === 'number') limits.rpm = body.rpm;
  if (typeof body.tpm === 'number') limits.tpm = body.tpm;
  if (typeof body.tpd === 'number') limits.tpd = body.tpd;
  if (typeof body.concurrency === 'number') limits.concurrency = body.concurrency;
  return limits;
}
