#!/usr/bin/env node
/** The `tollgate` command line. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { FIRST_INVOICE_MONTH, isInvoiceMonth, LAST_INVOICE_MONTH } from '../billing/invoice/invoice-month.js';
import { ConfigError } from '../config/load-config.js';
import { GatewayError } from '../errors/gateway-error.js';
import type { ServiceClass } from '../scheduling/service-class.js';
import type { OpenAIListPage } from '../store/list-page.js';
import { MAX_PLAN_WEIGHT } from '../tenancy/plan-input.js';
import { DEFAULT_LIST_PAGE, MAX_LIST_PAGE } from '../tenancy/tenant-service.js';
import type {
  AdminClient,
  AdminTarget,
  BillingSettings,
  BillingView,
  BudgetSettings,
  CreditKind,
  KeyLimitsInput,
  PageRequest,
  PlanInput,
  UsagePage,
} from './admin-client.js';
import { registerBatchCommands } from './batch-commands.js';
import { exitQuietlyWhenOutputCloses } from './closed-output.js';

const program = new Command()
  .name('tollgate')
  .description('Self-hosted Model-as-a-Service gateway: OpenAI-compatible API over a fleet of model upstreams.')
  .version('0.1.0')
  .showHelpAfterError()
  // `serve` and `sim-upstream` log to standard output: whether a server should outlive its log reader is not a
  // question a closed pipe should settle by itself. Every other command prints a result and may stop early.
  .hook('preAction', (_program, command) => {
    if (command.name() !== 'serve' && command.name() !== 'sim-upstream') exitQuietlyWhenOutputCloses();
  });

program
  .command('serve')
  .description('Run the gateway (default config: ./tollgate.yaml, or the built-in simulated fleet).')
  .option('-c, --config <path>', 'configuration file (also TOLLGATE_CONFIG)')
  .action(async (options: { config?: string }) => {
    // Loaded by the commands that need them: `--help` and an admin command start without the gateway's modules.
    const { runServer } = await import('../app/run-server.js');
    await runServer(options.config === undefined ? {} : { configPath: options.config });
  });

const targetOptions = (command: Command) =>
  command
    .option('-c, --config <path>', 'configuration file naming the store')
    .option('--url <url>', 'talk to a running gateway instead of the store, e.g. http://127.0.0.1:8080')
    .option('--admin-token <token>', 'admin token for --url (default: <data_dir>/admin-token)');

function targetOf(options: { config?: string; url?: string; adminToken?: string }): AdminTarget {
  return {
    ...(options.config === undefined ? {} : { configPath: options.config }),
    ...(options.url === undefined ? {} : { url: options.url }),
    ...(options.adminToken === undefined ? {} : { adminToken: options.adminToken }),
  };
}

/** Runs `run` on a client of `options`, prints its result (as indented JSON unless `print` says otherwise), closes. */
async function withClient<T>(
  options: AdminTarget,
  run: (client: AdminClient) => Promise<T>,
  print: (result: T) => string = (result) => JSON.stringify(result, null, 2),
) {
  const { openAdminClient } = await import('./admin-client.js');
  const client = await openAdminClient(options);
  try {
    process.stdout.write(`${print(await run(client))}\n`);
  } finally {
    await client.close();
  }
}

/** `--limit` and `--after` of a list command. */
interface PageFlags {
  limit?: number;
  after?: string;
}

const PAGE_FLAGS = '--limit/--after (a list object: {object, data, first_id, last_id, has_more})';

const pageOptions = (command: Command) =>
  command
    .option(
      '--limit <n>',
      `print one page of at most n records (1 to ${MAX_LIST_PAGE}; ${DEFAULT_LIST_PAGE} when only --after is given)`,
      parsePageLimit,
    )
    .option('--after <id>', 'print the page after this id (the last_id of the page before)');

/** Every record as a JSON array; with `--limit` or `--after`, the one page they name as the list object. */
async function listed<V>(
  flags: PageFlags,
  list: (page: PageRequest) => Promise<OpenAIListPage<V>>,
): Promise<V[] | OpenAIListPage<V>> {
  if (flags.limit === undefined && flags.after === undefined) return (await import('./admin-client.js')).listAll(list);
  return list({
    limit: flags.limit ?? DEFAULT_LIST_PAGE,
    ...(flags.after === undefined ? {} : { after: flags.after }),
  });
}

