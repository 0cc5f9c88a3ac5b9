/**
 * Rating: turns one request's token usage into money with a price book, and quotes the worst case for admission.
 * Pure: no clock, no I/O; the caller passes the instant the request was received.
 *
 * How a request is rated (`rateUsage`):
 *
 * 1. **Version**: the price version in force at `receivedAt` (latest `effective_from` ≤ `receivedAt`). Adding a
 *    version later never changes an earlier request's rate.
 * 2. **Price source**: if the tenant's contract has prices for the model, they replace the list prices entirely;
 *    otherwise the list prices apply.
 * 3. **Tier**: the first tier whose `max_prompt_tokens` ≥ the prompt tokens (inclusive: 32,768 is in the 0–32,768
 *    tier, 32,769 in the next). A prompt beyond the last bounded tier is rated at the last tier and flagged
 *    `beyondLastTier` (the request has already run; `quoteWorstCase` refuses such a prompt up front).
 * 4. **Output price**: the first output condition whose `max_output_tokens` ≥ the output tokens, else the tier's.
 * 5. **List amount**, per token class: cached input × cached price, non-cached input × input price, output (reasoning
 *    included) × output price, each `tokens × price / 1e6`, exact.
 * 6. **Modifiers**, in this order, each a discount on the amount left by the previous step:
 *    a. **time**: batch *or* off-peak, never both: when both apply the larger discount wins (batch on a tie); of
 *       several matching off-peak windows the largest discount wins. Off-peak windows are daily, UTC, `[start, end)`.
 *    b. **contract discount**: only for models without a contract price (a negotiated price is final).
 *    c. **volume**: graduated by the tenant's tokens this calendar month (UTC). The request's tokens are numbered
 *       after `tenantMonthTokensBefore`, **in prompt order: cached input first (the cached prefix starts the prompt),
 *       then non-cached input, then output**. A request that crosses a step boundary is split there: each part gets
 *       its step's discount, applied to that part's amount after steps a and b. All token classes count.
 * 7. **Amount** = list amount + the (negative) effects of the modifiers. Never negative, as every discount is in
 *    [0, 1].
 *
 * All amounts are exact integers of 1e-27 of the currency unit (see money.ts): nothing is rounded here. Rounding to
 * the currency's minor unit happens once per invoice line (`roundToMinor`, half-even).
 */

import { assertNever } from '../errors/assert-never.js';
import type { Usage } from '../upstreams/usage.js';
import {
  type Amount,
  amountForTokens,
  type Currency,
  type Discount,
  discountEffect,
  formatDiscount,
  type Price,
} from './money.js';
import {
  type Contract,
  type DeploymentCost,
  type ModelPrice,
  type OffPeakWindow,
  type PriceBook,
  type PriceTier,
  type PriceVersion,
  priceVersionAt,
} from './price-book.js';

/** Why a request cannot be rated or quoted. Stable codes. */
export type PricingErrorCode = 'no_price_version' | 'model_not_priced' | 'prompt_too_long' | 'invalid_usage';

/** A request that cannot be priced; the caller maps it to a client error (quote) or an alert (rating). */
export class PricingError extends Error {
  constructor(
    /** Stable machine code. */
    readonly code: PricingErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PricingError';
  }
}

/** Token classes, in the order their tokens are numbered for volume tiers. */
export const TOKEN_CLASSES = ['cached_input', 'input', 'output'] as const;
/** A token class: `input` is non-cached prompt tokens; `output` includes reasoning tokens. */
export type TokenClass = (typeof TOKEN_CLASSES)[number];

/** Token counts per class. */
export type TokenQuantities = Readonly<Record<TokenClass, number>>;

/** One token class of a rated request: quantity × unit price. */
export interface RatedLine {
  readonly tokenClass: TokenClass;
  readonly tokens: number;
  /** Per million tokens, 1e-9 of the unit. */
  readonly unitPrice: Price;
  /** List amount of this class. */
  readonly amount: Amount;
}

/** A modifier as applied; `amount` is its effect (≤ 0), `discount` the fraction taken off as a decimal string. */
export type AppliedModifier =
  | { readonly kind: 'batch'; readonly discount: string; readonly amount: Amount }
  | {
      readonly kind: 'off_peak';
      readonly discount: string;
      /** The window, `HH:MM-HH:MM` UTC. */
      readonly window: string;
      readonly amount: Amount;
    }
  | { readonly kind: 'contract_discount'; readonly discount: string; readonly amount: Amount }
  | {
      readonly kind: 'volume';
      readonly discount: string;
      /** Index of the volume step. */
      readonly volumeTier: number;
      /** Tokens of this request in the step. */
      readonly tokens: number;
      readonly amount: Amount;
    };

