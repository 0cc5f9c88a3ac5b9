import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  normalizePriceBook,
  normalizePriceVersion,
  type PriceBookConfig,
  PriceBookError,
  type PriceBookIssue,
  type PriceVersionConfig,
  parsePriceBook,
  priceVersionAt,
  validatePriceBook,
} from './price-book.js';

const EXAMPLE_YAML = `
pricing:
  currency: CNY
  versions:
    - effective_from: "2026-01-01T00:00:00Z"
      models:
        sim-pro-32k: { input: "0.8", cached_input: "0.16", output: "2" }
        sim-pro-128k:
          tiers:
            - { max_prompt_tokens: 32768, input: "0.8", output: "8", output_conditions: [{ max_output_tokens: 200, output: "2" }] }
            - { max_prompt_tokens: 131072, input: "1.2", output: "16" }
            - { max_prompt_tokens: 262144, input: "2.4", output: "24" }
      modifiers:
        batch: { discount: "0.5" }
        off_peak: [{ start: "16:30", end: "00:30", discount: "0.5" }]
      volume_tiers: [{ up_to_tokens: 1000000000, discount: "0" }, { discount: "0.1" }]
      contracts:
        ten_abc: { discount: "0.2" }
        ten_xyz: { models: { sim-pro-32k: { input: "0.5", output: "1.5" } } }
      costs:
        "sim/pro-32k": { per_replica_hour: "12" }
        "vllm/qwen": { per_million_input: "0.2", per_million_output: "0.6" }
`;

function issuesOf(run: () => unknown): PriceBookIssue[] {
  try {
    run();
  } catch (error: unknown) {
    if (error instanceof PriceBookError) return [...error.issues];
    throw error;
  }
  throw new Error('expected a PriceBookError');
}

function bookWith(version: Record<string, unknown>, more: Record<string, unknown>[] = []): unknown {
  return {
    currency: 'CNY',
    versions: [
      { effective_from: '2026-01-01T00:00:00Z', models: { m: { input: '1', output: '2' } }, ...version },
      ...more,
    ],
  };
}

