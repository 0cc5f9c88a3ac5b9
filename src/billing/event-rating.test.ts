import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type PriceBook, type PriceVersionConfig, parsePriceBook } from '../pricing/price-book.js';
import { type QuoteInput, quoteWorstCase, type RateUsageInput, rateUsage } from '../pricing/rate-usage.js';
import {
  quoteNano,
  quoteNanoFast,
  type RatedAmounts,
  rateAmounts,
  rateAmountsFast,
  ratingDetail,
  summarizeRating,
} from './event-rating.js';
import { nanoCeil } from './nano.js';

const MODEL = 'm';
const EFFECTIVE_FROM = Date.parse('2026-01-01T00:00:00Z');

/** A price book of one version (id `v`, in force from `EFFECTIVE_FROM`) with `fields`. */
function oneVersion(fields: Omit<PriceVersionConfig, 'id' | 'effective_from'>): PriceBook {
  return parsePriceBook({
    currency: 'CNY',
    versions: [{ id: 'v', effective_from: '2026-01-01T00:00:00Z', ...fields }],
  });
}

/** A request of `MODEL` just after `EFFECTIVE_FROM`, uncached, with the given tokens. */
function requestOf(
  priceBook: PriceBook,
  request: { tenantId: string; prompt: number; output: number; batch: boolean; tenantMonthTokensBefore: number },
): RateUsageInput {
  return {
    priceBook,
    model: MODEL,
    tenantId: request.tenantId,
    receivedAt: EFFECTIVE_FROM + 1,
    usage: {
      input: { total: request.prompt, cached: 0 },
      output: { total: request.output, reasoning: 0 },
      estimated: false,
    },
    batch: request.batch,
    tenantMonthTokensBefore: request.tenantMonthTokensBefore,
  };
}

/** A decimal string with up to `decimals` places; mostly everyday prices, sometimes ones past 2^53 nano-units. */
const decimal = (decimals: number, maxWhole: number) =>
  fc
    .tuple(fc.integer({ min: 0, max: maxWhole }), fc.integer({ min: 0, max: decimals }), fc.nat())
    .map(([whole, places, digits]) =>
      places === 0 ? String(whole) : `${whole}.${String(digits % 10 ** places).padStart(places, '0')}`,
    );
const price = fc.oneof({ weight: 9, arbitrary: decimal(9, 40) }, { weight: 1, arbitrary: decimal(9, 20_000_000) });
const discount = fc.oneof(
  fc.constant('0'),
  fc.constant('1'),
  decimal(4, 0),
  fc.integer({ min: 1, max: 9 }).map((tenths) => `0.${tenths}`),
);
const clock = fc
  .tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 }))
  .map(([hour, minute]) => `${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')}`);

const tiers = fc
  .record({
    bounds: fc.uniqueArray(fc.integer({ min: 1, max: 300_000 }), { minLength: 0, maxLength: 2 }),
    unbounded: fc.boolean(),
    prices: fc.array(
      fc.record({
        input: price,
        cached_input: fc.option(price, { nil: undefined }),
        output: price,
        conditions: fc.uniqueArray(fc.integer({ min: 1, max: 5_000 }), { maxLength: 2 }),
        conditionPrices: fc.array(price, { minLength: 2, maxLength: 2 }),
      }),
      { minLength: 3, maxLength: 3 },
    ),
  })
  .map(({ bounds, unbounded, prices }) => {
    const limits: (number | undefined)[] = [...bounds].sort((a, b) => a - b);
    if (unbounded || limits.length === 0) limits.push(undefined);
    return limits.map((limit, index) => {
      const tier = prices[index]!;
      return {
        ...(limit === undefined ? {} : { max_prompt_tokens: limit }),
        input: tier.input,
        ...(tier.cached_input === undefined ? {} : { cached_input: tier.cached_input }),
        output: tier.output,
        output_conditions: [...tier.conditions]
          .sort((a, b) => a - b)
          .map((max, at) => ({ max_output_tokens: max, output: tier.conditionPrices[at]! })),
      };
    });
  });