/** The part of a request that falls in one volume step. */
export interface VolumePortion {
  /** Index of the step in the version's `volumeTiers`. */
  readonly volumeTier: number;
  readonly discount: string;
  /** Month token number (from 1) of the part's first token. */
  readonly firstToken: bigint;
  readonly tokens: TokenQuantities;
  /** The part's amount after the time and contract modifiers, before the volume discount. */
  readonly amountBefore: Amount;
  /** The volume discount's effect on the part, ≤ 0. */
  readonly amount: Amount;
}

/** Where the applied price version, tier and prices came from. */
export interface PricingBasis {
  readonly currency: Currency;
  readonly model: string;
  readonly tenantId: string;
  readonly priceVersion: { readonly id: string; readonly effectiveFrom: string };
  /** `contract` when the tenant's contract prices replaced the list prices. */
  readonly priceSource: 'list' | 'contract';
  readonly tier: {
    readonly index: number;
    readonly label: string;
    /** The prompt exceeded the last bounded tier and was rated at the last tier. */
    readonly beyondLastTier: boolean;
  };
}

/** One request, rated. Store it with the usage event. */
export interface RatedUsage extends PricingBasis {
  readonly quantities: TokenQuantities;
  /** The output condition that set the output price, or `null` for the tier's own output price. */
  readonly outputCondition: { readonly index: number; readonly maxOutputTokens: number } | null;
  /** One line per token class, in `TOKEN_CLASSES` order (zero-token classes included). */
  readonly lines: readonly RatedLine[];
  /** Sum of the lines. */
  readonly listAmount: Amount;
  /** In the order applied; modifiers without effect (no discount) are left out. */
  readonly modifiers: readonly AppliedModifier[];
  /** The split over volume steps; empty when the version has no volume tiers or the request has no tokens. */
  readonly volume: readonly VolumePortion[];
  /** Final amount: `listAmount` + Σ `modifiers[].amount`. Never negative. */
  readonly amount: Amount;
}

/** What `rateUsage` needs. */
export interface RateUsageInput {
  priceBook: PriceBook;
  /** Public model name. */
  model: string;
  tenantId: string;
  /** When the gateway received the request, epoch ms: chooses the version and the off-peak window. */
  receivedAt: number;
  usage: Usage;
  /** Submitted through the batch API. */
  batch: boolean;
  /** The tenant's tokens (all classes, all models) already rated this calendar month (UTC), for volume tiers. */
  tenantMonthTokensBefore: bigint | number;
}

/** What `quoteWorstCase` needs; pass the same `receivedAt` and `batch` that `rateUsage` will get. */
export interface QuoteInput {
  priceBook: PriceBook;
  model: string;
  tenantId: string;
  /** Epoch ms; must be the `receivedAt` later given to `rateUsage`. */
  receivedAt: number;
  /** Prompt tokens as counted at admission. */
  promptTokens: number;
  /** `max_tokens` of the request, or the model's output cap. */
  maxOutputTokens: number;
  batch: boolean;
}

/** The most a request can cost, for wallet reservation. */
export interface Quote extends PricingBasis {
  /** The dearer of the tier's input and cached input prices, per million tokens. */
  readonly inputPrice: Price;
  /** The dearest output price any output up to `maxOutputTokens` can get, per million tokens. */
  readonly outputPrice: Price;
  /** Before modifiers. */
  readonly listAmount: Amount;
  /** Time and contract modifiers (they are certain given the inputs); volume discounts are not assumed. */
  readonly modifiers: readonly AppliedModifier[];
  /** ≥ `rateUsage(...).amount` for the same prompt and any output ≤ `maxOutputTokens`. */
  readonly amount: Amount;
}

/** A time or contract modifier as `AppliedModifier` reports it, without its amount. */
export type StepModifier = WithoutAmount<Exclude<AppliedModifier, { kind: 'volume' }>>;
type WithoutAmount<M> = M extends { amount: unknown } ? Omit<M, 'amount'> : never;