/** `--rpm`, `--tpm`, `--tpd` and `--concurrency` of a plan or a key. */
const limitOptions = (command: Command) =>
  command
    // Only the form is checked here; the range (≥ 1) by the check the admin API uses too.
    .option('--rpm <n>', 'requests per minute (≥ 1)', parseInteger)
    .option('--tpm <n>', 'tokens per minute (≥ 1)', parseInteger)
    .option('--tpd <n>', 'tokens per day (≥ 1)', parseInteger)
    .option('--concurrency <n>', 'concurrent requests (≥ 1)', parseInteger);

/** `--budget` and the options describing the rest of a budget. */
interface BudgetFlags {
  budget: string;
  enforcement?: 'hard' | 'soft';
  thresholds?: number[];
  webhookUrl?: string;
}

/** The options of a budget besides its amount (`--budget`, added by each command: required or not). */
const budgetOptions = (command: Command) =>
  command
    .addOption(
      new Option(
        '--enforcement <kind>',
        'hard refuses requests once the budget is spent, soft only alerts (default hard)',
      ).choices(['hard', 'soft']),
    )
    // Only the form is checked here; the range (1 to 1000, at most 20) by the admin API's check, in both modes.
    .option(
      '--thresholds <list>',
      'comma-separated alert thresholds, percent of the budget (default 50,80,100)',
      parseThresholds,
    )
    .option('--webhook-url <url>', 'where budget alerts are posted (default: logged only)');

/** `values` without the ones left undefined (the options a user did not give). */
function given<T extends Record<string, unknown>>(values: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/** The budget the flags describe, as the admin API takes it. */
function budgetOf(options: BudgetFlags): BudgetSettings {
  return {
    monthly_limit: options.budget,
    ...given({ enforcement: options.enforcement, thresholds: options.thresholds, webhook_url: options.webhookUrl }),
  };
}

const tenants = program.command('tenants').description('Manage tenants.');
targetOptions(tenants.command('create').description('Create a tenant.').argument('<name>', 'tenant name')).action(
  async (name: string, options) => withClient(targetOf(options), (client) => client.createTenant(name)),
);
targetOptions(
  pageOptions(
    tenants
      .command('list')
      .description(`List tenants, oldest first: all of them as a JSON array, or one page with ${PAGE_FLAGS}.`),
  ),
).action(async (options: PageFlags & AdminTarget) =>
  withClient(targetOf(options), (client) => listed(options, (page) => client.listTenants(page))),
);

targetOptions(
  tenants.command('get').description('Show a tenant: id, name, creation time.').argument('<tenant-id>', 'tenant id'),
).action(async (tenantId: string, options) => withClient(targetOf(options), (client) => client.getTenant(tenantId)));

targetOptions(
  tenants
    .command('delete-responses')
    .description(
      'Delete every stored Responses API response and conversation of a tenant (their prompts and answers); prints how many.',
    )
    .argument('<tenant-id>', 'tenant id'),
).action(async (tenantId: string, options) =>
  withClient(targetOf(options), (client) => client.deleteTenantResponses(tenantId)),
);

const keys = program.command('keys').description('Manage API keys.');
targetOptions(
  keys
    .command('create')
    .description('Create an API key (the key is printed once).')
    .requiredOption('--tenant <id>', 'tenant id (ten_…)')
    .option('--name <name>', 'a label for the key')
    .option('--models <list>', 'comma-separated models the key may use (default: all)', (value: string) =>
      value
        .split(',')
        .map((model) => model.trim())
        .filter((model) => model !== ''),
    )
    .option('--expires-at <time>', 'ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z'),
).action(async (options: { tenant: string; name?: string; models?: string[]; expiresAt?: string } & AdminTarget) =>
  withClient(targetOf(options), (client) =>
    client.createKey(options.tenant, {
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(options.models === undefined ? {} : { models: options.models }),
      ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }),
    }),
  ),
);
targetOptions(
  pageOptions(
    keys
      .command('list')
      .description(`List a tenant's keys, oldest first: all of them as a JSON array, or one page with ${PAGE_FLAGS}.`)
      .requiredOption('--tenant <id>', 'tenant id'),
  ),
).action(async (options: { tenant: string } & PageFlags & AdminTarget) =>
  withClient(targetOf(options), (client) => listed(options, (page) => client.listKeys(options.tenant, page))),
);
targetOptions(keys.command('revoke').description('Revoke a key.').argument('<key-id>', 'key id (key_…)')).action(
  async (keyId: string, options) => withClient(targetOf(options), (client) => client.revokeKey(keyId)),
);
targetOptions(
  budgetOptions(
    keys
      .command('budget')
      .description(
        "Show a key's monthly budget, or set it with --budget (replacing the one it has; options left out take " +
          'their defaults), or remove it with --no-budget. Running gateways apply a change at once when made through ' +
          'one (--url) or on a shared store; on an embedded store, within 30 s.',
      )
      .requiredOption('--key <id>', 'key id (key_…)')
      .option('--budget <decimal>', 'monthly budget, currency units, e.g. 100 (replaces the budget)')
      .option('--no-budget', 'remove the monthly budget'),
  ),
).action(async (options: { key: string } & BillingFlags) => {
  const budget = billingBudgetOf(options);
  return withClient(targetOf(options), (client) =>
    budget === undefined
      ? client.keyBudget(options.key)
      : budget === null
        ? client.removeKeyBudget(options.key)
        : client.setKeyBudget(options.key, budget),
  );
});
targetOptions(
  limitOptions(
    keys
      .command('limits')
      .description(
        "Set a key's own limits, on top of its tenant's plan; they replace the ones it has (a limit left out: none " +
          'on the key; no limit given: the key has none of its own). Applied as plans set applies a plan.',
      )
      .requiredOption('--key <id>', 'key id (key_…)'),
  ),
).action(async (options: { key: string } & KeyLimitsInput & AdminTarget) => {
  const limits: KeyLimitsInput = given({
    rpm: options.rpm,
    tpm: options.tpm,
    tpd: options.tpd,
    concurrency: options.concurrency,
  });
  return withClient(targetOf(options), (client) => client.setKeyLimits(options.key, limits));
});

