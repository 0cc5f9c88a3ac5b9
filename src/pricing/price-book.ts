/**
 * The price book: what the operator writes (YAML/JSON, snake_case, prices as decimal strings per million tokens)
 * and the normalized form rating reads (bigint prices, sorted versions, maps).
 *
 * A book has one currency and a list of **versions**. Each version is a full snapshot (not a delta) that takes effect
 * at `effective_from`; the version in force at an instant is the one with the latest `effective_from` ≤ that instant.
 * Adding a version never changes how an earlier request is rated, because rating picks the version by the time the
 * request was received.
 *
 * ```yaml
 * pricing:
 *   currency: CNY
 *   versions:
 *     - id: "2026-01"                          # optional, defaults to effective_from
 *       effective_from: "2026-01-01T00:00:00Z"
 *       models:
 *         sim-pro-32k: { input: "0.8", cached_input: "0.16", output: "2" }
 *         sim-pro-128k:
 *           tiers:                              # chosen by prompt tokens, upper bound inclusive
 *             - { max_prompt_tokens: 32768, input: "0.8", output: "8",
 *                 output_conditions: [{ max_output_tokens: 200, output: "2" }] }
 *             - { max_prompt_tokens: 131072, input: "1.2", output: "16" }
 *             - { max_prompt_tokens: 262144, input: "2.4", output: "24" }
 *       modifiers:
 *         batch: { discount: "0.5" }
 *         off_peak: [{ start: "16:30", end: "00:30", discount: "0.5" }]   # daily, UTC, [start, end)
 *       volume_tiers: [{ up_to_tokens: 1000000000, discount: "0" }, { discount: "0.1" }]
 *       contracts:
 *         ten_abc: { discount: "0.2" }
 *         ten_xyz: { models: { sim-pro-32k: { input: "0.5", output: "1.5" } } }
 *       costs:
 *         "sim/pro-32k": { per_replica_hour: "12" }
 *         "vllm/qwen": { per_million_input: "0.2", per_million_output: "0.6" }
 * ```
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { Value, type ValueError, ValueErrorType } from '@sinclair/typebox/value';
import {
  AMOUNT_DECIMALS,
  type Amount,
  CURRENCY_CODES,
  type Currency,
  DecimalFormatError,
  type Discount,
  type Price,
  parseDecimal,
  parseDiscount,
  parsePrice,
} from './money.js';

// ---------------------------------------------------------------------------------------------------------------
// Schema (as written by the operator)
// ---------------------------------------------------------------------------------------------------------------

const strict = { additionalProperties: false } as const;

/** A decimal string; its precision and range are checked by `normalizePriceBook`, which names the limit. */
const DecimalText = (description: string) => Type.String({ description });
const TokenCount = (description: string) => Type.Integer({ minimum: 1, description });
/** Model names as the catalog spells them. */
const MODEL_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$';

/** A cheaper (or dearer) output price when the output is short. */
export const OutputConditionSchema = Type.Object(
  {
    /** The condition holds when output tokens ≤ this. */
    max_output_tokens: TokenCount('Largest output, tokens, for which this output price applies (inclusive).'),
    /** Output price per million tokens while the condition holds. */
    output: DecimalText('Output price per million tokens, decimal string.'),
  },
  strict,
);

const priceFields = {
  /** Price per million non-cached prompt tokens. */
  input: DecimalText('Input price per million tokens, decimal string.'),
  /** Price per million cached prompt tokens. Default: the input price. */
  cached_input: Type.Optional(DecimalText('Cached input price per million tokens. Default: the input price.')),
  /** Price per million output tokens (reasoning tokens included). */
  output: DecimalText('Output price per million tokens, decimal string.'),
  /** Output prices for short outputs; the first whose `max_output_tokens` ≥ the output wins. */
  output_conditions: Type.Optional(Type.Array(OutputConditionSchema)),
};