const version = fc
  .record({
    tiers,
    contractTiers: tiers,
    batch: fc.option(discount, { nil: undefined }),
    offPeak: fc.array(fc.record({ start: clock, end: clock, discount }), { maxLength: 2 }),
    volume: fc.option(
      fc.record({
        ends: fc.uniqueArray(fc.integer({ min: 1, max: 2_000_000 }), { minLength: 1, maxLength: 3 }),
        discounts: fc.array(discount, { minLength: 4, maxLength: 4 }),
      }),
      { nil: undefined },
    ),
    contractDiscount: fc.option(discount, { nil: undefined }),
    contractPrice: fc.boolean(),
  })
  .map(
    (drawn): PriceVersionConfig => ({
      id: 'v',
      effective_from: new Date(EFFECTIVE_FROM).toISOString(),
      models: { [MODEL]: { tiers: drawn.tiers } },
      modifiers: {
        ...(drawn.batch === undefined ? {} : { batch: { discount: drawn.batch } }),
        off_peak: drawn.offPeak.filter((window) => window.start !== window.end),
      },
      ...(drawn.volume === undefined
        ? {}
        : {
            volume_tiers: [
              ...[...drawn.volume.ends]
                .sort((a, b) => a - b)
                .map((end, index) => ({ up_to_tokens: end, discount: drawn.volume!.discounts[index]! })),
              { discount: drawn.volume.discounts[3]! },
            ],
          }),
      contracts: {
        contracted: {
          ...(drawn.contractDiscount === undefined ? {} : { discount: drawn.contractDiscount }),
          ...(drawn.contractPrice ? { models: { [MODEL]: { tiers: drawn.contractTiers } } } : {}),
        },
      },
    }),
  );

const request = fc.record({
  tenantId: fc.constantFrom('contracted', 'listed'),
  receivedAt: fc.integer({ min: EFFECTIVE_FROM, max: EFFECTIVE_FROM + 3 * 86_400_000 }),
  batch: fc.boolean(),
  prompt: fc.oneof({ weight: 9, arbitrary: fc.nat(300_000) }, { weight: 1, arbitrary: fc.nat(2_000_000_000) }),
  cachedShare: fc.double({ min: 0, max: 1, noNaN: true }),
  output: fc.oneof({ weight: 9, arbitrary: fc.nat(20_000) }, { weight: 1, arbitrary: fc.nat(2_000_000_000) }),
  monthBefore: fc.oneof(
    { weight: 8, arbitrary: fc.nat(3_000_000) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 20n }) },
  ),
});

/** The detail as the usage event stored it before `ratingDetail`: `JSON.stringify` of these fields. */
function stringifiedDetail(rated: RatedAmounts): string {
  return JSON.stringify({
    priceSource: rated.priceSource,
    tierIndex: rated.tier.index,
    beyondLastTier: rated.tier.beyondLastTier,
    modifiers: rated.modifiers,
  });
}

/** The outcome of a call: its value, or the code of the error it threw. */
function outcome<T>(call: () => T): { value: T } | { error: string } {
  try {
    return { value: call() };
  } catch (error: unknown) {
    return { error: (error as { code?: string }).code ?? String(error) };
  }
}