const credits = program.command('credits').description('Manage wallet credits.');
targetOptions(
  credits
    .command('add')
    .description("Write a transaction to a tenant's wallet: a top-up (default), a refund, or an adjustment.")
    .requiredOption('--tenant <id>', 'tenant id')
    .requiredOption(
      '--amount <decimal>',
      'amount in currency units, e.g. 100 or 12.50; an adjustment may be negative (--amount=-5)',
    )
    .addOption(
      new Option('--kind <kind>', 'topup or refund (positive amounts), adjustment (either sign)')
        .choices(['topup', 'refund', 'adjustment'])
        .default('topup'),
    )
    .option('--currency <code>', 'currency (must be the price book currency)', 'CNY')
    .option('--note <text>', 'a note kept with the transaction')
    .option('--idempotency-key <key>', 'retrying with the same key adds the credit once'),
).action(
  async (
    options: {
      tenant: string;
      amount: string;
      kind: CreditKind;
      currency: string;
      note?: string;
      idempotencyKey?: string;
    } & AdminTarget,
  ) =>
    withClient(targetOf(options), (client) =>
      client.addCredits(options.tenant, {
        amount: options.amount,
        kind: options.kind,
        currency: options.currency,
        ...(options.note === undefined ? {} : { note: options.note }),
        ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
      }),
    ),
);

targetOptions(
  program
    .command('usage')
    .description("A tenant's usage in buckets (OpenAI usage-API shape): every bucket from start to end, in one page.")
    .requiredOption('--tenant <id>', 'tenant id')
    .option('--start <time>', 'Unix seconds or ISO 8601 (default: one page of buckets ending now)')
    .option('--end <time>', 'Unix seconds or ISO 8601 (default: now)')
    .option('--bucket <width>', '1m, 1h or 1d', '1d')
    .option('--group-by <fields>', 'comma-separated: model,key'),
).action(
  async (options: { tenant: string; start?: string; end?: string; bucket: string; groupBy?: string } & AdminTarget) => {
    const query: Record<string, string> = { bucket: options.bucket };
    // Default start: one page of buckets ending now (OpenAI's default page: 60 × 1m, 24 × 1h, 7 × 1d).
    // The page starts at the bucket holding `start`, so the last of its buckets is the one holding now.
    const span = { '1m': 59 * 60, '1h': 23 * 3_600, '1d': 6 * 86_400 }[options.bucket] ?? 6 * 86_400;
    const now = Math.floor(Date.now() / 1000);
    query.start = options.start ?? String(now - span);
    // A fixed end: the pages followed below are pages of one query (the server's default end moves with the clock).
    query.end = options.end ?? String(now);
    if (options.groupBy !== undefined) query.group_by = options.groupBy;
    return withClient(targetOf(options), (client) => usageAll(client, options.tenant, query));
  },
);