/** A discount that applies to a whole request (time or contract), with how to report it. */
export interface DiscountStep {
  readonly discount: Discount;
  /** The applied modifier it reports, but for its amount (the effect). */
  readonly modifier: StepModifier;
}

/** The version, prices and contract that apply to one tenant's model at one instant. */
export interface ResolvedPricing {
  readonly version: PriceVersion;
  readonly modelPrice: ModelPrice;
  readonly priceSource: 'list' | 'contract';
  readonly contract: Contract | undefined;
}

const DAY_MS = 86_400_000;

/** Steps 1 and 2 of the module comment. Throws `PricingError` when there is no version or no price. */
export function resolvePricing(book: PriceBook, model: string, tenantId: string, receivedAt: number): ResolvedPricing {
  if (!Number.isFinite(receivedAt))
    throw new PricingError('invalid_usage', `receivedAt must be epoch ms, got ${receivedAt}`);
  const version = priceVersionAt(book, receivedAt);
  if (version === undefined) {
    throw new PricingError(
      'no_price_version',
      `no price version is in force at ${new Date(receivedAt).toISOString()}; the first starts at ${book.versions[0]?.effectiveFrom}`,
    );
  }
  const contract = version.contracts.get(tenantId);
  const contractPrice = contract?.models.get(model);
  if (contractPrice !== undefined) return { version, modelPrice: contractPrice, priceSource: 'contract', contract };
  const listPrice = version.models.get(model);
  if (listPrice === undefined) {
    throw new PricingError('model_not_priced', `model "${model}" has no price in price version "${version.id}"`);
  }
  return { version, modelPrice: listPrice, priceSource: 'list', contract };
}

/** Step 3 of the module comment. */
export function selectTier(modelPrice: ModelPrice, promptTokens: number): { tier: PriceTier; beyondLastTier: boolean } {
  for (const tier of modelPrice.tiers) {
    if (tier.maxPromptTokens === null || promptTokens <= tier.maxPromptTokens) return { tier, beyondLastTier: false };
  }
  return { tier: modelPrice.tiers[modelPrice.tiers.length - 1]!, beyondLastTier: true };
}

function basis(
  input: { model: string; tenantId: string },
  book: PriceBook,
  resolved: ResolvedPricing,
  tier: PriceTier,
  beyondLastTier: boolean,
): PricingBasis {
  return {
    currency: book.currency,
    model: input.model,
    tenantId: input.tenantId,
    priceVersion: { id: resolved.version.id, effectiveFrom: resolved.version.effectiveFrom },
    priceSource: resolved.priceSource,
    tier: { index: tier.index, label: tier.label, beyondLastTier },
  };
}

function isInWindow(window: OffPeakWindow, receivedAt: number): boolean {
  const minute = Math.floor((((receivedAt % DAY_MS) + DAY_MS) % DAY_MS) / 60_000);
  return window.startMinute < window.endMinute
    ? minute >= window.startMinute && minute < window.endMinute
    : minute >= window.startMinute || minute < window.endMinute;
}

/** The steps a version's time modifiers can give, in the order of `batch` and `offPeak`. */
interface TimeSteps {
  readonly batch: DiscountStep | undefined;
  readonly offPeak: readonly DiscountStep[];
}

// Steps are built once per version and contract, not per request: the price book is immutable (a reload builds
// new versions), so a cache keyed by its objects never goes stale.
const timeStepsCache = new WeakMap<PriceVersion, TimeSteps>();
const contractStepCache = new WeakMap<Contract, DiscountStep | null>();
const NO_STEPS: readonly DiscountStep[] = Object.freeze([]);

function timeSteps(version: PriceVersion): TimeSteps {
  let steps = timeStepsCache.get(version);
  if (steps === undefined) {
    const batch = version.batchDiscount;
    steps = {
      batch:
        batch === null ? undefined : { discount: batch, modifier: { kind: 'batch', discount: formatDiscount(batch) } },
      offPeak: version.offPeak.map((window) => ({
        discount: window.discount,
        modifier: {
          kind: 'off_peak',
          discount: formatDiscount(window.discount),
          window: `${window.start}-${window.end}`,
        },
      })),
    };
    timeStepsCache.set(version, steps);
  }
  return steps;
}

function contractStep(contract: Contract): DiscountStep | undefined {
  let step = contractStepCache.get(contract);
  if (step === undefined) {
    const discount = contract.discount;
    step =
      discount === null
        ? null
        : { discount, modifier: { kind: 'contract_discount', discount: formatDiscount(discount) } };
    contractStepCache.set(contract, step);
  }
  return step ?? undefined;
}

