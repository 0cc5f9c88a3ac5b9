/**
 * The ledger benchmark (`npm run bench:ledger`):
 * 1. ingest rate: settlements (request-log row + usage event + reservation release) committed through
 *    `store.settle` in batches, on SQLite (a file, WAL) and PostgreSQL, events/s per batch size; on PostgreSQL also
 *    with two writers committing side by side, as two gateway processes of a cluster do (`--writers`); then once
 *    through the gateway's own path, a `SettlementWriter` with the options the gateway gives it for that store;
 * 2. one tenant with `--events` usage events (default 10,000,000) in one month, generated through `settle` in large
 *    batches, in time order, over 30 days, 4 keys × 3 models; then the time of the month's billing-rollup query plus
 *    `buildInvoice`, and of 30-day `queryUsageRollups` with 1d and 1h buckets (each the median of 5 runs, and the
 *    first run).
 * Before the ingest-rate runs, `--warmup-events` (default 20,000) are settled untimed. `--pg-events` sets the
 * PostgreSQL month separately (default: the same as `--events`); `--skip-sqlite` and `--skip-postgres` leave a
 * store out. Prints a Markdown table and writes `bench/results/ledger-<date and time>.json`. See docs/benchmarks.md.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import pg from 'pg';
import { buildInvoice } from '../src/billing/invoice/build-invoice.js';
import {
  DEFAULT_SETTLEMENT_BATCH,
  POSTGRES_WRITER_OPTIONS,
  SettlementWriter,
  type SettlementWriterOptions,
} from '../src/metering/settlement-writer.js';
import { createStore } from '../src/store/create-store.js';
import type { RatedSettlement, Settlement, UsageRating } from '../src/store/ledger-store.js';
import type { Store } from '../src/store/store.js';
import { machineSummary, writeBenchResult } from './bench-results.js';

/** CLI options. */
export interface LedgerBenchOptions {
  /** Usage events of the month scenario on SQLite. Default 10,000,000. */
  events: number;
  /** Usage events of the month scenario on PostgreSQL. Default: `events`. */
  pgEvents?: number;
  /** Events per ingest-rate run. Default 200,000. */
  ingestEvents: number;
  /** Events settled (untimed, batches of 2,000) before the ingest-rate runs, so they compare warm code. Default 20,000. */
  warmupEvents: number;
  /** Batch sizes of the ingest-rate runs, settlements. Default [500, 2000, 10000]. */
  batches: number[];
  /**
   * Concurrent writers of the ingest-rate runs: 1 is one gateway process's settlement writer (one commit at a time),
   * 2 two processes settling into the same database (cluster mode). Only PostgreSQL takes more than one; SQLite has one
   * writer by design. Default [1, 2].
   */
  writers: number[];
  /** Settlements per `settle` call while generating the month. Default 5000. */
  generationBatch: number;
  /** Leave PostgreSQL out. Default false. */
  skipPostgres: boolean;
  /** Leave SQLite out. Default false. */
  skipSqlite: boolean;
  /** Where the JSON goes. Default `bench/results/ledger-<date and time>.json`. */
  out?: string;
}

/** One store's numbers. */
interface StoreResult {
  store: 'sqlite' | 'postgres';
  ingest: IngestResult[];
  month: {
    events: number;
    /** Settlements per settle call while generating. */
    generationBatch: number;
    generationSeconds: number;
    generationEventsPerSecond: number;
    invoice: Timing & { rollupRows: number; invoiceLines: number };
    usage1d: Timing & { rows: number };
    usage1h: Timing & { rows: number };
    /** Σ invoice total (exact, nano) = Σ generated event amounts. */
    ledgerCheck: { invoiceTotal: string; generatedTotal: string; equal: boolean };
  };
}

/** Query timings, ms. */
interface Timing {
  firstMs: number;
  medianMs: number;
}