/** Every bucket of a usage query, following `next_page`, as one page with nothing more to fetch. */
async function usageAll(client: AdminClient, tenantId: string, query: Record<string, string>): Promise<UsagePage> {
  const data: unknown[] = [];
  let page: string | undefined;
  for (;;) {
    const usage = await client.usage(tenantId, page === undefined ? query : { ...query, page });
    data.push(...usage.data);
    if (!usage.has_more || usage.next_page === null) return { object: 'page', data, has_more: false, next_page: null };
    page = usage.next_page;
  }
}

targetOptions(
  program
    .command('invoices')
    .description("A tenant's invoices, one per month with ledger activity, newest first, with the amount due.")
    .requiredOption('--tenant <id>', 'tenant id'),
).action(async (options: { tenant: string } & AdminTarget) =>
  withClient(targetOf(options), (client) => client.listInvoices(options.tenant)),
);

targetOptions(
  program
    .command('invoice')
    .description("A tenant's invoice for a calendar month.")
    .requiredOption('--tenant <id>', 'tenant id')
    .requiredOption('--month <yyyy-mm>', 'calendar month, e.g. 2026-11', parseMonth)
    .option('--format <format>', 'json, csv or html', 'json'),
).action(async (options: { tenant: string; month: string; format: string } & AdminTarget) => {
  if (!['json', 'csv', 'html'].includes(options.format)) throw new InvalidArgumentError('--format: json, csv or html');
  // The invoice as rendered in its format, printed as it is.
  await withClient(
    targetOf(options),
    (client) => client.invoice(options.tenant, options.month, options.format as 'json' | 'csv' | 'html'),
    (text) => text,
  );
});

const billing = program.command('billing').description("Show and set tenants' billing: mode, credit limit, budget.");
targetOptions(
  billing
    .command('show')
    .description("A tenant's balance, billing mode, credit limit and monthly budget (null: none).")
    .requiredOption('--tenant <id>', 'tenant id'),
).action(async (options: { tenant: string } & AdminTarget) =>
  withClient(targetOf(options), (client) => client.billing(options.tenant)),
);
targetOptions(
  budgetOptions(
    billing
      .command('set')
      .description(
        "Set a tenant's billing mode, credit limit or monthly budget; what is not given is kept (a --budget replaces " +
          'the budget whole: its options left out take their defaults). Prints the settings as billing show. Running ' +
          'gateways apply a budget at once when set through one (--url) or on a shared store; on an embedded store, ' +
          'within 30 s.',
      )
      .requiredOption('--tenant <id>', 'tenant id')
      .addOption(
        new Option(
          '--mode <mode>',
          'prepaid spends the balance; postpaid may spend down to minus the credit limit',
        ).choices(['prepaid', 'postpaid']),
      )
      .option('--credit-limit <decimal>', 'postpaid only: how far below zero the balance may go, e.g. 500')
      .option('--budget <decimal>', 'monthly budget, currency units, e.g. 100 (replaces the budget)')
      .option('--no-budget', 'remove the monthly budget'),
  ),
).action(async (options: { tenant: string; mode?: 'prepaid' | 'postpaid'; creditLimit?: string } & BillingFlags) => {
  const budget = billingBudgetOf(options);
  if (options.mode === undefined && options.creditLimit === undefined && budget === undefined) {
    throw new InvalidArgumentError('nothing to set: give --mode, --credit-limit, --budget or --no-budget');
  }
  return withClient(targetOf(options), async (client) =>
    client.setBilling(options.tenant, billingSettingsOf(options, budget, await client.billing(options.tenant))),
  );
});

/** `billing set`'s flags: `budget` is false with `--no-budget`. */
type BillingFlags = Omit<BudgetFlags, 'budget'> & { budget?: string | false } & AdminTarget;