describe('parsePriceBook', () => {
  it('reads the documented YAML example', () => {
    const book = parsePriceBook(parseYaml(EXAMPLE_YAML).pricing, { path: 'pricing' });
    expect(book.currency).toBe('CNY');
    const [version] = book.versions;
    expect(version?.id).toBe('2026-01-01T00:00:00Z');
    expect(version?.effectiveFromMs).toBe(Date.UTC(2026, 0, 1));
    const flat = version?.models.get('sim-pro-32k');
    expect(flat?.tiers).toHaveLength(1);
    expect(flat?.tiers[0]).toMatchObject({
      label: 'all',
      maxPromptTokens: null,
      input: 800_000_000n,
      cachedInput: 160_000_000n,
      output: 2_000_000_000n,
    });
    const tiered = version?.models.get('sim-pro-128k');
    expect(tiered?.tiers.map((tier) => tier.label)).toEqual(['0-32768', '32769-131072', '131073-262144']);
    expect(tiered?.tiers[0]?.cachedInput).toBe(800_000_000n); // defaults to the input price
    expect(tiered?.tiers[0]?.outputConditions).toEqual([{ maxOutputTokens: 200, output: 2_000_000_000n }]);
    expect(version?.batchDiscount).toBe(5_000n);
    expect(version?.offPeak).toEqual([
      { start: '16:30', end: '00:30', startMinute: 990, endMinute: 30, discount: 5_000n },
    ]);
    expect(version?.volumeTiers).toEqual([
      { index: 0, upToTokens: 1_000_000_000n, discount: 0n },
      { index: 1, upToTokens: null, discount: 1_000n },
    ]);
    expect(version?.contracts.get('ten_abc')).toEqual({ discount: 2_000n, models: new Map() });
    expect(version?.contracts.get('ten_xyz')?.models.get('sim-pro-32k')?.tiers[0]?.input).toBe(500_000_000n);
    expect(version?.costs.get('sim/pro-32k')).toEqual({ kind: 'per_replica_hour', perReplicaHour: 12n * 10n ** 27n });
    expect(version?.costs.get('vllm/qwen')).toEqual({
      kind: 'per_token',
      input: 200_000_000n,
      cachedInput: 200_000_000n,
      output: 600_000_000n,
    });
  });

  it('reports an unquoted YAML number with its path', () => {
    const raw = parseYaml(EXAMPLE_YAML.replace('output: "2" }', 'output: 2.5 }')).pricing;
    const issues = issuesOf(() => validatePriceBook(raw, { path: 'pricing' }));
    expect(issues).toContainEqual({
      path: 'pricing.versions[0].models.sim-pro-32k.output',
      message: expect.stringContaining('decimal string in quotes'),
    });
  });

  it('reports unknown keys, wrong types and bad currencies with their paths', () => {
    const issues = issuesOf(() =>
      validatePriceBook({
        currency: 'EUR',
        versions: [
          {
            effective_from: '2026-01-01T00:00:00Z',
            models: { m: { input: '1', output: '2', ouput: '3' } },
            volume_tiers: [{ up_to_tokens: 1.5, discount: '0' }],
          },
        ],
      }),
    );
    const paths = issues.map((issue) => issue.path);
    expect(issues).toContainEqual({ path: 'currency', message: 'expected one of CNY, USD' });
    expect(paths).toContain('versions[0].models.m.ouput');
    expect(paths).toContain('versions[0].volume_tiers[0].up_to_tokens');
  });

  it('reports every bad value with its path in one run', () => {
    const issues = issuesOf(() =>
      parsePriceBook(
        bookWith({
          models: {
            a: { input: '0.0000000001', output: '1e-6' },
            b: { input: '1' },
            c: {
              tiers: [
                { input: '1', output: '1' },
                { max_prompt_tokens: 10, input: '1', output: '1' },
              ],
            },
            d: { input: '1', tiers: [{ input: '1', output: '1' }] },
            e: {
              tiers: [
                { max_prompt_tokens: 100, input: '1', output: '1' },
                { max_prompt_tokens: 100, input: '1', output: '1' },
              ],
            },
            f: {
              input: '1',
              output: '8',
              output_conditions: [
                { max_output_tokens: 200, output: '2' },
                { max_output_tokens: 100, output: '4' },
              ],
            },
          },
          modifiers: { batch: { discount: '1.5' }, off_peak: [{ start: '10:00', end: '10:00', discount: '0.5' }] },
          volume_tiers: [{ discount: '0' }, { up_to_tokens: 5, discount: '-0.1' }],
          contracts: { t: { discount: '0.123456' } },
          costs: { 'x/y': { per_replica_hour: '1', per_million_input: '1' }, 'x/z': { per_million_input: '1' } },
        }),
        { path: 'pricing' },
      ),
    );
    const byPath = new Map(issues.map((issue) => [issue.path, issue.message]));
    const prefix = 'pricing.versions[0]';
    expect(byPath.get(`${prefix}.models.a.input`)).toMatch(/at most 9 decimal places/);
    expect(byPath.get(`${prefix}.models.a.output`)).toMatch(/exponent/);
    expect(byPath.get(`${prefix}.models.b.output`)).toMatch(/required/);
    expect(byPath.get(`${prefix}.models.c.tiers[0].max_prompt_tokens`)).toMatch(/required on every tier but the last/);
    expect(byPath.get(`${prefix}.models.d.input`)).toMatch(/not allowed next to "tiers"/);
    expect(byPath.get(`${prefix}.models.e.tiers[1].max_prompt_tokens`)).toMatch(/greater than/);
    expect(byPath.get(`${prefix}.models.f.output_conditions[1].max_output_tokens`)).toMatch(/greater than/);
    expect(byPath.get(`${prefix}.modifiers.batch.discount`)).toMatch(/at most 1/);
    expect(byPath.get(`${prefix}.modifiers.off_peak[0].end`)).toMatch(/must differ from start/);
    expect(byPath.get(`${prefix}.volume_tiers[0].up_to_tokens`)).toMatch(/required on every step but the last/);
    expect(byPath.get(`${prefix}.volume_tiers[1].up_to_tokens`)).toMatch(/omitted on the last step/);
    expect(byPath.get(`${prefix}.volume_tiers[1].discount`)).toMatch(/negative/);
    expect(byPath.get(`${prefix}.contracts.t.discount`)).toMatch(/at most 4 decimal places/);
    expect(byPath.get(`${prefix}.costs.x/y.per_million_input`)).toMatch(/not allowed next to "per_replica_hour"/);
    expect(byPath.get(`${prefix}.costs.x/z.per_million_output`)).toMatch(/required/);
  });

  it('refuses ambiguous versions', () => {
    const issues = issuesOf(() =>
      parsePriceBook(
        bookWith({ id: 'v1' }, [
          { id: 'v1', effective_from: '2026-01-01T08:00:00+08:00', models: {} },
          { effective_from: '2026-13-01', models: {} },
          { effective_from: '2026-02-30T00:00:00Z', models: {} },
        ]),
      ),
    );
    const byPath = new Map(issues.map((issue) => [issue.path, issue.message]));
    expect(byPath.get('versions[1].id')).toMatch(/also versions\[0\]/);
    expect(byPath.get('versions[1].effective_from')).toMatch(/same instant as versions\[0\]/);
    expect(byPath.get('versions[2].effective_from')).toMatch(/ISO 8601 instant with a zone/);
    expect(byPath.get('versions[3].effective_from')).toMatch(/ISO 8601 instant with a zone/);
  });
});