const POSTGRES_URLS = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];
const WARMUP_BATCH = 2000;
const MONTH_START = Date.UTC(2026, 10, 1);
const MONTH_END = Date.UTC(2026, 11, 1);
const DAY_MS = 86_400_000;
const KEYS = ['key_bench_a', 'key_bench_b', 'key_bench_c', 'key_bench_d'];
const MODELS = ['sim-pro-32k', 'sim-pro-128k', 'sim-lite'];
/** Nano-units per token: 0.8 / 2 / 0.2 yuan per million input / output / cached tokens. */
const PRICE = { input: 800n, output: 2000n, cached: 200n };

function parseCount(value: string): number {
  const parsed = Number(value.replaceAll('_', ''));
  if (!Number.isSafeInteger(parsed) || parsed < 1) throw new InvalidArgumentError('expected a positive integer');
  return parsed;
}

function parseCountOrZero(value: string): number {
  return value === '0' ? 0 : parseCount(value);
}

function parseList(value: string): number[] {
  return value.split(',').map(parseCount);
}

/** A deterministic generator (Mulberry32), so runs are comparable. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A settlement whose event is rated like the price book would: list amounts, an off-peak discount, Σ = amount. */
function makeSettlement(
  requestId: string,
  tenantId: string,
  keyId: string,
  model: string,
  receivedAt: number,
  random: () => number,
): RatedSettlement {
  const prompt = 200 + Math.floor(random() * 4000);
  const cached = random() < 0.3 ? Math.floor(prompt / 2) : 0;
  const output = 20 + Math.floor(random() * 600);
  const inputListAmount = BigInt(prompt - cached) * PRICE.input;
  const cachedListAmount = BigInt(cached) * PRICE.cached;
  const outputListAmount = BigInt(output) * PRICE.output;
  const list = inputListAmount + cachedListAmount + outputListAmount;
  const offPeakDiscount = random() < 0.25 ? -(list / 2n) : 0n;
  const rating: UsageRating = {
    batch: false,
    currency: 'CNY',
    priceVersion: '2026-01-01',
    tier: '0-32768',
    outputCondition: null,
    inputListAmount,
    cachedListAmount,
    outputListAmount,
    batchDiscount: 0n,
    offPeakDiscount,
    contractDiscount: 0n,
    volumeDiscount: 0n,
    amount: list + offPeakDiscount,
    cost: BigInt(output) * 300n,
    detail: '{}',
  };
  return {
    log: {
      requestId,
      tenantId,
      keyId,
      endpoint: 'chat',
      model,
      deployment: `sim/${model}`,
      status: 200,
      errorCode: null,
      stream: true,
      promptTokens: prompt,
      cachedTokens: cached,
      completionTokens: output,
      reasoningTokens: 0,
      usageEstimated: false,
      latencyMs: 850.125,
      ttftMs: 120.5,
      attempts: 1,
      createdAt: receivedAt,
    },
    rating,
    reservation: { tenantId, amount: rating.amount + 1000n },
    checkpointRequestId: requestId,
  };
}

/** One ingest-rate run's result. */
interface IngestResult {
  /** Settlements per commit (through the writer: the most per commit). */
  batch: number;
  /** Commits side by side. */
  writers: number;
  /** `store`: batches handed to `store.settle`; `writer`: settlements written one by one to a `SettlementWriter`. */
  through: 'store' | 'writer';
  events: number;
  seconds: number;
  eventsPerSecond: number;
}

/** `total` settlements of 50 tenants (topped up first) arriving at ~10k/s, with request ids of `runId`. */
async function ingestSettlements(store: Store, total: number, runId: string, seed: number): Promise<Settlement[]> {
  const random = seededRandom(seed);
  const tenants = Array.from({ length: 50 }, (_, index) => `ten_ingest_${runId}_${index}`);
  for (const tenantId of tenants) {
    await store.addWalletTransaction({
      tenantId,
      kind: 'topup',
      amount: 10n ** 18n,
      currency: 'CNY',
      idempotencyKey: null,
      note: null,
    });
  }
  const start = Date.UTC(2026, 9, 1);
  const settlements: Settlement[] = [];
  for (let index = 0; index < total; index++) {
    const tenantId = tenants[Math.floor(random() * tenants.length)]!;
    settlements.push(
      makeSettlement(
        `req_${runId}_${index}`,
        tenantId,
        KEYS[index % KEYS.length]!,
        MODELS[index % MODELS.length]!,
        start + Math.floor(index / 10),
        random,
      ),
    );
  }
  return settlements;
}