/** The budget `billing set` sends: a new one, null to remove it, undefined to keep it. */
function billingBudgetOf(options: BillingFlags): BudgetSettings | null | undefined {
  const { budget } = options;
  if (budget === false || budget === undefined) {
    const stray = [
      options.enforcement === undefined ? undefined : '--enforcement',
      options.thresholds === undefined ? undefined : '--thresholds',
      options.webhookUrl === undefined ? undefined : '--webhook-url',
    ].find((flag) => flag !== undefined);
    if (stray !== undefined) {
      throw new InvalidArgumentError(`${stray} describes a budget: give it with --budget <decimal>`);
    }
    return budget === false ? null : undefined;
  }
  return budgetOf({ ...options, budget });
}

/**
 * The whole `PUT /tenants/{id}/billing` body (the route takes the mode and credit limit together): what the flags
 * leave out, as it is now.
 */
function billingSettingsOf(
  options: { mode?: 'prepaid' | 'postpaid'; creditLimit?: string },
  budget: BudgetSettings | null | undefined,
  current: BillingView,
): BillingSettings {
  const mode = options.mode ?? (current.mode === 'postpaid' ? 'postpaid' : 'prepaid');
  if (mode === 'prepaid' && options.creditLimit !== undefined) {
    throw new InvalidArgumentError(
      `--credit-limit: a prepaid tenant has none${options.mode === undefined ? ' (add --mode postpaid)' : ''}`,
    );
  }
  return {
    mode,
    ...(mode === 'postpaid' ? { credit_limit: options.creditLimit ?? current.credit_limit } : {}),
    ...(budget === undefined ? {} : { budget }),
  };
}

targetOptions(
  program
    .command('balance')
    .description("A tenant's balance: mode, balance, reserved for requests in flight, credit limit, available.")
    .requiredOption('--tenant <id>', 'tenant id'),
).action(async (options: { tenant: string } & AdminTarget) =>
  withClient(targetOf(options), (client) => client.balance(options.tenant)),
);

const prices = program.command('prices').description('Show and extend the price book.');
targetOptions(
  prices
    .command('list')
    .description('The price book: versions added through the admin API, and those in force and scheduled (id, start).'),
).action(async (options: AdminTarget) => withClient(targetOf(options), (client) => client.prices()));
targetOptions(
  prices
    .command('add')
    .description(
      'Add a price version taking effect in the future, e.g. {id, effective_from, models: {<model>: {input, ' +
        'output}}}. It must price every served model (at "0" to serve one free). Running gateways apply it at once ' +
        'when added through one (--url) or on a shared store; on an embedded store, within 30 s.',
    )
    .requiredOption('--file <path>', 'a JSON or YAML file holding one price version (.json is read as JSON)'),
).action(async (options: { file: string } & AdminTarget) => {
  const version = readDocument(options.file);
  return withClient(targetOf(options), (client) => client.addPriceVersion(version));
});

