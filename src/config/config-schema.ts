/**
 * The configuration file's schema (`tollgate.yaml`), the single source of the parsed `Config` type.
 * Keys are snake_case as written in YAML; every option documents its default and unit.
 */
import { type Static, Type } from '@sinclair/typebox';
import { PriceBookSchema } from '../pricing/price-book.js';

const PositiveInt = (description: string, defaultValue?: number) =>
  Type.Integer({ minimum: 1, description, ...(defaultValue === undefined ? {} : { default: defaultValue }) });
const NonNegativeNumber = (description: string, defaultValue: number) =>
  Type.Number({ minimum: 0, description, default: defaultValue });

/** Name of an upstream or model: letters, digits, `.`, `_`, `-`, `:` and `/`. */
const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$', description: 'An identifier.' });

/** The simulated replica's performance profile (see DESIGN.md, "The simulated replica"). */
export const SimulatedProfileSchema = Type.Object(
  {
    /** Prefill time per prompt token, µs. Default 17. */
    t_prefill_us: NonNegativeNumber('Prefill time per prompt token, microseconds.', 17),
    /** Fixed time of one decode step, ms. Default 3.4. */
    t_fixed_ms: NonNegativeNumber('Fixed time of one decode step, milliseconds.', 3.4),
    /** Extra step time per running sequence, ms. Default 0.055. */
    t_seq_ms: NonNegativeNumber('Extra decode step time per running sequence, milliseconds.', 0.055),
    /** Most sequences decoded at once. Default 64. */
    max_batch: PositiveInt('Most sequences decoded at once.', 64),
    /** KV-cache capacity in tokens (prompt + output of running sequences). Default 262144. */
    kv_tokens: PositiveInt('KV-cache capacity, tokens.', 262_144),
    /**
     * Chunked prefill: most prompt tokens prefilled in one step. Running decodes always take their step; prompt chunks
     * of the sequences still in prefill fill this budget (SGLang's `chunked_prefill_size`, vLLM's token budget).
     * 0: every joining prompt is prefilled whole in its first step. Default 0.
     */
    prefill_chunk_tokens: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'Most prompt tokens prefilled per step (chunked prefill); 0 disables chunking.',
    }),
    /**
     * Under the `priority` policy, most prompt tokens per step prefilled for background requests (priority > 0), so
     * their prefill never stretches a step by more than this (an SLO-aware offline budget, as in HyGen); foreground
     * requests (priority ≤ 0) are served first and only `prefill_chunk_tokens` limits them. 0: no separate limit.
     * Default 0.
     */
    background_prefill_tokens: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'Most background (priority > 0) prompt tokens prefilled per step; 0 for no separate limit.',
    }),
    /**
     * Order in which waiting requests join and prefill: `fcfs` (arrival order) or `priority` (a request's `priority`,
     * lower first, then arrival; vLLM's `--scheduling-policy priority`). Default `fcfs`.
     */
    scheduling_policy: Type.Union([Type.Literal('fcfs'), Type.Literal('priority')], {
      default: 'fcfs',
      description: 'fcfs, or priority (lower priority value first).',
    }),
  },
  { additionalProperties: false, default: {} },
);

/** Timeouts of an HTTP upstream, ms. */
export const UpstreamTimeoutsSchema = Type.Object(
  {
    /** TCP/TLS connect timeout, ms. Default 5000. */
    connect_ms: PositiveInt('Connect timeout, milliseconds.', 5_000),
    /** Time from sending the request to the response headers, ms. Default 60000. */
    first_byte_ms: PositiveInt('Time to response headers, milliseconds.', 60_000),
    /** Longest silence inside a streamed or whole body, ms. Default 60000. */
    idle_ms: PositiveInt('Longest silence while reading the body, milliseconds.', 60_000),
  },
  { additionalProperties: false, default: {} },
);

/** The built-in replica model, in process. */
export const SimulatedUpstreamSchema = Type.Object(
  {
    name: Name,
    type: Type.Literal('simulated'),
    /** Number of replicas behind this upstream. Default 1. */
    replicas: PositiveInt('Number of replicas.', 1),
    profile: SimulatedProfileSchema,
  },
  { additionalProperties: false },
);