/** Steps 6a and 6b of the module comment; zero discounts are dropped. */
export function discountSteps(resolved: ResolvedPricing, batch: boolean, receivedAt: number): readonly DiscountStep[] {
  const versionSteps = timeSteps(resolved.version);
  let time = batch ? versionSteps.batch : undefined;
  const windows = resolved.version.offPeak;
  for (let index = 0; index < windows.length; index += 1) {
    const window = windows[index]!;
    if (!isInWindow(window, receivedAt) || (time !== undefined && window.discount <= time.discount)) continue;
    time = versionSteps.offPeak[index];
  }
  const timeApplied = time !== undefined && time.discount > 0n ? time : undefined;
  const contract =
    resolved.priceSource === 'list' && resolved.contract !== undefined ? contractStep(resolved.contract) : undefined;
  const contractApplied = contract !== undefined && contract.discount > 0n ? contract : undefined;
  if (timeApplied === undefined) return contractApplied === undefined ? NO_STEPS : [contractApplied];
  return contractApplied === undefined ? [timeApplied] : [timeApplied, contractApplied];
}

function applySteps(amount: Amount, steps: readonly DiscountStep[], modifiers?: AppliedModifier[]): Amount {
  let remaining = amount;
  for (const step of steps) {
    const effect = discountEffect(remaining, step.discount);
    modifiers?.push({ ...step.modifier, amount: effect });
    remaining += effect;
  }
  return remaining;
}

function tokenCount(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PricingError('invalid_usage', `${what} must be a non-negative integer, got ${value}`);
  }
  return value;
}

function overlap(start: bigint, end: bigint, from: bigint, to: bigint): bigint {
  const low = start > from ? start : from;
  const high = end < to ? end : to;
  return high > low ? high - low : 0n;
}

/** Rates one request's usage. See the module comment for the rules and their order. */
export function rateUsage(input: RateUsageInput): RatedUsage {
  const { priceBook, usage } = input;
  const promptTokens = tokenCount(usage.input.total, 'usage.input.total');
  const cachedTokens = tokenCount(usage.input.cached, 'usage.input.cached');
  const outputTokens = tokenCount(usage.output.total, 'usage.output.total');
  if (cachedTokens > promptTokens) {
    throw new PricingError('invalid_usage', `cached input (${cachedTokens}) exceeds input (${promptTokens})`);
  }
  const monthTokens = input.tenantMonthTokensBefore;
  if (typeof monthTokens === 'number') tokenCount(monthTokens, 'tenantMonthTokensBefore');
  const before = BigInt(monthTokens);
  if (before < 0n) throw new PricingError('invalid_usage', 'tenantMonthTokensBefore must not be negative');

  const resolved = resolvePricing(priceBook, input.model, input.tenantId, input.receivedAt);
  const { tier, beyondLastTier } = selectTier(resolved.modelPrice, promptTokens);
  const conditionIndex = tier.outputConditions.findIndex((condition) => outputTokens <= condition.maxOutputTokens);
  const condition = conditionIndex === -1 ? undefined : tier.outputConditions[conditionIndex];

  const quantities: TokenQuantities = {
    cached_input: cachedTokens,
    input: promptTokens - cachedTokens,
    output: outputTokens,
  };
  const unitPrices: Readonly<Record<TokenClass, Price>> = {
    cached_input: tier.cachedInput,
    input: tier.input,
    output: condition?.output ?? tier.output,
  };
  const lines = TOKEN_CLASSES.map((tokenClass) => ({
    tokenClass,
    tokens: quantities[tokenClass],
    unitPrice: unitPrices[tokenClass],
    amount: amountForTokens(quantities[tokenClass], unitPrices[tokenClass]),
  }));
  const listAmount = lines.reduce((sum, line) => sum + line.amount, 0n);

  const steps = discountSteps(resolved, input.batch, input.receivedAt);
  const modifiers: AppliedModifier[] = [];
  let amount = applySteps(listAmount, steps, modifiers);

  const volume: VolumePortion[] = [];
  const totalTokens = BigInt(promptTokens + outputTokens);
  let stepStart = 0n;
  for (const step of resolved.version.volumeTiers) {
    const stepEnd = step.upToTokens ?? before + totalTokens;
    // Offsets of this step's tokens inside the request, [from, to).
    const from = (stepStart > before ? stepStart : before) - before;
    const to = (stepEnd < before + totalTokens ? stepEnd : before + totalTokens) - before;
    stepStart = stepEnd;
    if (to <= from) continue;
    let classStart = 0n;
    const tokens = {} as Record<TokenClass, number>;
    let portionList = 0n;
    for (const tokenClass of TOKEN_CLASSES) {
      const classEnd = classStart + BigInt(quantities[tokenClass]);
      const count = overlap(classStart, classEnd, from, to);
      tokens[tokenClass] = Number(count);
      portionList += amountForTokens(count, unitPrices[tokenClass]);
      classStart = classEnd;
    }
    // Discounts are linear and exact, so the parts' amounts before the volume step add up to `amount` exactly.
    const amountBefore = applySteps(portionList, steps);
    const effect = discountEffect(amountBefore, step.discount);
    const discount = formatDiscount(step.discount);
    volume.push({
      volumeTier: step.index,
      discount,
      firstToken: before + from + 1n,
      tokens,
      amountBefore,
      amount: effect,
    });
    if (step.discount > 0n) {
      modifiers.push({ kind: 'volume', discount, volumeTier: step.index, tokens: Number(to - from), amount: effect });
    }
    amount += effect;
  }

  return {
    ...basis(input, priceBook, resolved, tier, beyondLastTier),
    quantities,
    outputCondition:
      condition === undefined ? null : { index: conditionIndex, maxOutputTokens: condition.maxOutputTokens },
    lines,
    listAmount,
    modifiers,
    volume,
    amount,
  };
}

