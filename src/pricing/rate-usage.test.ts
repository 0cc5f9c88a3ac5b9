import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Usage } from '../upstreams/usage.js';
import { type PriceBook, type PriceBookConfig, type PriceVersionConfig, parsePriceBook } from './price-book.js';
import { PricingError, quoteWorstCase, type RateUsageInput, rateUsage } from './rate-usage.js';

/** `digits × 10^-decimals` currency units, in 1e-27 sub-units, written out independently of the code under test. */
const units = (digits: bigint, decimals: number) => digits * 10n ** BigInt(27 - decimals);

function usage(prompt: number, output: number, cached = 0): Usage {
  return { input: { total: prompt, cached }, output: { total: output, reasoning: 0 }, estimated: false };
}

const VERSION_2026: PriceVersionConfig = {
  id: '2026-01',
  effective_from: '2026-01-01T00:00:00Z',
  models: {
    'sim-pro-32k': { input: '0.8', cached_input: '0.16', output: '2' },
    'sim-pro-128k': {
      tiers: [
        {
          max_prompt_tokens: 32_768,
          input: '0.8',
          output: '8',
          output_conditions: [{ max_output_tokens: 200, output: '2' }],
        },
        { max_prompt_tokens: 131_072, input: '1.2', output: '16' },
        { max_prompt_tokens: 262_144, input: '2.4', output: '24' },
      ],
    },
    'no-cache-price': { input: '3', output: '6' },
  },
  modifiers: {
    batch: { discount: '0.5' },
    off_peak: [
      { start: '16:30', end: '00:30', discount: '0.5' },
      { start: '18:00', end: '19:00', discount: '0.75' },
    ],
  },
  contracts: {
    ten_abc: { discount: '0.2' },
    ten_xyz: { models: { 'sim-pro-32k': { input: '0.5', output: '1.5' } } },
    ten_both: { discount: '0.2', models: { 'sim-pro-32k': { input: '0.5', output: '1.5' } } },
  },
};

const BOOK = parsePriceBook({ currency: 'CNY', versions: [VERSION_2026] } satisfies PriceBookConfig);
/** The same prices with small graduated volume steps: 0% up to 1,000 tokens a month, 10% up to 2,000, then 25%. */
const VOLUME_BOOK = parsePriceBook({
  currency: 'CNY',
  versions: [
    {
      ...VERSION_2026,
      volume_tiers: [
        { up_to_tokens: 1000, discount: '0' },
        { up_to_tokens: 2000, discount: '0.1' },
        { discount: '0.25' },
      ],
    },
  ],
} satisfies PriceBookConfig);

/** 2026-03-10 10:00 UTC: a peak hour. */
const PEAK = Date.UTC(2026, 2, 10, 10);

function rate(overrides: Partial<RateUsageInput> & { usage: Usage }) {
  return rateUsage({
    priceBook: BOOK,
    model: 'sim-pro-32k',
    tenantId: 'ten_plain',
    receivedAt: PEAK,
    batch: false,
    tenantMonthTokensBefore: 0,
    ...overrides,
  });
}

function pricingErrorCode(run: () => unknown): string {
  try {
    run();
  } catch (error: unknown) {
    if (error instanceof PricingError) return error.code;
    throw error;
  }
  throw new Error('expected a PricingError');
}

describe('input-length tiers', () => {
  it('puts a prompt of exactly 32,768 tokens in the first tier and 32,769 in the next', () => {
    const atBound = rate({ model: 'sim-pro-128k', usage: usage(32_768, 1000) });
    expect(atBound.tier).toEqual({ index: 0, label: '0-32768', beyondLastTier: false });
    // 32,768 × 0.8 / 1e6 + 1,000 × 8 / 1e6 = 0.0262144 + 0.008
    expect(atBound.amount).toBe(units(342_144n, 7));

    const above = rate({ model: 'sim-pro-128k', usage: usage(32_769, 1000) });
    expect(above.tier).toEqual({ index: 1, label: '32769-131072', beyondLastTier: false });
    // 32,769 × 1.2 / 1e6 + 1,000 × 16 / 1e6 = 0.0393228 + 0.016
    expect(above.amount).toBe(units(553_228n, 7));
    expect(above.lines.map((line) => [line.tokenClass, line.tokens, line.unitPrice])).toEqual([
      ['cached_input', 0, 1_200_000_000n],
      ['input', 32_769, 1_200_000_000n],
      ['output', 1000, 16_000_000_000n],
    ]);
  });

  it('rates a prompt beyond the last tier at the last tier and flags it; the quote refuses it', () => {
    const rated = rate({ model: 'sim-pro-128k', usage: usage(262_145, 0) });
    expect(rated.tier).toEqual({ index: 2, label: '131073-262144', beyondLastTier: true });
    // 262,145 × 2.4 / 1e6 = 0.629148
    expect(rated.amount).toBe(units(629_148n, 6));
    expect(
      pricingErrorCode(() =>
        quoteWorstCase({
          priceBook: BOOK,
          model: 'sim-pro-128k',
          tenantId: 't',
          receivedAt: PEAK,
          promptTokens: 262_145,
          maxOutputTokens: 1,
          batch: false,
        }),
      ),
    ).toBe('prompt_too_long');
  });
});