/** Any server that speaks the OpenAI HTTP API (vLLM, SGLang, Ollama, llama.cpp, DeepSeek, Ark, OpenAI …). */
export const OpenAIUpstreamSchema = Type.Object(
  {
    name: Name,
    type: Type.Literal('openai'),
    /** Base URL including the version path, e.g. `http://127.0.0.1:8000/v1`. */
    base_url: Type.String({ pattern: '^https?://', description: 'Base URL, e.g. http://127.0.0.1:8000/v1.' }),
    /** Name of the environment variable that holds the upstream's API key. Secrets never live in this file. */
    api_key_env: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
    /** Keep-alive connections in the pool. Default 128. */
    connections: PositiveInt('Keep-alive connections to the upstream.', 128),
    timeouts: UpstreamTimeoutsSchema,
    /**
     * Send each request's service class as the body's `priority` (vLLM started with `--scheduling-policy
     * priority`: lower runs first), replacing any `priority` the client sent. Default false: most servers refuse
     * the field.
     */
    send_priority: Type.Boolean({ default: false }),
  },
  { additionalProperties: false },
);

export const UpstreamConfigSchema = Type.Union([SimulatedUpstreamSchema, OpenAIUpstreamSchema]);

/** One place a public model is served. */
export const DeploymentSchema = Type.Object(
  {
    /** Name of an upstream in `upstreams`. */
    upstream: Name,
    /** The model id the upstream knows. */
    model: Type.String({ minLength: 1 }),
    /**
     * What the deployment can run at once. Default: for a simulated upstream, replicas × `max_batch` sequences and
     * replicas × `kv_tokens` tokens; for an OpenAI-compatible one, 256 sequences and 1,048,576 tokens.
     */
    capacity: Type.Optional(
      Type.Object(
        {
          sequences: Type.Optional(PositiveInt('Concurrent sequences.')),
          tokens: Type.Optional(PositiveInt('Tokens in flight (prompt + max output).')),
        },
        { additionalProperties: false },
      ),
    ),
    /** Routing weight among the model's deployments. Default 1. */
    weight: Type.Number({ exclusiveMinimum: 0, default: 1 }),
  },
  { additionalProperties: false },
);

/** Service classes, highest first. */
const ServiceClassName = Type.Union([
  Type.Literal('priority'),
  Type.Literal('default'),
  Type.Literal('flex'),
  Type.Literal('batch'),
]);

/** Rate limits; an absent field is unlimited. */
export const LimitsSchema = Type.Object(
  {
    /** Requests per minute. */
    rpm: Type.Optional(PositiveInt('Requests per minute.')),
    /** Tokens per minute (input + output; estimated at admission, reconciled after). */
    tpm: Type.Optional(PositiveInt('Tokens per minute.')),
    /** Tokens per UTC day. */
    tpd: Type.Optional(PositiveInt('Tokens per day.')),
    /** Requests in flight at once. */
    concurrency: Type.Optional(PositiveInt('Concurrent requests.')),
  },
  { additionalProperties: false },
);

/** What a tenant's plan grants. */
export const PlanSchema = Type.Object(
  {
    ...LimitsSchema.properties,
    /** Service classes the plan may use; a request asking for another is downgraded. Default default, flex, batch. */
    tiers: Type.Array(ServiceClassName, { default: ['default', 'flex', 'batch'], minItems: 1 }),
    /** Fair-share weight. Default 1. */
    weight: Type.Number({ exclusiveMinimum: 0, default: 1 }),
  },
  { additionalProperties: false },
);

/** A public model name and where it runs. */
export const ModelConfigSchema = Type.Object(
  {
    name: Name,
    /** Context window in tokens (prompt + output). */
    context_window: PositiveInt('Context window, tokens.'),
    /** Output cap, tokens: used when a request sets no `max_tokens`. Default: 8192 or the context window if smaller. */
    max_output_tokens: Type.Optional(PositiveInt('Output cap, tokens.')),
    /** Embedding models answer `/v1/embeddings` only. Default `chat`. */
    kind: Type.Union([Type.Literal('chat'), Type.Literal('embedding')], { default: 'chat' }),
    deployments: Type.Array(DeploymentSchema, { minItems: 1 }),
  },
  { additionalProperties: false },
);