/** One input-length tier of a model. */
export const PriceTierSchema = Type.Object(
  {
    /** Name shown on usage and invoices. Default: the token range, e.g. `0-32768`. */
    label: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    /** Largest prompt, tokens, in this tier (inclusive). Omit on the last tier for no limit. */
    max_prompt_tokens: Type.Optional(TokenCount('Largest prompt in this tier, tokens (inclusive).')),
    ...priceFields,
  },
  strict,
);

/**
 * A model's prices: either flat (`input`, `cached_input`, `output`, `output_conditions`) or `tiers` by prompt length.
 * All fields are optional in the schema so that `normalizePriceBook` can say which form is incomplete.
 */
export const ModelPriceSchema = Type.Object(
  {
    input: Type.Optional(priceFields.input),
    cached_input: priceFields.cached_input,
    output: Type.Optional(priceFields.output),
    output_conditions: priceFields.output_conditions,
    tiers: Type.Optional(Type.Array(PriceTierSchema, { minItems: 1 })),
  },
  strict,
);

const ModelPricesSchema = Type.Record(Type.String({ pattern: MODEL_NAME_PATTERN }), ModelPriceSchema, strict);

/** A daily UTC window with a discount, `[start, end)`; `end` before `start` crosses midnight. */
export const OffPeakWindowSchema = Type.Object(
  {
    /** Start, `HH:MM` UTC, inclusive. */
    start: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'Start, HH:MM UTC, inclusive.' }),
    /** End, `HH:MM` UTC, exclusive. `00:00` is midnight. */
    end: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'End, HH:MM UTC, exclusive.' }),
    /** Fraction taken off, `"0"`–`"1"`. */
    discount: DecimalText('Fraction taken off, e.g. "0.5" for 50% off.'),
  },
  strict,
);

/** One step of the graduated monthly volume discount. */
export const VolumeTierSchema = Type.Object(
  {
    /** Cumulative tokens of the tenant this calendar month (UTC) up to which this step applies (inclusive). Omit on the last step. */
    up_to_tokens: Type.Optional(TokenCount('Cumulative monthly tokens up to which this step applies (inclusive).')),
    /** Fraction taken off tokens in this step. */
    discount: DecimalText('Fraction taken off, e.g. "0.1".'),
  },
  strict,
);

/** A tenant's contract: a discount on list prices, and/or its own prices for some models. */
export const ContractSchema = Type.Object(
  {
    /** Fraction taken off list prices of models without a contract price. Default none. */
    discount: Type.Optional(DecimalText('Fraction taken off list prices.')),
    /** Contract prices; they replace the list prices of these models entirely (no contract discount on top). */
    models: Type.Optional(ModelPricesSchema),
  },
  strict,
);

/** The operator's cost of one deployment: per million tokens, or per replica-hour. */
export const DeploymentCostSchema = Type.Object(
  {
    per_million_input: Type.Optional(DecimalText('Cost per million non-cached input tokens.')),
    /** Default: `per_million_input`. */
    per_million_cached_input: Type.Optional(DecimalText('Cost per million cached input tokens.')),
    per_million_output: Type.Optional(DecimalText('Cost per million output tokens.')),
    per_replica_hour: Type.Optional(DecimalText('Cost per replica and hour.')),
  },
  strict,
);

/** One version of the price book. */
export const PriceVersionSchema = Type.Object(
  {
    /** Stable id stored with every rated request. Default: `effective_from` as written. */
    id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    /** ISO 8601 instant with a zone (`Z` or `±HH:MM`) from which this version applies. */
    effective_from: Type.String({ description: 'ISO 8601 instant with zone, e.g. 2026-01-01T00:00:00Z.' }),
    models: ModelPricesSchema,
    modifiers: Type.Optional(
      Type.Object(
        {
          /** Discount on batch requests. */
          batch: Type.Optional(Type.Object({ discount: DecimalText('Fraction taken off batch requests.') }, strict)),
          /** Off-peak windows. */
          off_peak: Type.Optional(Type.Array(OffPeakWindowSchema)),
        },
        strict,
      ),
    ),
    /** Graduated per-tenant monthly volume discount; the last step has no `up_to_tokens`. */
    volume_tiers: Type.Optional(Type.Array(VolumeTierSchema, { minItems: 1 })),
    /** Contracts by tenant id. */
    contracts: Type.Optional(Type.Record(Type.String({ minLength: 1 }), ContractSchema)),
    /** Operator costs by deployment (`<upstream>/<upstream model id>`). */
    costs: Type.Optional(Type.Record(Type.String({ minLength: 1 }), DeploymentCostSchema)),
  },
  strict,
);