/** Ingest rate: `total` settlements (`ingestSettlements`) handed to `store.settle` in batches of `batch`. */
async function measureIngest(
  store: Store,
  batch: number,
  total: number,
  runId: string,
  writers = 1,
): Promise<IngestResult> {
  const settlements = await ingestSettlements(store, total, `${runId}_${batch}`, batch);
  const batches: Settlement[][] = [];
  for (let offset = 0; offset < total; offset += batch) batches.push(settlements.slice(offset, offset + batch));
  // `writers` loops commit the batches side by side, as that many gateway processes settle into one database.
  let next = 0;
  const writer = async () => {
    for (let taken = batches[next++]; taken !== undefined; taken = batches[next++]) await store.settle(taken);
  };
  const began = performance.now();
  await Promise.all(Array.from({ length: writers }, writer));
  const seconds = (performance.now() - began) / 1000;
  return {
    batch,
    writers,
    through: 'store',
    events: total,
    seconds: round(seconds, 3),
    eventsPerSecond: Math.round(total / seconds),
  };
}

/**
 * Ingest rate of one gateway process: `total` settlements written one by one to a `SettlementWriter` with the
 * options the gateway uses for this store, which batches them and commits them (side by side on PostgreSQL).
 */
async function measureWriterIngest(
  store: Store,
  options: SettlementWriterOptions,
  total: number,
  runId: string,
): Promise<IngestResult> {
  const settlements = await ingestSettlements(store, total, `${runId}_writer`, 7);
  const writer = new SettlementWriter(store, { ...options, maxBuffered: total });
  const began = performance.now();
  const outcomes = await Promise.all(settlements.map((settlement) => writer.write(settlement)));
  const seconds = (performance.now() - began) / 1000;
  await writer.close();
  if (!outcomes.every(Boolean)) throw new Error('the settlement writer dropped settlements');
  return {
    batch: options.maxBatch ?? DEFAULT_SETTLEMENT_BATCH,
    writers: options.concurrency ?? 1,
    through: 'writer',
    events: total,
    seconds: round(seconds, 3),
    eventsPerSecond: Math.round(total / seconds),
  };
}

async function timeIt<T>(run: () => Promise<T>, rounds = 5): Promise<{ timing: Timing; value: T }> {
  const times: number[] = [];
  let value: T | undefined;
  for (let index = 0; index < rounds; index++) {
    const began = performance.now();
    value = await run();
    times.push(performance.now() - began);
  }
  const sorted = [...times].sort((a, b) => a - b);
  return {
    timing: { firstMs: round(times[0]!, 1), medianMs: round(sorted[Math.floor(sorted.length / 2)]!, 1) },
    value: value as T,
  };
}