describe('output conditions', () => {
  it('applies the short-output price up to 200 output tokens inclusive', () => {
    const short = rate({ model: 'sim-pro-128k', usage: usage(1000, 200) });
    expect(short.outputCondition).toEqual({ index: 0, maxOutputTokens: 200 });
    // 1,000 × 0.8 / 1e6 + 200 × 2 / 1e6 = 0.0008 + 0.0004
    expect(short.amount).toBe(units(12n, 4));

    const long = rate({ model: 'sim-pro-128k', usage: usage(1000, 201) });
    expect(long.outputCondition).toBeNull();
    // 0.0008 + 201 × 8 / 1e6 = 0.0008 + 0.001608
    expect(long.amount).toBe(units(2408n, 6));
  });

  it('does not apply a first-tier condition to the second tier', () => {
    const rated = rate({ model: 'sim-pro-128k', usage: usage(40_000, 100) });
    expect(rated.outputCondition).toBeNull();
    // 40,000 × 1.2 / 1e6 + 100 × 16 / 1e6 = 0.048 + 0.0016
    expect(rated.amount).toBe(units(496n, 4));
  });
});

describe('cached input', () => {
  it('charges cached tokens at the cached price, defaulting to the input price', () => {
    // 600 cached × 0.16 + 400 × 0.8 = 96 + 320 = 416 per million → 0.000416
    expect(rate({ usage: usage(1000, 0, 600) }).amount).toBe(units(416n, 6));
    // No cached price: all 1,000 at 3 → 0.003
    expect(rate({ model: 'no-cache-price', usage: usage(1000, 0, 600) }).amount).toBe(units(3n, 3));
  });
});

describe('off-peak windows (UTC, crossing midnight)', () => {
  // 1,000,000 prompt tokens of sim-pro-32k: list 0.8; 50% off-peak gives 0.4.
  const cases: [string, number, bigint][] = [
    ['16:29:59.999', Date.UTC(2026, 2, 10, 16, 29, 59, 999), units(8n, 1)],
    ['16:30:00.000', Date.UTC(2026, 2, 10, 16, 30), units(4n, 1)],
    ['23:59:59.999', Date.UTC(2026, 2, 10, 23, 59, 59, 999), units(4n, 1)],
    ['00:00:00.000', Date.UTC(2026, 2, 11, 0, 0), units(4n, 1)],
    ['00:29:59.000', Date.UTC(2026, 2, 11, 0, 29, 59), units(4n, 1)],
    ['00:29:59.999', Date.UTC(2026, 2, 11, 0, 29, 59, 999), units(4n, 1)],
    ['00:30:00.000', Date.UTC(2026, 2, 11, 0, 30), units(8n, 1)],
    // Inside the overlapping 18:00–19:00 window the larger discount (75%) wins: 0.2.
    ['18:00:00.000', Date.UTC(2026, 2, 10, 18, 0), units(2n, 1)],
    ['19:00:00.000', Date.UTC(2026, 2, 10, 19, 0), units(4n, 1)],
  ];
  for (const [time, receivedAt, expected] of cases) {
    it(`at ${time} the amount is ${expected / 10n ** 26n}/10`, () => {
      expect(rate({ receivedAt, usage: usage(1_000_000, 0) }).amount).toBe(expected);
    });
  }

  it('records the window applied', () => {
    const rated = rate({ receivedAt: Date.UTC(2026, 2, 10, 16, 30), usage: usage(1_000_000, 0) });
    expect(rated.modifiers).toEqual([
      { kind: 'off_peak', discount: '0.5', window: '16:30-00:30', amount: -units(4n, 1) },
    ]);
  });
});