/** The document in a JSON (`.json`) or YAML file. */
function readDocument(file: string): unknown {
  try {
    const text = readFileSync(file, 'utf8');
    return path.extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (error: unknown) {
    throw new InvalidArgumentError(`--file ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

targetOptions(
  program
    .command('margin')
    .description('Revenue, cost and margin per model over a period, from the billing rollups.')
    .option('--start <time>', 'Unix seconds or ISO 8601 (default: 30 days before the end)')
    .option('--end <time>', 'Unix seconds or ISO 8601 (default: now)'),
).action(async (options: { start?: string; end?: string } & AdminTarget) =>
  withClient(targetOf(options), (client) => client.margin(given({ start: options.start, end: options.end }))),
);

targetOptions(
  program
    .command('fleet')
    .description("A running gateway's deployments and schedulers, live. Needs --url: the store holds no live state."),
).action(async (options: AdminTarget) => withClient(targetOf(options), (client) => client.fleet()));

const batches = program
  .command('batches')
  .description("Every tenant's batches with progress and ETA (operator view; needs --url: progress is live state).");
targetOptions(
  batches
    .command('list')
    .description('Batches, newest first, one page: {object, data, first_id, last_id, has_more}.')
    .option('--tenant <id>', "only this tenant's")
    .option('--limit <n>', 'how many, 1 to 1000 (default 100)', parseInteger)
    .option('--after <batch-id>', 'the page after this batch (the last_id of the page before)'),
).action(async (options: { tenant?: string; limit?: number; after?: string } & AdminTarget) =>
  withClient(targetOf(options), (client) =>
    client.adminBatches(given({ tenantId: options.tenant, limit: options.limit, after: options.after })),
  ),
);
targetOptions(
  batches
    .command('get')
    .description('One batch, with its tenant, progress and ETA.')
    .argument('<batch-id>', 'batch id'),
).action(async (batchId: string, options: AdminTarget) =>
  withClient(targetOf(options), (client) => client.adminBatch(batchId)),
);

registerBatchCommands(program, (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`));

const plans = program.command('plans').description("Manage tenants' plans.");
targetOptions(
  limitOptions(
    plans
      .command('set')
      .description(
        "Set a tenant's plan (limits, allowed service tiers, fair-share weight). Running gateways apply it at once " +
          'when set through one (--url) or on a shared store; on an embedded store, within 5 s.',
      )
      .requiredOption('--tenant <id>', 'tenant id'),
  )
    .option('--tiers <list>', 'comma-separated service tiers: priority,default,flex,batch', parseTiers)
    .option('--weight <w>', `fair-share weight (> 0 and ≤ ${MAX_PLAN_WEIGHT}, e.g. 2 or 0.5)`, parseDecimalNumber),
).action(async (options: { tenant: string } & PlanInput & AdminTarget) => {
  const {
    tenant,
    config: _config,
    url: _url,
    adminToken: _adminToken,
    ...plan
  } = options as typeof options & {
    config?: string;
  };
  return withClient(targetOf(options), (client) => client.setPlan(tenant, plan));
});

function parseThresholds(value: string): number[] {
  return value.split(',').map((threshold) => parseInteger(threshold.trim()));
}

/** A calendar month an invoice can cover: the admin API refuses the others. */
function parseMonth(value: string): string {
  if (!isInvoiceMonth(value)) {
    throw new InvalidArgumentError(
      `expected a calendar month YYYY-MM from ${FIRST_INVOICE_MONTH} to ${LAST_INVOICE_MONTH}`,
    );
  }
  return value;
}

function parseTiers(value: string): ServiceClass[] {
  const tiers = value.split(',').map((tier) => tier.trim());
  const known = ['priority', 'default', 'flex', 'batch'];
  const bad = tiers.find((tier) => !known.includes(tier));
  if (bad !== undefined) throw new InvalidArgumentError(`unknown tier "${bad}" (use ${known.join(', ')})`);
  return tiers as ServiceClass[];
}

program
  .command('sim-upstream')
  .description('Run the simulated replica fleet as a standalone OpenAI-compatible server.')
  .option('--host <host>', 'listen address', '127.0.0.1')
  .option('-p, --port <port>', 'listen port', parseInteger, 8000)
  .option('--replicas <n>', 'replicas', parseInteger, 1)
  .option('--max-batch <n>', 'most sequences decoded at once per replica', parseInteger)
  .action(async (options: { host: string; port: number; replicas: number; maxBatch?: number }) => {
    const { startSimServer } = await import('../upstreams/simulated/sim-server.js');
    const server = await startSimServer({
      host: options.host,
      port: options.port,
      replicas: options.replicas,
      ...(options.maxBatch === undefined ? {} : { profile: { max_batch: options.maxBatch } }),
    });
    process.stdout.write(`Simulated upstream listening on ${server.url}\n`);
    const stop = () => void server.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });

/** Digits only: `Number` would also take `1e2`, `0x10`, ` 5` or an empty string. */
function parseInteger(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(parsed)) {
    throw new InvalidArgumentError('expected a non-negative integer');
  }
  return parsed;
}

/** A plain decimal such as `2`, `0.5` or `-3` (`parseFloat` would read `abc` as NaN and `2x` as 2). */
function parseDecimalNumber(value: string): number {
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(value)) throw new InvalidArgumentError('expected a number, e.g. 2 or 0.5');
  return Number(value);
}

function parsePageLimit(value: string): number {
  const parsed = parseInteger(value);
  if (parsed < 1 || parsed > MAX_LIST_PAGE) {
    throw new InvalidArgumentError(`expected an integer from 1 to ${MAX_LIST_PAGE}`);
  }
  return parsed;
}

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
  } else if (error instanceof GatewayError) {
    // As `--url` reports the admin API's answer, so both modes print the same refusal.
    process.stderr.write(`tollgate: ${error.status} ${error.code}: ${error.message}\n`);
  } else {
    process.stderr.write(`tollgate: ${error instanceof Error ? error.message : String(error)}\n`);
  }
  process.exit(1);
});