describe('normalizePriceVersion', () => {
  const book = parsePriceBook({
    currency: 'CNY',
    versions: [{ id: 'v1', effective_from: '2026-01-01T00:00:00Z', models: { m: { input: '1', output: '2' } } }],
  });

  it('names the fields of the version as sent, not its place in the book', () => {
    const issues = issuesOf(() =>
      normalizePriceVersion(
        {
          id: 'v1',
          effective_from: '2026-01-01T08:00:00+08:00',
          models: { m: { input: '1.0000000001', output: '2' }, t: { tiers: [{ input: '1', output: '1' }, {}] } },
        } as PriceVersionConfig,
        book,
      ),
    );
    const byPath = new Map(issues.map((issue) => [issue.path, issue.message]));
    expect([...byPath.keys()].sort()).toEqual([
      'effective_from',
      'id',
      'models.m.input',
      'models.t.tiers[0].max_prompt_tokens',
      'models.t.tiers[1].input',
      'models.t.tiers[1].output',
    ]);
    expect(byPath.get('id')).toMatch(/already the id of the version effective from 2026-01-01T00:00:00Z/);
    expect(byPath.get('effective_from')).toMatch(/same instant as version "v1"/);
  });

  it('blames effective_from for a duplicate id the client did not send, and takes a version of its own', () => {
    const unnamed = parsePriceBook({
      currency: 'CNY',
      versions: [{ effective_from: '2026-01-01T00:00:00Z', models: {} }],
    });
    const issues = issuesOf(() =>
      normalizePriceVersion({ effective_from: '2026-01-01T00:00:00Z', models: {} }, unnamed),
    );
    expect(issues.map((issue) => issue.path)).toEqual(['effective_from', 'effective_from']);
    const version = normalizePriceVersion({ effective_from: '2027-01-01T00:00:00Z', models: {} }, book);
    expect(version).toMatchObject({ id: '2027-01-01T00:00:00Z', effectiveFromMs: Date.UTC(2027, 0, 1) });
    const first = normalizePriceVersion({ id: 'v2', effective_from: '2027-01-01T00:00:00Z', models: {} }, undefined);
    expect(first.id).toBe('v2');
  });
});

describe('priceVersionAt', () => {
  const config: PriceBookConfig = {
    currency: 'USD',
    // Written out of order on purpose: normalization sorts by effective_from.
    versions: [
      { id: 'summer', effective_from: '2026-06-01T00:00:00Z', models: {} },
      { id: 'launch', effective_from: '2026-01-01T00:00:00Z', models: {} },
      { id: 'autumn', effective_from: '2026-09-01T00:00:00.000+02:00', models: {} },
    ],
  };
  const book = normalizePriceBook(config);

  it('picks the latest version whose effective_from is not after the instant', () => {
    expect(priceVersionAt(book, Date.UTC(2025, 11, 31, 23, 59, 59, 999))).toBeUndefined();
    expect(priceVersionAt(book, Date.UTC(2026, 0, 1))?.id).toBe('launch');
    expect(priceVersionAt(book, Date.UTC(2026, 4, 31, 23, 59, 59, 999))?.id).toBe('launch');
    expect(priceVersionAt(book, Date.UTC(2026, 5, 1))?.id).toBe('summer');
    // 2026-09-01T00:00+02:00 is 2026-08-31T22:00Z.
    expect(priceVersionAt(book, Date.UTC(2026, 7, 31, 21, 59, 59, 999))?.id).toBe('summer');
    expect(priceVersionAt(book, Date.UTC(2026, 7, 31, 22))?.id).toBe('autumn');
    expect(priceVersionAt(book, Date.UTC(2030, 0, 1))?.id).toBe('autumn');
  });
});