describe('batch', () => {
  it('takes the batch discount off', () => {
    const rated = rate({ batch: true, usage: usage(1_000_000, 500_000) });
    // list 0.8 + 1.0 = 1.8; half off
    expect(rated.listAmount).toBe(units(18n, 1));
    expect(rated.modifiers).toEqual([{ kind: 'batch', discount: '0.5', amount: -units(9n, 1) }]);
    expect(rated.amount).toBe(units(9n, 1));
  });

  it('does not stack with off-peak: the larger discount wins, batch on a tie', () => {
    const tie = rate({ batch: true, receivedAt: Date.UTC(2026, 2, 10, 17), usage: usage(1_000_000, 0) });
    expect(tie.modifiers.map((modifier) => modifier.kind)).toEqual(['batch']);
    expect(tie.amount).toBe(units(4n, 1));
    const larger = rate({ batch: true, receivedAt: Date.UTC(2026, 2, 10, 18, 30), usage: usage(1_000_000, 0) });
    expect(larger.modifiers.map((modifier) => modifier.kind)).toEqual(['off_peak']);
    expect(larger.amount).toBe(units(2n, 1));
  });
});

describe('contracts', () => {
  it('applies a contract discount to list prices', () => {
    const rated = rate({ tenantId: 'ten_abc', usage: usage(1_000_000, 0) });
    expect(rated.priceSource).toBe('list');
    expect(rated.modifiers).toEqual([{ kind: 'contract_discount', discount: '0.2', amount: -units(16n, 2) }]);
    expect(rated.amount).toBe(units(64n, 2));
  });

  it('replaces list prices with contract prices, without the contract discount on top', () => {
    for (const tenantId of ['ten_xyz', 'ten_both']) {
      const rated = rate({ tenantId, usage: usage(1_000_000, 1_000_000, 400_000) });
      expect(rated.priceSource).toBe('contract');
      expect(rated.modifiers).toEqual([]);
      // Contract has no cached price: all 1M input at 0.5, plus 1M output at 1.5.
      expect(rated.amount).toBe(units(2n, 0));
    }
    // ten_both's discount still applies to a model without a contract price: 1M × 3 × 0.8 = 2.4.
    expect(rate({ tenantId: 'ten_both', model: 'no-cache-price', usage: usage(1_000_000, 0) }).amount).toBe(
      units(24n, 1),
    );
  });

  it('applies the time modifier before the contract discount', () => {
    const rated = rate({ tenantId: 'ten_abc', batch: true, usage: usage(1_000_000, 0) });
    // 0.8 → batch −0.4 → 0.4 → contract −0.08 → 0.32
    expect(rated.modifiers).toEqual([
      { kind: 'batch', discount: '0.5', amount: -units(4n, 1) },
      { kind: 'contract_discount', discount: '0.2', amount: -units(8n, 2) },
    ]);
    expect(rated.amount).toBe(units(32n, 2));
  });
});