/** Generates a month of `events` for one tenant in time order, then times the invoice and usage queries. */
async function measureMonth(store: Store, events: number, generationBatch: number, runId: string) {
  const tenantId = `ten_month_${runId}`;
  await store.addWalletTransaction({
    tenantId,
    kind: 'topup',
    amount: 10n ** 17n,
    currency: 'CNY',
    idempotencyKey: `bench-${runId}`,
    note: 'benchmark credit',
    createdAt: MONTH_START + 1000,
  });
  const random = seededRandom(7);
  const spacing = (30 * DAY_MS) / events;
  let generated = 0n;
  let lastReport = performance.now();
  const began = performance.now();
  for (let offset = 0; offset < events; offset += generationBatch) {
    const settlements: Settlement[] = [];
    for (let index = offset; index < Math.min(events, offset + generationBatch); index++) {
      const settlement = makeSettlement(
        `req_${runId}_m_${index}`,
        tenantId,
        KEYS[Math.floor(random() * KEYS.length)]!,
        MODELS[Math.floor(random() * MODELS.length)]!,
        MONTH_START + Math.floor(index * spacing),
        random,
      );
      delete settlement.reservation;
      generated += settlement.rating.amount;
      settlements.push(settlement);
    }
    await store.settle(settlements);
    if (performance.now() - lastReport > 5000) {
      lastReport = performance.now();
      const done = Math.min(events, offset + generationBatch);
      const rate = Math.round(done / ((lastReport - began) / 1000));
      process.stderr.write(
        `  ${store.kind}: ${done.toLocaleString('en')} / ${events.toLocaleString('en')} (${rate}/s)\n`,
      );
    }
  }
  const generationSeconds = (performance.now() - began) / 1000;

  const period = { start: MONTH_START, end: MONTH_END };
  const invoice = await timeIt(async () => {
    const rows = await store.queryBillingRollups({ tenantId, ...period });
    const transactions = await store.listWalletTransactions(tenantId, period);
    return {
      rows,
      document: buildInvoice({ tenant: { id: tenantId, name: 'bench' }, currency: 'CNY', period, rows, transactions }),
    };
  });
  const usage1d = await timeIt(() => store.queryUsageRollups({ bucket: '1d', tenantId, ...period }));
  const usage1h = await timeIt(() => store.queryUsageRollups({ bucket: '1h', tenantId, ...period }));
  const invoiceTotal = invoice.value.document.totals.total.exact;
  return {
    events,
    generationBatch,
    generationSeconds: round(generationSeconds, 1),
    generationEventsPerSecond: Math.round(events / generationSeconds),
    invoice: {
      ...invoice.timing,
      rollupRows: invoice.value.rows.length,
      invoiceLines: invoice.value.document.lines.length,
    },
    usage1d: { ...usage1d.timing, rows: usage1d.value.length },
    usage1h: { ...usage1h.timing, rows: usage1h.value.length },
    ledgerCheck: {
      invoiceTotal: invoiceTotal.toString(),
      generatedTotal: generated.toString(),
      equal: invoiceTotal === generated,
    },
  };
}

async function runStore(
  kind: 'sqlite' | 'postgres',
  open: () => Promise<Store>,
  options: LedgerBenchOptions,
  events: number,
): Promise<StoreResult> {
  const runId = Date.now().toString(36);
  const store = await open();
  try {
    await store.migrate();
    if (options.warmupEvents > 0) {
      // The first settlements of a process run cold code (JIT, a new connection's statements and staging tables):
      // without this, whichever batch size comes first looks slower than it is.
      process.stderr.write(`${kind}: warm-up, ${options.warmupEvents.toLocaleString('en')} events\n`);
      await measureIngest(store, WARMUP_BATCH, options.warmupEvents, `${runId}w`);
    }
    const ingest = [];
    for (const writers of kind === 'sqlite' ? [1] : options.writers) {
      for (const batch of options.batches) {
        process.stderr.write(`${kind}: ingest, batches of ${batch}, ${writers} writer(s)\n`);
        ingest.push(await measureIngest(store, batch, options.ingestEvents, `${runId}x${writers}`, writers));
      }
    }
    process.stderr.write(`${kind}: ingest through the gateway's settlement writer\n`);
    const writerOptions = kind === 'postgres' ? POSTGRES_WRITER_OPTIONS : {};
    ingest.push(await measureWriterIngest(store, writerOptions, options.ingestEvents, runId));
    process.stderr.write(`${kind}: generating ${events.toLocaleString('en')} events for one tenant's month\n`);
    const month = await measureMonth(store, events, options.generationBatch, runId);
    return { store: kind, ingest, month };
  } finally {
    await store.close();
  }
}

