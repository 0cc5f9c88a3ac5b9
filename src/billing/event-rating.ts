/**
 * Rating for the ledger: a request's usage rated into the nano-unit amounts a usage event stores, and its quote rounded
 * up to the nano-unit for the wallet reservation.
 *
 * `rate-usage.ts` is the reference: it rates in exact 1e-27 sub-units with `bigint`. That costs about 10 µs per
 * request and most of it is garbage (every operation on numbers past 64 bits allocates), and it runs on the request
 * path of every billed request. The common request needs far less: its amounts fit a double's exact integer range
 * (2^53) at the scale the discounts it actually got require. So each function here first tries that: the same rules,
 * in the same order, on integers held in `number`s, where every product is checked to stay below 2^53 (past it a
 * product may be rounded, so the fast path gives up) and every division is by a power of ten with an exact
 * remainder (`%` on doubles is exact). When it gives up — amounts too large, a request that crosses a volume step,
 * anything the reference would refuse — the reference rates the request. Both paths give identical results; a
 * property test compares them on random price books and requests.
 *
 * Scales: tokens × price (1e-9 per million tokens) is an amount in 1e-15 of the unit. Each discount applied in
 * sequence multiplies what is left by (10,000 − d) / 10,000, which needs at most 4 more decimals (at most three
 * discounts: 1e-27, the reference's sub-unit, see money.ts); the fraction is reduced first and decimals are added
 * only as the division needs them, so a 50% discount of an everyday amount stays far below 2^53.
 */

import { assertNever } from '../errors/assert-never.js';
import { DISCOUNT_ONE, type Discount, formatDiscount, type Price } from '../pricing/money.js';
import type { PriceTier, PriceVersion } from '../pricing/price-book.js';
import {
  type AppliedModifier,
  discountSteps,
  type QuoteInput,
  quoteWorstCase,
  type RatedUsage,
  type RateUsageInput,
  rateUsage,
  resolvePricing,
  type StepModifier,
  selectTier,
} from '../pricing/rate-usage.js';
import type { Nano } from '../store/ledger-store.js';
import { nanoCeil, nanoHalfEven } from './nano.js';

/** An applied modifier as the usage event's detail records it: its exact effect as a decimal string of 1e-27 units. */
export type ModifierDetail = WithTextAmount<AppliedModifier>;
type WithTextAmount<M> = M extends { amount: unknown } ? Omit<M, 'amount'> & { readonly amount: string } : never;

/** One request, rated, as a usage event stores it: every amount rounded half-even to the nano-unit on its own. */
export interface RatedAmounts {
  readonly currency: RatedUsage['currency'];
  readonly priceVersion: string;
  readonly priceSource: RatedUsage['priceSource'];
  readonly tier: RatedUsage['tier'];
  /** `max_output_tokens` of the output condition that set the output price, or null. */
  readonly outputConditionMax: number | null;
  readonly inputList: Nano;
  readonly cachedList: Nano;
  readonly outputList: Nano;
  /** Effects of the modifiers by kind (≤ 0). */
  readonly batch: Nano;
  readonly offPeak: Nano;
  readonly contract: Nano;
  readonly volume: Nano;
  readonly modifiers: readonly ModifierDetail[];
}

/** Rates a request for its usage event (see the module comment). Throws what `rateUsage` throws. */
export function rateAmounts(input: RateUsageInput): RatedAmounts {
  return rateAmountsFast(input) ?? summarizeRating(rateUsage(input));
}

/** The quote of `quoteWorstCase`, rounded up to the nano-unit. Throws what `quoteWorstCase` throws. */
export function quoteNano(input: QuoteInput): Nano {
  const fast = quoteNanoFast(input);
  return fast === undefined ? nanoCeil(quoteWorstCase(input).amount) : BigInt(fast);
}

/**
 * The usage event's `detail`: exactly the text of `JSON.stringify({ priceSource, tierIndex, beyondLastTier,
 * modifiers })`, written out field by field, which costs a sixth of `JSON.stringify` (about half a µs less a request). Only a
 * window (operator text) goes through `JSON.stringify`; the other strings are our own decimals and names, which
 * need no escaping.
 */
export function ratingDetail(rated: RatedAmounts): string {
  let modifiers = '';
  for (const modifier of rated.modifiers) {
    if (modifiers !== '') modifiers += ',';
    modifiers += modifierJson(modifier);
  }
  return `{"priceSource":"${rated.priceSource}","tierIndex":${rated.tier.index},"beyondLastTier":${rated.tier.beyondLastTier},"modifiers":[${modifiers}]}`;
}