describe('graduated volume tiers', () => {
  it('splits a request that crosses a step boundary, cached input first, then input, then output', () => {
    // Tokens 901–1150 of the month: cached 901–950, input 951–1050, output 1051–1150; step 0 ends at 1000.
    const rated = rate({ priceBook: VOLUME_BOOK, tenantMonthTokensBefore: 900, usage: usage(150, 100, 50) });
    expect(rated.volume.map((portion) => [portion.volumeTier, portion.firstToken, portion.tokens])).toEqual([
      [0, 901n, { cached_input: 50, input: 50, output: 0 }],
      [1, 1001n, { cached_input: 0, input: 50, output: 100 }],
    ]);
    // Step 0: 50 × 0.16 + 50 × 0.8 = 48 per million; step 1: 50 × 0.8 + 100 × 2 = 240 per million, 10% off = −24.
    expect(rated.volume.map((portion) => portion.amountBefore)).toEqual([units(48n, 6), units(240n, 6)]);
    expect(rated.modifiers).toEqual([
      { kind: 'volume', discount: '0.1', volumeTier: 1, tokens: 150, amount: -units(24n, 6) },
    ]);
    expect(rated.listAmount).toBe(units(288n, 6));
    expect(rated.amount).toBe(units(264n, 6));
  });

  it('crosses two boundaries and stacks after the batch discount', () => {
    // Tokens 999–2001 (1,003 prompt tokens): 2 in step 0, 1,000 in step 1, 1 in step 2.
    const rated = rate({ priceBook: VOLUME_BOOK, tenantMonthTokensBefore: 998, batch: true, usage: usage(1003, 0) });
    expect(rated.volume.map((portion) => portion.tokens.input)).toEqual([2, 1000, 1]);
    // List 1,003 × 0.8 = 802.4 per million; batch halves it to 401.2.
    // Volume: step 1 1,000 × 0.4 = 400 → −40; step 2 1 × 0.4 = 0.4 → −0.1.  Final 401.2 − 40.1 = 361.1 per million.
    expect(rated.modifiers).toEqual([
      { kind: 'batch', discount: '0.5', amount: -units(4012n, 7) },
      { kind: 'volume', discount: '0.1', volumeTier: 1, tokens: 1000, amount: -units(40n, 6) },
      { kind: 'volume', discount: '0.25', volumeTier: 2, tokens: 1, amount: -units(1n, 7) },
    ]);
    expect(rated.amount).toBe(units(3611n, 7));
  });

  it('treats the step bound as inclusive', () => {
    expect(
      rate({ priceBook: VOLUME_BOOK, tenantMonthTokensBefore: 999, usage: usage(1, 0) }).volume[0]?.volumeTier,
    ).toBe(0);
    expect(
      rate({ priceBook: VOLUME_BOOK, tenantMonthTokensBefore: 1000, usage: usage(1, 0) }).volume[0]?.volumeTier,
    ).toBe(1);
    expect(
      rate({ priceBook: VOLUME_BOOK, tenantMonthTokensBefore: 10n ** 12n, usage: usage(1, 0) }).volume[0]?.volumeTier,
    ).toBe(2);
  });
});

describe('price versions', () => {
  const summer: PriceVersionConfig = {
    id: '2026-06',
    effective_from: '2026-06-01T00:00:00Z',
    models: { 'sim-pro-32k': { input: '0.5', output: '1' } },
  };
  const repriced = parsePriceBook({ currency: 'CNY', versions: [VERSION_2026, summer] } satisfies PriceBookConfig);
  const lastMay = Date.UTC(2026, 4, 31, 23, 59, 59, 999);

  it('rates at the version in force when the request was received', () => {
    const before = rate({ priceBook: repriced, receivedAt: lastMay, usage: usage(1_000_000, 0) });
    expect(before.priceVersion).toEqual({ id: '2026-01', effectiveFrom: '2026-01-01T00:00:00Z' });
    // 23:59:59.999 is inside the January version's off-peak window: 0.8 × 50%.
    expect(before.amount).toBe(units(4n, 1));
    const after = rate({ priceBook: repriced, receivedAt: Date.UTC(2026, 5, 1), usage: usage(1_000_000, 0) });
    expect(after.priceVersion.id).toBe('2026-06');
    expect(after.amount).toBe(units(5n, 1));
  });

  it('never changes an earlier request when a version is added', () => {
    const original = rate({ receivedAt: lastMay, usage: usage(12_345, 678, 90) });
    expect(rate({ priceBook: repriced, receivedAt: lastMay, usage: usage(12_345, 678, 90) })).toEqual(original);
  });

  it('refuses an instant before the first version and an unpriced model', () => {
    expect(pricingErrorCode(() => rate({ receivedAt: Date.UTC(2025, 11, 31), usage: usage(1, 1) }))).toBe(
      'no_price_version',
    );
    expect(pricingErrorCode(() => rate({ model: 'nope', usage: usage(1, 1) }))).toBe('model_not_priced');
    // The summer version dropped sim-pro-128k.
    expect(
      pricingErrorCode(() =>
        rate({ priceBook: repriced, model: 'sim-pro-128k', receivedAt: Date.UTC(2026, 6, 1), usage: usage(1, 1) }),
      ),
    ).toBe('model_not_priced');
  });
});

describe('invalid usage', () => {
  it('refuses counts that cannot be tokens', () => {
    expect(pricingErrorCode(() => rate({ usage: usage(10, 1, 11) }))).toBe('invalid_usage');
    expect(pricingErrorCode(() => rate({ usage: usage(-1, 1) }))).toBe('invalid_usage');
    expect(pricingErrorCode(() => rate({ usage: usage(1.5, 1) }))).toBe('invalid_usage');
    expect(pricingErrorCode(() => rate({ usage: usage(1, 1), tenantMonthTokensBefore: -1 }))).toBe('invalid_usage');
    expect(pricingErrorCode(() => rate({ usage: usage(1, 1), tenantMonthTokensBefore: 0.5 }))).toBe('invalid_usage');
  });
});