/** The `pricing` section of the configuration (and the body of the admin price-book API). */
export const PriceBookSchema = Type.Object(
  {
    /** Currency of every price, discount base, wallet and invoice. */
    currency: Type.Union(CURRENCY_CODES.map((code) => Type.Literal(code))),
    versions: Type.Array(PriceVersionSchema, { minItems: 1 }),
  },
  strict,
);

/** The price book as written. */
export type PriceBookConfig = Static<typeof PriceBookSchema>;
export type PriceVersionConfig = Static<typeof PriceVersionSchema>;
export type ModelPriceConfig = Static<typeof ModelPriceSchema>;
export type DeploymentCostConfig = Static<typeof DeploymentCostSchema>;

// ---------------------------------------------------------------------------------------------------------------
// Normalized form
// ---------------------------------------------------------------------------------------------------------------

/** An output price that applies when the output is at most `maxOutputTokens`. */
export interface OutputCondition {
  /** Inclusive bound, tokens. */
  readonly maxOutputTokens: number;
  readonly output: Price;
}

/** One input-length tier, prices per million tokens. */
export interface PriceTier {
  /** Position in the model's tier list, from 0. */
  readonly index: number;
  /** Label for usage records and invoices. */
  readonly label: string;
  /** Largest prompt in this tier, tokens, inclusive; `null` for no limit. */
  readonly maxPromptTokens: number | null;
  readonly input: Price;
  /** The input price when the book gave none. */
  readonly cachedInput: Price;
  readonly output: Price;
  /** Sorted by `maxOutputTokens`, ascending. */
  readonly outputConditions: readonly OutputCondition[];
}

/** A model's tiers, sorted by `maxPromptTokens`; a flat price is one unbounded tier labelled `all`. */
export interface ModelPrice {
  readonly tiers: readonly PriceTier[];
}

/** A daily UTC discount window, `[startMinute, endMinute)` in minutes after midnight; crosses midnight when end < start. */
export interface OffPeakWindow {
  readonly start: string;
  readonly end: string;
  readonly startMinute: number;
  readonly endMinute: number;
  readonly discount: Discount;
}

/** A step of the graduated monthly volume discount: tokens numbered up to `upToTokens` (inclusive; `null`: no limit). */
export interface VolumeTier {
  readonly index: number;
  readonly upToTokens: bigint | null;
  readonly discount: Discount;
}

/** A tenant's contract. */
export interface Contract {
  /** Taken off list prices of models without a contract price; `null`: none. */
  readonly discount: Discount | null;
  /** Contract prices by model; they replace list prices. */
  readonly models: ReadonlyMap<string, ModelPrice>;
}

/** The operator's cost of a deployment. */
export type DeploymentCost =
  | { readonly kind: 'per_token'; readonly input: Price; readonly cachedInput: Price; readonly output: Price }
  | { readonly kind: 'per_replica_hour'; readonly perReplicaHour: Amount };

/** One normalized version of the price book. */
export interface PriceVersion {
  readonly id: string;
  /** As written in the book. */
  readonly effectiveFrom: string;
  /** `effective_from`, epoch ms. */
  readonly effectiveFromMs: number;
  readonly models: ReadonlyMap<string, ModelPrice>;
  /** Batch discount; `null`: none. */
  readonly batchDiscount: Discount | null;
  readonly offPeak: readonly OffPeakWindow[];
  /** Empty: no volume discount. Otherwise the last step is unbounded. */
  readonly volumeTiers: readonly VolumeTier[];
  readonly contracts: ReadonlyMap<string, Contract>;
  readonly costs: ReadonlyMap<string, DeploymentCost>;
}