function modifierJson(modifier: ModifierDetail): string {
  switch (modifier.kind) {
    case 'batch':
    case 'contract_discount':
      return `{"kind":"${modifier.kind}","discount":"${modifier.discount}","amount":"${modifier.amount}"}`;
    case 'off_peak':
      return `{"kind":"off_peak","discount":"${modifier.discount}","window":${JSON.stringify(modifier.window)},"amount":"${modifier.amount}"}`;
    case 'volume':
      return `{"kind":"volume","discount":"${modifier.discount}","volumeTier":${modifier.volumeTier},"tokens":${modifier.tokens},"amount":"${modifier.amount}"}`;
    default:
      return assertNever(modifier);
  }
}

/**
 * A step's modifier with its amount, as one object literal per kind: spreading the shared `modifier` into a new
 * object took V8's slow path and cost more than the rest of the rating.
 */
function modifierDetail(modifier: StepModifier, amount: string): ModifierDetail {
  switch (modifier.kind) {
    case 'batch':
      return { kind: 'batch', discount: modifier.discount, amount };
    case 'off_peak':
      return { kind: 'off_peak', discount: modifier.discount, window: modifier.window, amount };
    case 'contract_discount':
      return { kind: 'contract_discount', discount: modifier.discount, amount };
    default:
      return assertNever(modifier);
  }
}

/** The reference's rating reduced to what a usage event stores. */
export function summarizeRating(rated: RatedUsage): RatedAmounts {
  const line = (tokenClass: string) => rated.lines.find((candidate) => candidate.tokenClass === tokenClass)?.amount;
  const modifier = (kind: string) =>
    rated.modifiers.filter((applied) => applied.kind === kind).reduce((sum, applied) => sum + applied.amount, 0n);
  return {
    currency: rated.currency,
    priceVersion: rated.priceVersion.id,
    priceSource: rated.priceSource,
    tier: rated.tier,
    outputConditionMax: rated.outputCondition?.maxOutputTokens ?? null,
    inputList: nanoHalfEven(line('input') ?? 0n),
    cachedList: nanoHalfEven(line('cached_input') ?? 0n),
    outputList: nanoHalfEven(line('output') ?? 0n),
    batch: nanoHalfEven(modifier('batch')),
    offPeak: nanoHalfEven(modifier('off_peak')),
    contract: nanoHalfEven(modifier('contract_discount')),
    volume: nanoHalfEven(modifier('volume')),
    modifiers: rated.modifiers.map((applied) => ({ ...applied, amount: applied.amount.toString() })),
  };
}

const SAFE = Number.MAX_SAFE_INTEGER;
/** Decimals of the first amount: 9 of the price + 6 of "per million tokens". */
const LIST_SCALE = 15;
const NANO_SCALE = 9;
const AMOUNT_SCALE = 27;
const DISCOUNT_WHOLE = Number(DISCOUNT_ONE);

/** A tier's prices as numbers, or null when one is past 2^53 (then the fast path never applies to the tier). */
interface TierNumbers {
  readonly input: number;
  readonly cachedInput: number;
  readonly output: number;
  /** Output prices of the output conditions, in their order. */
  readonly conditions: readonly number[];
  /** The dearer of input and cached input (quotes). */
  readonly worstInput: number;
  /** The dearest output price of the tier and its conditions (quotes). */
  readonly worstOutput: number;
}

const tierNumbersCache = new WeakMap<PriceTier, TierNumbers | null>();

function tierNumbers(tier: PriceTier): TierNumbers | null {
  let numbers = tierNumbersCache.get(tier);
  if (numbers !== undefined) return numbers;
  const prices: Price[] = [tier.input, tier.cachedInput, tier.output, ...tier.outputConditions.map((c) => c.output)];
  if (prices.some((price) => price > BigInt(SAFE))) numbers = null;
  else {
    const conditions = tier.outputConditions.map((condition) => Number(condition.output));
    numbers = {
      input: Number(tier.input),
      cachedInput: Number(tier.cachedInput),
      output: Number(tier.output),
      conditions,
      worstInput: Math.max(Number(tier.input), Number(tier.cachedInput)),
      worstOutput: Math.max(Number(tier.output), ...conditions),
    };
  }
  tierNumbersCache.set(tier, numbers);
  return numbers;
}

/** Powers of ten as literals (exact doubles up to 1e22), not `10 ** n`, whose exactness the language leaves open. */
const POWERS_OF_TEN = [
  1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
  1e22,
];

function powerOfTen(exponent: number): number {
  return POWERS_OF_TEN[exponent]!;
}

/** Ends of a version's volume steps as numbers (`Infinity`: unbounded), or null when one is past 2^53. */
const volumeEndsCache = new WeakMap<PriceVersion, readonly number[] | null>();