describe('quoteWorstCase', () => {
  it('prices the prompt at the tier input price and max output at the dearest output price', () => {
    const quote = quoteWorstCase({
      priceBook: BOOK,
      model: 'sim-pro-128k',
      tenantId: 't',
      receivedAt: PEAK,
      promptTokens: 32_768,
      maxOutputTokens: 100,
      batch: false,
    });
    expect(quote.tier.index).toBe(0);
    expect(quote.outputPrice).toBe(8_000_000_000n);
    // (32,768 × 0.8 + 100 × 8) / 1e6 = (26,214.4 + 800) / 1e6 = 0.0270144
    expect(quote.amount).toBe(units(270_144n, 7));
  });

  it('applies the certain modifiers (batch, contract) but not the volume discount', () => {
    const quote = quoteWorstCase({
      priceBook: VOLUME_BOOK,
      model: 'sim-pro-32k',
      tenantId: 'ten_abc',
      receivedAt: PEAK,
      promptTokens: 1_000_000,
      maxOutputTokens: 0,
      batch: true,
    });
    expect(quote.modifiers.map((modifier) => modifier.kind)).toEqual(['batch', 'contract_discount']);
    expect(quote.amount).toBe(units(32n, 2));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------------

/** A price with up to 9 decimals, written out by hand. */
const priceText = fc
  .bigInt({ min: 0n, max: 100n * 10n ** 9n })
  .map((nano) => `${nano / 10n ** 9n}.${(nano % 10n ** 9n).toString().padStart(9, '0')}`);
/** A discount with up to 4 decimals, written out by hand. */
const discountText = fc
  .integer({ min: 0, max: 10_000 })
  .map((bp) => `${Math.floor(bp / 10_000)}.${(bp % 10_000).toString().padStart(4, '0')}`);
const optionalDiscount = fc.option(discountText, { nil: undefined });
const dayInstant = fc.integer({ min: Date.UTC(2026, 2, 10), max: Date.UTC(2026, 2, 11) - 1 });

const modifiersArbitrary = fc.record({
  batch: optionalDiscount,
  offPeak: optionalDiscount,
  contract: optionalDiscount,
});

function propertyBook(
  models: PriceVersionConfig['models'],
  modifiers: { batch?: string | undefined; offPeak?: string | undefined; contract?: string | undefined },
  volumeTiers: PriceVersionConfig['volume_tiers'],
): PriceBook {
  return parsePriceBook({
    currency: 'USD',
    versions: [
      {
        effective_from: '2026-01-01T00:00:00Z',
        models,
        modifiers: {
          ...(modifiers.batch === undefined ? {} : { batch: { discount: modifiers.batch } }),
          off_peak:
            modifiers.offPeak === undefined ? [] : [{ start: '16:30', end: '00:30', discount: modifiers.offPeak }],
        },
        ...(volumeTiers === undefined ? {} : { volume_tiers: volumeTiers }),
        contracts: modifiers.contract === undefined ? {} : { ten_c: { discount: modifiers.contract } },
      },
    ],
  } satisfies PriceBookConfig);
}

const requestArbitrary = fc
  .record({
    prompt: fc.integer({ min: 0, max: 50_000 }),
    output: fc.integer({ min: 0, max: 20_000 }),
    cachedShare: fc.double({ min: 0, max: 1, noNaN: true }),
  })
  .map(({ prompt, output, cachedShare }) => usage(prompt, output, Math.floor(prompt * cachedShare)));

describe('properties', () => {
  it('(a) rating is additive: N requests cost exactly what their summed usage costs, to the sub-unit', () => {
    fc.assert(
      fc.property(
        fc.record({ input: priceText, cached_input: priceText, output: priceText }),
        modifiersArbitrary,
        discountText,
        fc.array(requestArbitrary, { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        dayInstant,
        fc.constantFrom('ten_c', 'ten_other'),
        fc.bigInt({ min: 0n, max: 10n ** 15n }),
        (prices, modifiers, volumeDiscount, requests, batch, receivedAt, tenantId, monthStart) => {
          // One flat tier, no output condition and one volume step: no boundary anywhere.
          const book = propertyBook({ m: prices }, modifiers, [{ discount: volumeDiscount }]);
          const common = { priceBook: book, model: 'm', tenantId, receivedAt, batch };
          let monthTokens = monthStart;
          let sum = 0n;
          let listSum = 0n;
          for (const request of requests) {
            const rated = rateUsage({ ...common, usage: request, tenantMonthTokensBefore: monthTokens });
            monthTokens += BigInt(request.input.total + request.output.total);
            sum += rated.amount;
            listSum += rated.listAmount;
          }
          const total = usage(
            requests.reduce((n, request) => n + request.input.total, 0),
            requests.reduce((n, request) => n + request.output.total, 0),
            requests.reduce((n, request) => n + request.input.cached, 0),
          );
          const whole = rateUsage({ ...common, usage: total, tenantMonthTokensBefore: monthStart });
          expect(whole.listAmount - listSum).toBe(0n);
          expect(whole.amount - sum).toBe(0n);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('(b) the worst-case quote covers the rated amount for any output up to the maximum; (c) nothing is negative', () => {
    const tierArbitrary = fc.record({
      input: priceText,
      cached_input: priceText,
      output: priceText,
      conditions: fc.array(fc.record({ max: fc.integer({ min: 1, max: 5000 }), output: priceText }), { maxLength: 3 }),
    });
    fc.assert(
      fc.property(
        fc.array(tierArbitrary, { minLength: 1, maxLength: 3 }),
        fc.integer({ min: 1, max: 40_000 }),
        modifiersArbitrary,
        fc.option(
          fc.array(fc.tuple(fc.integer({ min: 1, max: 100_000 }), discountText), { minLength: 1, maxLength: 3 }),
          { nil: undefined },
        ),
        fc.record({
          promptShare: fc.double({ min: 0, max: 1, noNaN: true }),
          cachedShare: fc.double({ min: 0, max: 1, noNaN: true }),
          maxOutput: fc.integer({ min: 0, max: 10_000 }),
          outputShare: fc.double({ min: 0, max: 1, noNaN: true }),
          monthTokens: fc.integer({ min: 0, max: 300_000 }),
        }),
        fc.boolean(),
        dayInstant,
        fc.constantFrom('ten_c', 'ten_other'),
        (tiers, tierWidth, modifiers, steps, request, batch, receivedAt, tenantId) => {
          const model = {
            tiers: tiers.map((tier, index) => {
              const conditions = [...new Set(tier.conditions.map((condition) => condition.max))].sort((a, b) => a - b);
              return {
                max_prompt_tokens: tierWidth * (index + 1),
                input: tier.input,
                cached_input: tier.cached_input,
                output: tier.output,
                output_conditions: conditions.map((max, at) => ({
                  max_output_tokens: max,
                  output: tier.conditions[at]?.output ?? '0',
                })),
              };
            }),
          };
          let bound = 0;
          const volumeTiers = steps?.map(([width, discount], index) => {
            bound += width;
            return index === steps.length - 1 ? { discount } : { up_to_tokens: bound, discount };
          });
          const book = propertyBook({ m: model }, modifiers, volumeTiers);
          const promptTokens = Math.floor(tierWidth * tiers.length * request.promptShare);
          const outputTokens = Math.floor(request.maxOutput * request.outputShare);
          const common = { priceBook: book, model: 'm', tenantId, receivedAt, batch };
          const quote = quoteWorstCase({ ...common, promptTokens, maxOutputTokens: request.maxOutput });
          const rated = rateUsage({
            ...common,
            usage: usage(promptTokens, outputTokens, Math.floor(promptTokens * request.cachedShare)),
            tenantMonthTokensBefore: request.monthTokens,
          });
          expect(quote.amount >= rated.amount).toBe(true);
          expect(rated.amount >= 0n).toBe(true);
          expect(quote.amount >= 0n).toBe(true);
          for (const line of rated.lines) expect(line.amount >= 0n).toBe(true);
          for (const portion of rated.volume) expect(portion.amountBefore + portion.amount >= 0n).toBe(true);
          // The record explains the amount: list + modifier effects, and the volume split covers every token once.
          const effects = rated.modifiers.reduce((sum, modifier) => sum + modifier.amount, 0n);
          expect(rated.listAmount + effects).toBe(rated.amount);
          if (rated.volume.length > 0) {
            const splitTokens = rated.volume.reduce(
              (n, portion) => n + portion.tokens.cached_input + portion.tokens.input + portion.tokens.output,
              0,
            );
            expect(splitTokens).toBe(promptTokens + outputTokens);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