/** The normalized price book: versions sorted by `effectiveFromMs`, ascending. */
export interface PriceBook {
  readonly currency: Currency;
  readonly versions: readonly PriceVersion[];
}

/** One problem in a price book, with the path of the bad field (`versions[0].models.sim-pro-32k.input`). */
export interface PriceBookIssue {
  readonly path: string;
  readonly message: string;
}

/** A price book that does not validate; `issues` lists every problem found. */
export class PriceBookError extends Error {
  constructor(readonly issues: readonly PriceBookIssue[]) {
    super(`invalid price book:\n${issues.map((issue) => `  ${issue.path}: ${issue.message}`).join('\n')}`);
    this.name = 'PriceBookError';
  }
}

/** Options of `validatePriceBook`, `normalizePriceBook` and `parsePriceBook`. */
export interface PriceBookPathOptions {
  /** Prefix of every issue path, e.g. `pricing` when the book sits under that config key. Default `''`. */
  path?: string;
}

type PathSegment = string | number;

function joinPath(prefix: string, segments: readonly PathSegment[]): string {
  let path = prefix;
  for (const segment of segments) {
    path += typeof segment === 'number' ? `[${segment}]` : path === '' ? segment : `.${segment}`;
  }
  return path === '' ? '(root)' : path;
}