function volumeEnds(version: PriceVersion): readonly number[] | null {
  let ends = volumeEndsCache.get(version);
  if (ends !== undefined) return ends;
  const bounded = version.volumeTiers.map((step) => step.upToTokens).filter((end) => end !== null);
  ends = bounded.some((end) => end > BigInt(SAFE))
    ? null
    : version.volumeTiers.map((step) =>
        step.upToTokens === null ? Number.POSITIVE_INFINITY : Number(step.upToTokens),
      );
  volumeEndsCache.set(version, ends);
  return ends;
}

/** `formatDiscount`, remembered: a handful of discounts are formatted once per request. */
const discountTexts = new Map<Discount, string>();

function discountText(discount: Discount): string {
  let text = discountTexts.get(discount);
  if (text === undefined) {
    text = formatDiscount(discount);
    discountTexts.set(discount, text);
  }
  return text;
}

/** `value / 10^exponent`, half to even; `value` a non-negative safe integer. Exact: `%` on doubles is exact. */
function shiftHalfEven(value: number, exponent: number): number {
  const divisor = powerOfTen(exponent);
  const remainder = value % divisor;
  const quotient = (value - remainder) / divisor;
  const twice = remainder * 2;
  return twice > divisor || (twice === divisor && quotient % 2 === 1) ? quotient + 1 : quotient;
}

/** `value / 10^exponent`, rounded up; `value` a non-negative safe integer. */
function shiftCeil(value: number, exponent: number): number {
  const divisor = powerOfTen(exponent);
  const remainder = value % divisor;
  const quotient = (value - remainder) / divisor;
  return remainder > 0 ? quotient + 1 : quotient;
}

/**
 * `value × 10^-scale × part / 10,000`, exactly, as an integer at the smallest scale that holds it (at most 4 decimals
 * more): `part / 10,000` is first reduced (a 50% discount halves, it does not multiply by 5,000), so the numbers stay
 * small. Undefined when a step would pass 2^53.
 */
function timesPart(value: number, scale: number, part: number): { value: number; scale: number } | undefined {
  if (part === 0 || value === 0) return { value: 0, scale };
  const common = greatestCommonDivisor(part, DISCOUNT_WHOLE);
  const numerator = part / common;
  const denominator = DISCOUNT_WHOLE / common; // divides 10^4, so at most 4 more decimals make the division exact
  let scaled = value;
  let newScale = scale;
  while (scaled % denominator !== 0) {
    scaled *= 10;
    newScale += 1;
    if (scaled > SAFE) return undefined;
  }
  const result = (scaled / denominator) * numerator;
  return result <= SAFE ? { value: result, scale: newScale } : undefined;
}