/** Wallet defaults and billing behaviour. */
export const BillingConfigSchema = Type.Object(
  {
    /** How new tenants pay. Default `prepaid` (a wallet that must be topped up). */
    new_tenant_mode: Type.Union([Type.Literal('prepaid'), Type.Literal('postpaid')], { default: 'prepaid' }),
    /** Credit limit of new postpaid tenants, currency units (decimal string). Default "0". */
    new_tenant_credit_limit: Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?$', default: '0' }),
    /** Credit given to the demo tenant on first start, currency units. Default "10". */
    demo_credit: Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?$', default: '10' }),
    /** How often in-flight streams checkpoint their delivered tokens, ms. Default 1000. */
    checkpoint_interval_ms: PositiveInt('Stream checkpoint interval, milliseconds.', 1000),
    reservation_owner_timeout_ms: PositiveInt(
      'With several processes on one store: how long a process may go without a heartbeat before the others release its wallet reservations, milliseconds.',
      30_000,
    ),
    lease_return_timeout_ms: PositiveInt(
      'With several processes on one store: how long a process about to refuse a request for want of funds waits for the others to give back the wallet funds they leased and do not use, milliseconds.',
      250,
    ),
    /** Environment variable holding the secret that signs budget-alert webhooks. */
    webhook_secret_env: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
  },
  { additionalProperties: false, default: {} },
);

/** A daily UTC window, `[start, end)`; `end` before `start` crosses midnight. */
const DailyWindowSchema = Type.Object(
  {
    /** Start, `HH:MM` UTC, inclusive. */
    start: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'Start, HH:MM UTC, inclusive.' }),
    /** End, `HH:MM` UTC, exclusive. */
    end: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'End, HH:MM UTC, exclusive.' }),
  },
  { additionalProperties: false },
);

/** The Files and Batches API and the batch runner. */
export const BatchConfigSchema = Type.Object(
  {
    /** Completion windows clients may ask for (`<n>s`, `<n>m`, `<n>h` or `<n>d`). Default ["24h"]. */
    completion_windows: Type.Array(Type.String({ pattern: '^[1-9][0-9]{0,5}[smhd]$' }), {
      minItems: 1,
      default: ['24h'],
    }),
    /** Largest uploaded file, bytes. Default 200 MiB. */
    max_file_bytes: PositiveInt('Largest uploaded file, bytes.', 200 * 1024 * 1024),
    /** Largest input line of a batch, bytes. Default 1 MiB. */
    max_line_bytes: PositiveInt('Largest batch input line, bytes.', 1024 * 1024),
    /** Most lines in one batch input file. Default 50000. */
    max_lines: PositiveInt('Most lines per batch.', 50_000),
    /** Lines outstanding (queued in the scheduler or running) across all batches. Default 64. */
    concurrency: PositiveInt('Batch lines outstanding across all batches.', 64),
    /** Lines outstanding per batch. Default 32. */
    batch_concurrency: PositiveInt('Batch lines outstanding per batch.', 32),
    /** Daily UTC windows in which batch may use more of the fleet. Default none. */
    off_peak: Type.Array(DailyWindowSchema, { default: [] }),
    /** Factor applied to both concurrency limits inside an off-peak window. Default 2. */
    off_peak_concurrency_factor: Type.Number({ minimum: 1, maximum: 64, default: 2 }),
    /**
     * Share of a model's capacity batch lines may use inside an off-peak window, 0–1 (capped at the `default`
     * class's 0.95, so online traffic keeps its headroom). Default 0.92; outside the windows
     * `scheduling.low_class_ceiling` applies.
     */
    off_peak_ceiling: Type.Number({ minimum: 0.05, maximum: 1, default: 0.92 }),
    /** How often the runner looks for work when idle, ms. Default 250. */
    poll_interval_ms: PositiveInt('Batch runner poll interval, milliseconds.', 250),
  },
  { additionalProperties: false, default: {} },
);