function pointerSegments(pointer: string): PathSegment[] {
  return pointer
    .split('/')
    .slice(1)
    .map((raw) => raw.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((segment) => (/^(0|[1-9][0-9]*)$/.test(segment) ? Number(segment) : segment));
}

/**
 * Checks the shape of a price book as written (types, required and unknown keys). Throws `PriceBookError` with
 * every problem and its path; returns the input typed. Use `normalizePriceBook` next for values and ordering.
 */
export function validatePriceBook(raw: unknown, options: PriceBookPathOptions = {}): PriceBookConfig {
  return validateAgainst(PriceBookSchema, raw, options.path ?? '');
}

function validateAgainst<T extends TSchema>(schema: T, raw: unknown, prefix: string): Static<T> {
  if (Value.Check(schema, raw)) return raw;
  const issues: PriceBookIssue[] = [];
  for (const error of Value.Errors(schema, raw)) {
    issues.push({ path: joinPath(prefix, pointerSegments(error.path)), message: explain(error) });
  }
  throw new PriceBookError(issues);
}

/** TypeBox's message, made specific where it is vague for an operator. */
function explain(error: ValueError): string {
  const schema = error.schema as { type?: unknown; anyOf?: { const?: unknown }[]; patternProperties?: unknown };
  if (typeof error.value === 'number' && schema.type === 'string') {
    return `expected a decimal string in quotes (e.g. "${error.value}"): numbers are binary floats and lose precision`;
  }
  if (schema.anyOf?.every((option) => typeof option.const === 'string')) {
    return `expected one of ${schema.anyOf.map((option) => option.const).join(', ')}`;
  }
  if (schema.patternProperties !== undefined && error.type === ValueErrorType.ObjectAdditionalProperties) {
    return 'not a valid model name (letters, digits, ".", "_", "-", ":", "/"; starting with a letter or digit)';
  }
  return error.message;
}

/** Validates and normalizes in one step: `normalizePriceBook(validatePriceBook(raw))`. */
export function parsePriceBook(raw: unknown, options: PriceBookPathOptions = {}): PriceBook {
  return normalizePriceBook(validatePriceBook(raw, options), options);
}

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Collects issues with their paths while converting, so one run reports every problem. */
class Normalizer {
  readonly issues: PriceBookIssue[] = [];
  constructor(private readonly prefix: string) {}

  fail(segments: readonly PathSegment[], message: string): void {
    this.issues.push({ path: joinPath(this.prefix, segments), message });
  }

  decimal<T>(segments: readonly PathSegment[], text: unknown, parse: (text: unknown) => T, fallback: T): T {
    try {
      return parse(text);
    } catch (error: unknown) {
      if (!(error instanceof DecimalFormatError)) throw error;
      this.fail(segments, error.message);
      return fallback;
    }
  }

  price(segments: readonly PathSegment[], text: unknown): Price {
    return this.decimal(segments, text, parsePrice, 0n);
  }

  discount(segments: readonly PathSegment[], text: unknown): Discount {
    return this.decimal(segments, text, parseDiscount, 0n);
  }

  modelPrices(segments: readonly PathSegment[], models: PriceVersionConfig['models']): Map<string, ModelPrice> {
    const result = new Map<string, ModelPrice>();
    for (const [name, model] of Object.entries(models)) result.set(name, this.modelPrice([...segments, name], model));
    return result;
  }

  modelPrice(segments: readonly PathSegment[], model: ModelPriceConfig): ModelPrice {
    const flatKeys = (['input', 'cached_input', 'output', 'output_conditions'] as const).filter(
      (key) => model[key] !== undefined,
    );
    if (model.tiers !== undefined) {
      for (const key of flatKeys) this.fail([...segments, key], 'not allowed next to "tiers": put prices in each tier');
      return { tiers: this.tiers([...segments, 'tiers'], model.tiers) };
    }
    for (const key of ['input', 'output'] as const) {
      if (model[key] === undefined) this.fail([...segments, key], 'required (or give "tiers")');
    }
    return {
      tiers: [
        this.tier(segments, 0, 'all', null, {
          input: model.input ?? '0',
          cached_input: model.cached_input,
          output: model.output ?? '0',
          output_conditions: model.output_conditions,
        }),
      ],
    };
  }

  tiers(segments: readonly PathSegment[], tiers: readonly Static<typeof PriceTierSchema>[]): PriceTier[] {
    const result: PriceTier[] = [];
    let previousMax = 0;
    tiers.forEach((tier, index) => {
      const max = tier.max_prompt_tokens ?? null;
      const isLast = index === tiers.length - 1;
      if (max === null && !isLast) {
        this.fail([...segments, index, 'max_prompt_tokens'], 'required on every tier but the last');
      }
      if (max !== null && max <= previousMax) {
        this.fail(
          [...segments, index, 'max_prompt_tokens'],
          `must be greater than the previous tier's ${previousMax} (tiers are sorted by prompt length)`,
        );
      }
      const low = index === 0 ? 0 : previousMax + 1;
      const label = tier.label ?? (max === null ? `${low}+` : `${low}-${max}`);
      result.push(this.tier([...segments, index], index, label, max, tier));
      if (max !== null) previousMax = Math.max(previousMax, max);
    });
    return result;
  }

  tier(
    segments: readonly PathSegment[],
    index: number,
    label: string,
    maxPromptTokens: number | null,
    prices: {
      input: string;
      cached_input?: string | undefined;
      output: string;
      output_conditions?: Static<typeof OutputConditionSchema>[] | undefined;
    },
  ): PriceTier {
    const input = this.price([...segments, 'input'], prices.input);
    const cachedInput =
      prices.cached_input === undefined ? input : this.price([...segments, 'cached_input'], prices.cached_input);
    const outputConditions: OutputCondition[] = [];
    let previousMax = 0;
    (prices.output_conditions ?? []).forEach((condition, conditionIndex) => {
      const path = [...segments, 'output_conditions', conditionIndex];
      if (condition.max_output_tokens <= previousMax) {
        this.fail([...path, 'max_output_tokens'], `must be greater than the previous condition's ${previousMax}`);
      }
      previousMax = Math.max(previousMax, condition.max_output_tokens);
      outputConditions.push({
        maxOutputTokens: condition.max_output_tokens,
        output: this.price([...path, 'output'], condition.output),
      });
    });
    return {
      index,
      label,
      maxPromptTokens,
      input,
      cachedInput,
      output: this.price([...segments, 'output'], prices.output),
      outputConditions,
    };
  }

  offPeak(segments: readonly PathSegment[], windows: readonly Static<typeof OffPeakWindowSchema>[]): OffPeakWindow[] {
    return windows.map((window, index) => {
      const startMinute = minuteOfDay(window.start);
      const endMinute = minuteOfDay(window.end);
      if (startMinute === endMinute) {
        this.fail([...segments, index, 'end'], 'must differ from start (an empty or whole-day window is ambiguous)');
      }
      return {
        start: window.start,
        end: window.end,
        startMinute,
        endMinute,
        discount: this.discount([...segments, index, 'discount'], window.discount),
      };
    });
  }

  volumeTiers(segments: readonly PathSegment[], tiers: readonly Static<typeof VolumeTierSchema>[]): VolumeTier[] {
    let previous = 0;
    return tiers.map((tier, index) => {
      const isLast = index === tiers.length - 1;
      const upTo = tier.up_to_tokens;
      if (isLast && upTo !== undefined) {
        this.fail(
          [...segments, index, 'up_to_tokens'],
          'must be omitted on the last step (it covers all further tokens)',
        );
      }
      if (!isLast && upTo === undefined)
        this.fail([...segments, index, 'up_to_tokens'], 'required on every step but the last');
      if (upTo !== undefined && upTo <= previous) {
        this.fail([...segments, index, 'up_to_tokens'], `must be greater than the previous step's ${previous}`);
      }
      if (upTo !== undefined) previous = Math.max(previous, upTo);
      return {
        index,
        upToTokens: isLast || upTo === undefined ? null : BigInt(upTo),
        discount: this.discount([...segments, index, 'discount'], tier.discount),
      };
    });
  }

  cost(segments: readonly PathSegment[], cost: DeploymentCostConfig): DeploymentCost {
    const tokenKeys = (['per_million_input', 'per_million_cached_input', 'per_million_output'] as const).filter(
      (key) => cost[key] !== undefined,
    );
    if (cost.per_replica_hour !== undefined) {
      for (const key of tokenKeys) this.fail([...segments, key], 'not allowed next to "per_replica_hour"');
      return {
        kind: 'per_replica_hour',
        perReplicaHour: this.decimal(
          [...segments, 'per_replica_hour'],
          cost.per_replica_hour,
          (text) => parseDecimal(text, { decimals: AMOUNT_DECIMALS }),
          0n,
        ),
      };
    }
    for (const key of ['per_million_input', 'per_million_output'] as const) {
      if (cost[key] === undefined) this.fail([...segments, key], 'required (or give "per_replica_hour")');
    }
    const input = this.price([...segments, 'per_million_input'], cost.per_million_input ?? '0');
    return {
      kind: 'per_token',
      input,
      cachedInput:
        cost.per_million_cached_input === undefined
          ? input
          : this.price([...segments, 'per_million_cached_input'], cost.per_million_cached_input),
      output: this.price([...segments, 'per_million_output'], cost.per_million_output ?? '0'),
    };
  }

  version(segments: readonly PathSegment[], version: PriceVersionConfig): PriceVersion {
    const effectiveFromMs = parseInstant(version.effective_from);
    if (Number.isNaN(effectiveFromMs)) {
      this.fail(
        [...segments, 'effective_from'],
        `"${version.effective_from}": expected an ISO 8601 instant with a zone, e.g. "2026-01-01T00:00:00Z"`,
      );
    }
    const contracts = new Map<string, Contract>();
    for (const [tenantId, contract] of Object.entries(version.contracts ?? {})) {
      const path = [...segments, 'contracts', tenantId];
      contracts.set(tenantId, {
        discount: contract.discount === undefined ? null : this.discount([...path, 'discount'], contract.discount),
        models: this.modelPrices([...path, 'models'], contract.models ?? {}),
      });
    }
    const costs = new Map<string, DeploymentCost>();
    for (const [deployment, cost] of Object.entries(version.costs ?? {})) {
      costs.set(deployment, this.cost([...segments, 'costs', deployment], cost));
    }
    const batch = version.modifiers?.batch;
    return {
      id: version.id ?? version.effective_from,
      effectiveFrom: version.effective_from,
      effectiveFromMs,
      models: this.modelPrices([...segments, 'models'], version.models),
      batchDiscount:
        batch === undefined ? null : this.discount([...segments, 'modifiers', 'batch', 'discount'], batch.discount),
      offPeak: this.offPeak([...segments, 'modifiers', 'off_peak'], version.modifiers?.off_peak ?? []),
      volumeTiers: this.volumeTiers([...segments, 'volume_tiers'], version.volume_tiers ?? []),
      contracts,
      costs,
    };
  }
}

/** Epoch ms of an ISO 8601 instant with a zone, or NaN; refuses calendar dates that do not exist (Feb 30). */
function parseInstant(text: string): number {
  if (!INSTANT.test(text)) return Number.NaN;
  const [year, month, day] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  const date = new Date(Date.UTC(year, month - 1, day));
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) return Number.NaN;
  return Date.parse(text);
}