function greatestCommonDivisor(left: number, right: number): number {
  let a = left;
  let b = right;
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** A non-negative safe integer product, or NaN when it may have been rounded. */
function exactProduct(left: number, right: number): number {
  const product = left * right;
  return product <= SAFE ? product : Number.NaN;
}

function isTokenCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** The exact decimal string of a discount's effect `-magnitude × 10^-scale`, in 1e-27 units. */
function effectText(magnitude: number, scale: number): string {
  return magnitude === 0 ? '0' : `-${magnitude}${'0'.repeat(AMOUNT_SCALE - scale)}`;
}

/** Nano-units of an effect `-magnitude × 10^-scale`. */
function effectNano(magnitude: number, scale: number): Nano {
  const nano = shiftHalfEven(magnitude, scale - NANO_SCALE);
  return nano === 0 ? 0n : BigInt(-nano);
}

/** `rateAmounts` on numbers, or undefined when it cannot be done exactly that way (see the module comment). */
export function rateAmountsFast(input: RateUsageInput): RatedAmounts | undefined {
  const { usage } = input;
  const prompt = usage.input.total;
  const cached = usage.input.cached;
  const output = usage.output.total;
  if (!isTokenCount(prompt) || !isTokenCount(cached) || !isTokenCount(output) || cached > prompt) return undefined;
  const monthBefore = Number(input.tenantMonthTokensBefore);
  if (!isTokenCount(monthBefore)) return undefined;
  if (!Number.isFinite(input.receivedAt)) return undefined;
  let resolved: ReturnType<typeof resolvePricing>;
  try {
    resolved = resolvePricing(input.priceBook, input.model, input.tenantId, input.receivedAt);
  } catch {
    return undefined; // The reference throws the right error.
  }
  const { tier, beyondLastTier } = selectTier(resolved.modelPrice, prompt);
  const prices = tierNumbers(tier);
  if (prices === null) return undefined;
  const conditionIndex = tier.outputConditions.findIndex((condition) => output <= condition.maxOutputTokens);
  const outputPrice = conditionIndex === -1 ? prices.output : prices.conditions[conditionIndex]!;
  const cachedAmount = exactProduct(cached, prices.cachedInput);
  const inputAmount = exactProduct(prompt - cached, prices.input);
  const outputAmount = exactProduct(output, outputPrice);
  const list = cachedAmount + inputAmount + outputAmount; // NaN if any product was not exact
  if (!(list <= SAFE)) return undefined;

  const modifiers: ModifierDetail[] = [];
  let batch = 0n;
  let offPeak = 0n;
  let contract = 0n;
  // What is left after the discounts so far, `remaining × 10^-scale`.
  let remaining = list;
  let scale = LIST_SCALE;
  /** Takes `discount` off what is left; returns its effect (magnitude and scale), or undefined past 2^53. */
  const apply = (discount: Discount): { value: number; scale: number } | undefined => {
    const effect = timesPart(remaining, scale, Number(discount));
    const left = timesPart(remaining, scale, DISCOUNT_WHOLE - Number(discount));
    if (effect === undefined || left === undefined) return undefined;
    remaining = left.value;
    scale = left.scale;
    return effect;
  };
  for (const step of discountSteps(resolved, input.batch, input.receivedAt)) {
    const effect = apply(step.discount);
    if (effect === undefined) return undefined;
    modifiers.push(modifierDetail(step.modifier, effectText(effect.value, effect.scale)));
    const nano = effectNano(effect.value, effect.scale);
    if (step.modifier.kind === 'batch') batch = nano;
    else if (step.modifier.kind === 'off_peak') offPeak = nano;
    else contract = nano;
  }

  let volume = 0n;
  const total = prompt + output;
  const steps = resolved.version.volumeTiers;
  if (steps.length > 0 && total > 0) {
    const ends = volumeEnds(resolved.version);
    if (ends === null || monthBefore + total > SAFE) return undefined;
    // The request's tokens are numbered monthBefore + 1 … monthBefore + total; all must fall in one step.
    let stepStart = 0;
    for (const [index, step] of steps.entries()) {
      const stepEnd = ends[index]!;
      if (monthBefore >= stepEnd) {
        stepStart = stepEnd;
        continue;
      }
      if (monthBefore < stepStart || monthBefore + total > stepEnd) return undefined;
      if (step.discount > 0n) {
        const effect = apply(step.discount);
        if (effect === undefined) return undefined;
        modifiers.push({
          kind: 'volume',
          discount: discountText(step.discount),
          volumeTier: step.index,
          tokens: total,
          amount: effectText(effect.value, effect.scale),
        });
        volume = effectNano(effect.value, effect.scale);
      }
      break;
    }
  }

  return {
    currency: input.priceBook.currency,
    priceVersion: resolved.version.id,
    priceSource: resolved.priceSource,
    tier: { index: tier.index, label: tier.label, beyondLastTier },
    outputConditionMax: conditionIndex === -1 ? null : tier.outputConditions[conditionIndex]!.maxOutputTokens,
    inputList: BigInt(shiftHalfEven(inputAmount, LIST_SCALE - NANO_SCALE)),
    cachedList: BigInt(shiftHalfEven(cachedAmount, LIST_SCALE - NANO_SCALE)),
    outputList: BigInt(shiftHalfEven(outputAmount, LIST_SCALE - NANO_SCALE)),
    batch,
    offPeak,
    contract,
    volume,
    modifiers,
  };
}

/** `quoteNano` on numbers, or undefined when it cannot be done exactly that way. */
export function quoteNanoFast(input: QuoteInput): number | undefined {
  const { promptTokens, maxOutputTokens } = input;
  if (!isTokenCount(promptTokens) || !isTokenCount(maxOutputTokens) || !Number.isFinite(input.receivedAt)) {
    return undefined;
  }
  let resolved: ReturnType<typeof resolvePricing>;
  try {
    resolved = resolvePricing(input.priceBook, input.model, input.tenantId, input.receivedAt);
  } catch {
    return undefined;
  }
  const { tier, beyondLastTier } = selectTier(resolved.modelPrice, promptTokens);
  if (beyondLastTier) return undefined; // The reference refuses it with `prompt_too_long`.
  const prices = tierNumbers(tier);
  if (prices === null) return undefined;
  let remaining = exactProduct(promptTokens, prices.worstInput) + exactProduct(maxOutputTokens, prices.worstOutput);
  if (!(remaining <= SAFE)) return undefined;
  let scale = LIST_SCALE;
  for (const step of discountSteps(resolved, input.batch, input.receivedAt)) {
    const left = timesPart(remaining, scale, DISCOUNT_WHOLE - Number(step.discount));
    if (left === undefined) return undefined;
    remaining = left.value;
    scale = left.scale;
  }
  return shiftCeil(remaining, scale - NANO_SCALE);
}