async function findPostgresUrl(): Promise<string> {
  for (const url of POSTGRES_URLS) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      return url;
    } catch {
      // Try the next candidate; the last failure is reported below.
    } finally {
      await client.end().catch(() => {});
    }
  }
  throw new Error(`PostgreSQL is unreachable at ${POSTGRES_URLS.join(' or ')}; use --skip-postgres`);
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function formatTable(results: readonly StoreResult[]): string {
  const lines = ['| store | measure | value |', '|---|---|---|'];
  for (const result of results) {
    for (const ingest of result.ingest) {
      const how =
        ingest.through === 'writer'
          ? `through the gateway's settlement writer (≤ ${ingest.batch} per commit, ${ingest.writers} side by side)`
          : `batches of ${ingest.batch}, ${ingest.writers} writer${ingest.writers === 1 ? '' : 's'}`;
      lines.push(
        `| ${result.store} | ingest, ${how} (${ingest.events.toLocaleString('en')} events) | ${ingest.eventsPerSecond.toLocaleString('en')} events/s |`,
      );
    }
    const month = result.month;
    lines.push(
      `| ${result.store} | month generation (${month.events.toLocaleString('en')} events, batches of ${month.generationBatch}) | ${month.generationEventsPerSecond.toLocaleString('en')} events/s (${month.generationSeconds} s) |`,
      `| ${result.store} | invoice: billing rollups + buildInvoice (${month.invoice.rollupRows} rows → ${month.invoice.invoiceLines} lines) | median ${month.invoice.medianMs} ms, first ${month.invoice.firstMs} ms |`,
      `| ${result.store} | 30-day usage, 1d buckets (${month.usage1d.rows} rows) | median ${month.usage1d.medianMs} ms, first ${month.usage1d.firstMs} ms |`,
      `| ${result.store} | 30-day usage, 1h buckets (${month.usage1h.rows} rows) | median ${month.usage1h.medianMs} ms, first ${month.usage1h.firstMs} ms |`,
      `| ${result.store} | invoice total = Σ generated events | ${month.ledgerCheck.equal ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const program = new Command()
    .name('ledger-bench')
    .option('--events <n>', 'usage events of the month scenario (SQLite)', parseCount, 10_000_000)
    .option('--pg-events <n>', 'usage events of the month scenario on PostgreSQL (default: --events)', parseCount)
    .option('--ingest-events <n>', 'events per ingest-rate run', parseCount, 200_000)
    .option(
      '--warmup-events <n>',
      'untimed events settled before the ingest-rate runs (0: none)',
      parseCountOrZero,
      20_000,
    )
    .option('--batches <list>', 'batch sizes of the ingest-rate runs', parseList, [500, 2000, 10_000])
    .option('--writers <list>', 'concurrent writers of the PostgreSQL ingest-rate runs', parseList, [1, 2])
    .option('--generation-batch <n>', 'settlements per settle call while generating the month', parseCount, 5000)
    .option('--skip-postgres', 'leave PostgreSQL out', false)
    .option('--skip-sqlite', 'leave SQLite out', false)
    .option('--out <file>', 'JSON output file');
  program.parse();
  const options = program.opts<LedgerBenchOptions>();
  const directory = await mkdtemp(join(tmpdir(), 'tollgate-ledger-bench-'));
  const results: StoreResult[] = [];
  try {
    if (!options.skipSqlite) {
      results.push(
        await runStore(
          'sqlite',
          () => createStore(`sqlite://${join(directory, 'ledger.db')}`),
          options,
          options.events,
        ),
      );
    }
    if (!options.skipPostgres) {
      const baseUrl = await findPostgresUrl();
      const schema = `tg_bench_${Date.now().toString(36)}`;
      try {
        results.push(
          await runStore(
            'postgres',
            () => createStore(`${baseUrl}?schema=${schema}&pool_size=4`),
            options,
            options.pgEvents ?? options.events,
          ),
        );
      } finally {
        const client = new pg.Client({ connectionString: baseUrl });
        await client.connect();
        await client.query(`drop schema if exists "${schema}" cascade`);
        await client.end();
      }
    }
  } finally {
    await rm(directory, { recursive: true, force: true });
  }

  const table = formatTable(results);
  process.stdout.write(`${table}\n`);
  const machine = machineSummary();
  await writeBenchResult('ledger', options.out, { date: new Date().toISOString(), machine, options, results });
}

await main();