function minuteOfDay(time: string): number {
  return Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));
}

/**
 * Converts a schema-valid price book into its normalized form, once: decimal strings become bigint prices and
 * discounts, flat prices become one unbounded tier, versions are sorted by `effective_from`. Checks what the schema
 * cannot (decimal precision and range, tier order, one version per instant, unique ids) and throws `PriceBookError`
 * listing every problem with its path.
 */
export function normalizePriceBook(config: PriceBookConfig, options: PriceBookPathOptions = {}): PriceBook {
  const normalizer = new Normalizer(options.path ?? '');
  const versions = config.versions.map((version, index) => normalizer.version(['versions', index], version));
  const seenIds = new Map<string, number>();
  const seenInstants = new Map<number, number>();
  versions.forEach((version, index) => {
    const sameId = seenIds.get(version.id);
    if (sameId !== undefined)
      normalizer.fail(['versions', index, 'id'], `"${version.id}" is also versions[${sameId}]'s id`);
    seenIds.set(version.id, index);
    if (Number.isNaN(version.effectiveFromMs)) return;
    const sameInstant = seenInstants.get(version.effectiveFromMs);
    if (sameInstant !== undefined) {
      normalizer.fail(['versions', index, 'effective_from'], `same instant as versions[${sameInstant}]`);
    }
    seenInstants.set(version.effectiveFromMs, index);
  });
  if (normalizer.issues.length > 0) throw new PriceBookError(normalizer.issues);
  return {
    currency: config.currency,
    versions: [...versions].sort((a, b) => a.effectiveFromMs - b.effectiveFromMs),
  };
}