/**
 * The worst-case cost of a request before it runs, for wallet reservation: every prompt token at the dearer of the
 * tier's input and cached input prices, plus `maxOutputTokens` at the dearest output price any output up to that
 * length can get (the tier's or an output condition's), then the time and contract modifiers, which depend only on
 * the inputs. The volume discount is not assumed (concurrent requests move the month's total). The result is
 * ≥ `rateUsage(...).amount` for the same prompt tokens, `receivedAt` and `batch` and any output ≤ `maxOutputTokens`.
 * Throws `PricingError` `prompt_too_long` when the prompt exceeds the model's last bounded tier.
 */
export function quoteWorstCase(input: QuoteInput): Quote {
  const promptTokens = tokenCount(input.promptTokens, 'promptTokens');
  const maxOutputTokens = tokenCount(input.maxOutputTokens, 'maxOutputTokens');
  const resolved = resolvePricing(input.priceBook, input.model, input.tenantId, input.receivedAt);
  const { tier, beyondLastTier } = selectTier(resolved.modelPrice, promptTokens);
  if (beyondLastTier) {
    throw new PricingError(
      'prompt_too_long',
      `a prompt of ${promptTokens} tokens exceeds the largest priced tier of "${input.model}" (${tier.maxPromptTokens} tokens)`,
    );
  }
  const inputPrice = highest([tier.input, tier.cachedInput]);
  const outputPrice = highest([tier.output, ...tier.outputConditions.map((condition) => condition.output)]);
  const listAmount = amountForTokens(promptTokens, inputPrice) + amountForTokens(maxOutputTokens, outputPrice);
  const modifiers: AppliedModifier[] = [];
  const amount = applySteps(listAmount, discountSteps(resolved, input.batch, input.receivedAt), modifiers);
  return {
    ...basis(input, input.priceBook, resolved, tier, false),
    inputPrice,
    outputPrice,
    listAmount,
    modifiers,
    amount,
  };
}

/**
 * The operator's cost of a usage on a deployment priced per token, for margin. Returns `null` for a deployment
 * priced per replica-hour, whose cost is a function of time, not of requests.
 */
export function costOfUsage(cost: DeploymentCost, usage: Usage): Amount | null {
  switch (cost.kind) {
    case 'per_token':
      return (
        amountForTokens(usage.input.cached, cost.cachedInput) +
        amountForTokens(usage.input.total - usage.input.cached, cost.input) +
        amountForTokens(usage.output.total, cost.output)
      );
    case 'per_replica_hour':
      return null;
    default:
      return assertNever(cost);
  }
}

function highest(prices: readonly Price[]): Price {
  let high = 0n;
  for (const price of prices) if (price > high) high = price;
  return high;
}