describe('ledger rating: the fast path agrees with the exact reference', () => {
  it('rates random price books and requests to the same event amounts, or leaves them to the reference', () => {
    let fast = 0;
    let fallback = 0;
    fc.assert(
      fc.property(version, request, (config, drawn) => {
        const priceBook: PriceBook = parsePriceBook({ currency: 'CNY', versions: [config] });
        const cached = Math.floor(drawn.prompt * drawn.cachedShare);
        const input: RateUsageInput = {
          priceBook,
          model: MODEL,
          tenantId: drawn.tenantId,
          receivedAt: drawn.receivedAt,
          usage: {
            input: { total: drawn.prompt, cached },
            output: { total: drawn.output, reasoning: 0 },
            estimated: false,
          },
          batch: drawn.batch,
          tenantMonthTokensBefore: drawn.monthBefore,
        };
        const reference = outcome(() => summarizeRating(rateUsage(input)));
        const quick = rateAmountsFast(input);
        if (quick === undefined) fallback += 1;
        else {
          fast += 1;
          expect(reference).toEqual({ value: quick });
          expect(ratingDetail(quick)).toBe(stringifiedDetail(quick));
        }
        if ('value' in reference) expect(ratingDetail(reference.value)).toBe(stringifiedDetail(reference.value));
        expect(outcome(() => rateAmounts(input))).toEqual(reference);

        const quoteInput: QuoteInput = {
          priceBook,
          model: MODEL,
          tenantId: drawn.tenantId,
          receivedAt: drawn.receivedAt,
          promptTokens: drawn.prompt,
          maxOutputTokens: drawn.output,
          batch: drawn.batch,
        };
        const quoted = outcome(() => nanoCeil(quoteWorstCase(quoteInput).amount));
        const quickQuote = quoteNanoFast(quoteInput);
        if (quickQuote !== undefined) expect(quoted).toEqual({ value: BigInt(quickQuote) });
        expect(outcome(() => quoteNano(quoteInput))).toEqual(quoted);
      }),
      { numRuns: 3000 },
    );
    // Both paths must have been exercised, or the comparison above proved nothing.
    expect(fast).toBeGreaterThan(900);
    expect(fallback).toBeGreaterThan(50);
  });

  it('rates everyday requests on the fast path, with all three discounts stacked', () => {
    const priceBook = oneVersion({
      models: {
        [MODEL]: {
          tiers: [
            { max_prompt_tokens: 32_768, input: '0.8', output: '8' },
            { max_prompt_tokens: 131_072, input: '1.2', output: '16' },
            { max_prompt_tokens: 262_144, input: '2.4', output: '24' },
          ],
        },
      },
      modifiers: { batch: { discount: '0.5' } },
      volume_tiers: [{ up_to_tokens: 1_000_000, discount: '0' }, { discount: '0.15' }],
      contracts: { contracted: { discount: '0.2' } },
    });
    for (const prompt of [1, 900, 32_769, 262_144]) {
      const input = requestOf(priceBook, {
        tenantId: 'contracted',
        prompt,
        output: 8_000,
        batch: true,
        tenantMonthTokensBefore: 5_000_000,
      });
      const quick = rateAmountsFast(input);
      expect(quick?.modifiers.map((modifier) => modifier.kind)).toEqual(['batch', 'contract_discount', 'volume']);
      expect(quick).toEqual(summarizeRating(rateUsage(input)));
      const quote: QuoteInput = { ...input, promptTokens: prompt, maxOutputTokens: 8_000 };
      expect(quoteNanoFast(quote)).toBe(Number(nanoCeil(quoteWorstCase(quote).amount)));
    }
  });

  it('writes the detail of every kind of modifier as JSON.stringify does, on both paths', () => {
    const priceBook = oneVersion({
      models: {
        [MODEL]: {
          tiers: [
            { max_prompt_tokens: 100, input: '0.8', output: '2' },
            { input: '1', output: '3' },
          ],
        },
      },
      modifiers: { off_peak: [{ start: '00:00', end: '12:00', discount: '0.25' }] },
      volume_tiers: [{ up_to_tokens: 1000, discount: '0.05' }, { discount: '0.1' }],
      contracts: { contracted: { discount: '0.2' } },
    });
    const input = (monthBefore: number) =>
      requestOf(priceBook, {
        tenantId: 'contracted',
        prompt: 150,
        output: 7,
        batch: true,
        tenantMonthTokensBefore: monthBefore,
      });
    const quick = rateAmountsFast(input(0));
    expect(quick?.modifiers.map((modifier) => modifier.kind)).toEqual(['off_peak', 'contract_discount', 'volume']);
    expect(ratingDetail(quick!)).toBe(stringifiedDetail(quick!));
    // Across a volume step: the reference rates it, with one volume modifier per step.
    const split = rateAmounts(input(900));
    expect(split.modifiers.filter((modifier) => modifier.kind === 'volume')).toHaveLength(2);
    expect(ratingDetail(split)).toBe(stringifiedDetail(split));
    expect(JSON.parse(ratingDetail(split))).toMatchObject({ priceSource: 'list', tierIndex: 1, beyondLastTier: false });
  });

  it('gives up on a request that crosses a volume step (the reference splits it there)', () => {
    const priceBook = oneVersion({
      models: { [MODEL]: { input: '1', output: '2' } },
      volume_tiers: [{ up_to_tokens: 1000, discount: '0' }, { discount: '0.1' }],
    });
    const input = (monthBefore: number) =>
      requestOf(priceBook, {
        tenantId: 't',
        prompt: 10,
        output: 10,
        batch: false,
        tenantMonthTokensBefore: monthBefore,
      });
    expect(rateAmountsFast(input(990))).toBeUndefined();
    expect(rateAmountsFast(input(980))?.volume).toBe(0n);
    // 10% of (10 × 1 + 10 × 2) per million = 10% of 30,000 nano
    expect(rateAmountsFast(input(1000))?.volume).toBe(-3_000n);
    // The reference: only the 10 output tokens (20,000 nano) fall in the 10% step
    expect(rateAmounts(input(990)).volume).toBe(-2_000n);
  });
});