/**
 * Normalizes one version to be added to `book` (the admin API's `POST /admin/v1/prices`). Issue paths name the fields
 * of the version as the client sent it (`models.sim-pro-32k.input`), not its place in the book, and a version that
 * shares its id or its instant with one of `book`'s is refused. Throws `PriceBookError` listing every problem.
 */
export function normalizePriceVersion(config: PriceVersionConfig, book: PriceBook | undefined): PriceVersion {
  const normalizer = new Normalizer('');
  const version = normalizer.version([], config);
  const others = book?.versions ?? [];
  const sameId = others.find((other) => other.id === version.id);
  if (sameId !== undefined) {
    // Without an id, the id is `effective_from` as written: that is the field the client sent.
    normalizer.fail(
      [config.id === undefined ? 'effective_from' : 'id'],
      `"${version.id}" is already the id of the version effective from ${sameId.effectiveFrom}`,
    );
  }
  const sameInstant = others.find((other) => other.effectiveFromMs === version.effectiveFromMs);
  if (sameInstant !== undefined) {
    normalizer.fail(
      ['effective_from'],
      `the same instant as version "${sameInstant.id}" (${sameInstant.effectiveFrom})`,
    );
  }
  if (normalizer.issues.length > 0) throw new PriceBookError(normalizer.issues);
  return version;
}

/** The version in force at `instantMs` (epoch ms): the latest with `effectiveFromMs` ≤ the instant, if any. */
export function priceVersionAt(book: PriceBook, instantMs: number): PriceVersion | undefined {
  for (let index = book.versions.length - 1; index >= 0; index -= 1) {
    const version = book.versions[index]!;
    if (version.effectiveFromMs <= instantMs) return version;
  }
  return undefined;
}