export const ConfigSchema = Type.Object(
  {
    server: Type.Object(
      {
        /** Listen address. Default 127.0.0.1. Env `TOLLGATE_HOST`. */
        host: Type.String({ default: '127.0.0.1', minLength: 1 }),
        /** Listen port. Default 8080. Env `TOLLGATE_PORT`. */
        port: Type.Integer({ minimum: 0, maximum: 65_535, default: 8080 }),
        /** Largest accepted request body, bytes. Default 8 MiB. */
        body_limit_bytes: PositiveInt('Largest accepted request body, bytes.', 8 * 1024 * 1024),
        /** Worker processes sharing the port (embedded mode). Default 1. */
        workers: PositiveInt('Worker processes sharing the listen port.', 1),
        /**
         * On SIGTERM or SIGINT, how long requests in flight may run on while no new one is taken, ms; those still
         * running then are cut as if their clients had left (billed for what was delivered, logged). Keep it below
         * the time the process manager waits before it kills (Kubernetes: `terminationGracePeriodSeconds`, 30 s by
         * default). Default 25000.
         */
        shutdown_grace_ms: Type.Integer({
          minimum: 0,
          default: 25_000,
          description: 'How long requests in flight may finish after SIGTERM/SIGINT, milliseconds.',
        }),
        /**
         * Cross-origin requests from web pages (CORS). Default: no origin, so browsers refuse to let a page read any
         * answer and their preflights fail; servers and SDKs outside a browser are not affected.
         */
        cors: Type.Object(
          {
            /**
             * Origins whose pages may call the API, exactly as browsers send them (`https://app.example.com`,
             * `http://localhost:5173`: scheme, host and port, no path), or `*` for any page.
             */
            origins: Type.Array(
              Type.String({
                pattern: '^(\\*|https?://[^/?#\\s]+)$',
                description: 'An origin (scheme://host[:port], no path) or *.',
              }),
              { default: [] },
            ),
            /** How long a browser may reuse a preflight's answer, seconds. Default 600. */
            max_age_s: Type.Integer({ minimum: 0, default: 600, description: 'Preflight cache lifetime, seconds.' }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    store: Type.Object(
      {
        /** `sqlite://PATH` (relative to the working directory) or `postgres://…`. Default `sqlite://<data_dir>/tollgate.db`. */
        url: Type.Optional(Type.String({ pattern: '^(sqlite|postgres|postgresql)://' })),
      },
      { additionalProperties: false, default: {} },
    ),
    /** Directory for the embedded store and generated secrets. Default `./data`. Env `TOLLGATE_DATA_DIR`. */
    data_dir: Type.String({ default: './data', minLength: 1 }),
    log: Type.Object(
      {
        /** pino level. Default `info`. */
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
          { default: 'info' },
        ),
        /** Log one line per request. Default true. */
        requests: Type.Boolean({ default: true }),
        /**
         * Log errors whole: their messages, stacks and every field. Default false: quoted text (the JSON a parser
         * failed on, the value a database refused) is cut from messages, and fields that may carry data are dropped.
         */
        verbatim_errors: Type.Boolean({ default: false }),
      },
      { additionalProperties: false, default: {} },
    ),
    /**
     * How long a process trusts what it read of the store on the request path. Changes made through any process are
     * heard at once (the invalidation bus); these lifetimes bound how long one it did not hear goes unseen (a
     * `tollgate keys revoke` run against the SQLite file of a running gateway, a message lost while a bus was down),
     * against one store read per entry and lifetime.
     */
    cache: Type.Object(
      {
        /** API keys (valid or revoked), tenants' plans and keys' limits, ms; 0 reads the store on every request. Default 5000. */
        ttl_ms: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 5000, description: 'Milliseconds.' }),
        /** A key no one has (a mistyped or made-up one), ms; 0 reads the store every time. Default 1000. */
        unknown_key_ttl_ms: Type.Integer({
          minimum: 0,
          maximum: 3_600_000,
          default: 1000,
          description: 'Milliseconds.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    upstreams: Type.Array(UpstreamConfigSchema, { minItems: 1 }),
    models: Type.Array(ModelConfigSchema, { minItems: 1 }),
    /** The price book. Without it nothing is rated or charged (usage is still metered). */
    pricing: Type.Optional(PriceBookSchema),
    billing: BillingConfigSchema,
    /** The plan of tenants without their own (`PUT /admin/v1/tenants/{id}/plan`). Default: unlimited, no priority. */
    default_plan: Type.Object(PlanSchema.properties, { additionalProperties: false, default: {} }),
    admission: Type.Object(
      {
        /** Where rate-limit counters live: `memory` (one process) or `redis` (shared by every process). */
        store: Type.Union([Type.Literal('memory'), Type.Literal('redis')], { default: 'memory' }),
        /** Redis URL for `store: redis`. Default redis://127.0.0.1:6379. */
        redis_url: Type.String({ default: 'redis://127.0.0.1:6379', pattern: '^rediss?://' }),
        /** When Redis is unreachable: `closed` refuses (503), `open` falls back to per-process limits. */
        failure_policy: Type.Union([Type.Literal('closed'), Type.Literal('open')], { default: 'closed' }),
        /**
         * A Redis command slower than this counts as an outage, ms. Default 1000: high enough that a busy event loop
         * on a loaded host is not mistaken for a dead Redis.
         */
        command_timeout_ms: PositiveInt('Redis command timeout, milliseconds.', 1000),
      },
      { additionalProperties: false, default: {} },
    ),
    scheduling: Type.Object(
      {
        /** Queue by service class with fair share and shedding. Default true; false dispatches at once. */
        enabled: Type.Boolean({ default: true }),
        /** Longest queue wait per class, ms. Defaults: priority 1000, default 5000, flex 60000, batch none. */
        max_queue_wait_ms: Type.Optional(
          Type.Object(
            {
              priority: Type.Optional(PositiveInt('ms')),
              default: Type.Optional(PositiveInt('ms')),
              flex: Type.Optional(PositiveInt('ms')),
              batch: Type.Optional(PositiveInt('ms')),
            },
            { additionalProperties: false },
          ),
        ),
        /**
         * Share of capacity batch may use, 0–1. Default 0.85 (the last 15% stays free for bursts). Flex may use
         * halfway from this to the default class's 0.95 (0.90 by default), so deadline-promoted batch lines gain room.
         */
        low_class_ceiling: Type.Number({ minimum: 0.05, maximum: 1, default: 0.85 }),
        /**
         * Load-aware headroom for batch: besides its ceiling, batch leaves `minimum_sequences` plus
         * `per_online_sequence` × (online sequences running) slots free, so it steps back at the online peak and fills
         * the trough. Default off (the fixed ceiling alone). `bench:batch` uses `{ per_online_sequence: 0.3 }`.
         */
        online_headroom: Type.Optional(
          Type.Object(
            {
              per_online_sequence: Type.Number({ minimum: 0, maximum: 10 }),
              minimum_sequences: Type.Optional(Type.Number({ minimum: 0 })),
            },
            { additionalProperties: false },
          ),
        ),
        /**
         * How often upstreams' reported load (running/waiting) refines each model's capacity, ms; 0 disables.
         * Default 2000.
         */
        capacity_refresh_ms: Type.Integer({ minimum: 0, default: 2000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    batch: BatchConfigSchema,
    /** The Responses API's stored responses (`store`, `previous_response_id`, `GET /v1/responses/{id}`). */
    responses: Type.Object(
      {
        /**
         * Whether responses are stored (unless a request says `store: false`). They hold prompts and answers: turn
         * it off where they must not be kept; `previous_response_id` is then refused. Default true, as on OpenAI.
         */
        store: Type.Boolean({ default: true, description: 'Whether Responses API responses are stored.' }),
        /** How long a stored response is kept, days. Default 30, as on OpenAI. */
        retention_days: PositiveInt('How long a stored response is kept, days.', 30),
        /**
         * How long a background response (`background: true`) refused by a rate limit or an overloaded fleet keeps
         * trying before it fails, minutes. Default 15.
         */
        background_retry_minutes: PositiveInt(
          'How long a background response waits out rate limits and an overloaded fleet, minutes.',
          15,
        ),
        /**
         * The most background responses one gateway process runs at once (each holds memory and may wait out limits
         * for minutes); past it a create is a 429 `too_many_background_responses`. Default 1,000.
         */
        background_max_runs: PositiveInt('The most background responses one gateway process runs at once.', 1_000),
        /** The most of one tenant in one process. Default 100. */
        background_max_runs_per_tenant: PositiveInt(
          'The most background responses of one tenant one gateway process runs at once.',
          100,
        ),
        /**
         * Environment variable holding the secret that seals compaction summaries (`/v1/responses/compact`), at least
         * 32 characters; several, comma-separated, to replace one: the first seals, every one opens. Without it, one
         * is generated once and kept in the store, which every process on it shares.
         */
        compaction_secret_env: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
      },
      { additionalProperties: false, default: {} },
    ),
    routing: Type.Object(
      {
        /** `least_outstanding` (default) or `cost` (cheapest deployment with free capacity). */
        strategy: Type.Union([Type.Literal('least_outstanding'), Type.Literal('cost')], {
          default: 'least_outstanding',
        }),
        /** Attempts on different deployments before the first byte. Default 3. */
        max_attempts: PositiveInt('Attempts per request.', 3),
        /** Active health probe period, ms; 0 disables. Default 10000. */
        probe_interval_ms: Type.Integer({ minimum: 0, default: 10_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

/** The parsed, defaulted, validated configuration file. */
export type Config = Static<typeof ConfigSchema>;
export type UpstreamConfig = Static<typeof UpstreamConfigSchema>;
export type SimulatedUpstreamConfig = Static<typeof SimulatedUpstreamSchema>;
export type OpenAIUpstreamConfig = Static<typeof OpenAIUpstreamSchema>;
export type SimulatedProfile = Static<typeof SimulatedProfileSchema>;
export type ModelConfig = Static<typeof ModelConfigSchema>;
export type BatchConfig = Static<typeof BatchConfigSchema>;
