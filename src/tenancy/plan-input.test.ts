import { describe, expect, it } from 'vitest';
import type { Plan } from '../admission/limits.js';
import { InvalidRequestError } from '../errors/gateway-error.js';
import { keyLimitsFromInput, planFromInput } from './plan-input.js';

const defaults: Plan = { limits: { rpm: 60 }, tiers: ['default', 'flex'], weight: 1 };

function refusal(input: unknown) {
  try {
    planFromInput(input, defaults);
  } catch (error: unknown) {
    expect(error).toBeInstanceOf(InvalidRequestError);
    const { code, param, message } = error as InvalidRequestError;
    return { code, param, message };
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe('planFromInput', () => {
  it('builds the plan, absent tiers and weight from the defaults, absent or null limits unlimited', () => {
    expect(planFromInput({ rpm: 5, tpm: null, weight: 0.5 }, defaults)).toEqual({
      limits: { rpm: 5 },
      tiers: ['default', 'flex'],
      weight: 0.5,
    });
    expect(planFromInput({ tiers: ['priority'], models: { m: { concurrency: 2 } } }, defaults)).toEqual({
      limits: {},
      tiers: ['priority'],
      weight: 1,
      models: { m: { concurrency: 2 } },
    });
  });

  it('refuses a plan no request could be served under, naming the field', () => {
    for (const weight of [0, -3, 1001, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(refusal({ weight }), String(weight)).toMatchObject({ param: 'weight' });
    }
    expect(refusal({ weight: 0 })).toEqual({
      code: 'invalid_value',
      param: 'weight',
      message: "Invalid value for 'weight': expected a number > 0 and ≤ 1000.",
    });
    expect(refusal({ weight: 'abc' })).toMatchObject({ code: 'invalid_type', param: 'weight' });
    for (const field of ['rpm', 'tpm', 'tpd', 'concurrency']) {
      expect(refusal({ [field]: 0 })).toMatchObject({ code: 'invalid_value', param: field });
      expect(refusal({ [field]: 1.5 })).toMatchObject({ code: 'invalid_value', param: field });
      expect(refusal({ [field]: '5' })).toMatchObject({ code: 'invalid_type', param: field });
    }
    expect(refusal({ tiers: [] })).toMatchObject({ code: 'invalid_value', param: 'tiers' });
    expect(refusal({ tiers: ['gold'] })).toMatchObject({ code: 'invalid_value', param: 'tiers[0]' });
    expect(refusal({ models: { m: { rpm: 0 } } })).toMatchObject({ param: 'models.m.rpm' });
    expect(refusal({ weigth: 2 })).toMatchObject({ code: 'unknown_parameter', param: 'weigth' });
    expect(refusal(null)).toMatchObject({ code: 'invalid_type', param: null });
    expect(refusal([])).toMatchObject({ code: 'invalid_type', param: null });
  });
});

describe('keyLimitsFromInput', () => {
  it('takes limits and per-model limits, and refuses what a plan refuses', () => {
    expect(keyLimitsFromInput({ rpm: 1, models: { m: { tpm: 10 } } })).toEqual({ rpm: 1, models: { m: { tpm: 10 } } });
    expect(() => keyLimitsFromInput({ rpm: 0 })).toThrow(InvalidRequestError);
    expect(() => keyLimitsFromInput({ weight: 1 })).toThrow("Unrecognized request argument supplied: 'weight'.");
  });
});
