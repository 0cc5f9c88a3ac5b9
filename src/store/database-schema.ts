/**
 * The table layout as Kysely sees it. Column names are snake_case (as in SQL); `KyselyStore` maps rows to the
 * camelCase records of the `Store` port. Times are epoch milliseconds (BIGINT on PostgreSQL, read back as numbers).
 * Booleans are stored as 0/1 integers on both databases so that one query layer serves both without dialect casts.
 */

/** `tenants` */
export interface TenantsTable {
  id: string;
  name: string;
  created_at: number;
}

/** `api_keys` */
export interface ApiKeysTable {
  id: string;
  tenant_id: string;
  name: string | null;
  prefix: string;
  /** Hex SHA-256 of the key; unique index. */
  hash: string;
  /** JSON array of public model names, or null for all models. */
  models: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  created_at: number;
}

/** `request_log` */
export interface RequestLogTable {
  request_id: string;
  tenant_id: string | null;
  key_id: string | null;
  endpoint: string;
  model: string | null;
  deployment: string | null;
  status: number;
  error_code: string | null;
  /** 0 or 1. */
  stream: number;
  prompt_tokens: number;
  cached_tokens: number;
  completion_tokens: number;
  reasoning_tokens: number;
  /** 0 or 1. */
  usage_estimated: number;
  latency_ms: number;
  ttft_ms: number | null;
  attempts: number;
  created_at: number;
  /** Migration 0004: the upstream attempts as text (JSON), or null. */
  attempt_log: string | null;
  // Migration 0006: the request's usage event, rated (`UsageEventsTable`'s own columns); null when it has none.
  /** 0 or 1. */
  batch: number | null;
  currency: string | null;
  price_version: string | null;
  tier: string | null;
  output_condition: string | null;
  input_list_amount: bigint | null;
  cached_list_amount: bigint | null;
  output_list_amount: bigint | null;
  batch_discount: bigint | null;
  off_peak_discount: bigint | null;
  contract_discount: bigint | null;
  volume_discount: bigint | null;
  amount: bigint | null;
  cost: bigint | null;
  detail: string | null;
}

/** `settings` */
export interface SettingsTable {
  key: string;
  value: string;
}

/*
 * Ledger tables (migration 0002). Money columns are nano-units written as `bigint`; they are never read with a
 * plain select (SQLite would return a lossy number past 2^53, this PostgreSQL pool refuses int8 past 2^53): every
 * read casts them to text and parses with `BigInt` (`moneyText` in `kysely-store.ts`), or, on SQLite's fast paths,
 * uses better-sqlite3's `safeIntegers`.
 */

/** `wallets` */
export interface WalletsTable {
  tenant_id: string;
  /** `prepaid` or `postpaid`. */
  mode: string;
  currency: string;
  balance: bigint;
  credit_limit: bigint;
  reserved: bigint;
  updated_at: number;
}

/** `wallet_transactions` */
export interface WalletTransactionsTable {
  id: string;
  tenant_id: string;
  kind: string;
  amount: bigint;
  currency: string;
  /** Unique per tenant (null allowed several times). */
  idempotency_key: string | null;
  note: string | null;
  created_at: number;
}

/** `usage_events`: since migration 0006 a view of the `request_log` rows that have a rated usage event. */
export interface UsageEventsTable {
  request_id: string;
  tenant_id: string;
  key_id: string | null;
  model: string;
  deployment: string | null;
  /** 0 or 1. */
  batch: number;
  received_at: number;
  currency: string;
  price_version: string;
  tier: string;
  output_condition: string | null;
  input_tokens: number;
  cached_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  /** 0 or 1. */
  estimated: number;
  input_list_amount: bigint;
  cached_list_amount: bigint;
  output_list_amount: bigint;
  batch_discount: bigint;
  off_peak_discount: bigint;
  contract_discount: bigint;
  volume_discount: bigint;
  amount: bigint;
  cost: bigint | null;
  /** JSON. */
  detail: string;
}

/** `usage_rollups` (primary key: tenant_id, bucket, bucket_start, key_id, model). */
export interface UsageRollupsTable {
  tenant_id: string;
  /** `1m`, `1h` or `1d`. */
  bucket: string;
  bucket_start: number;
  /** `''` for requests without a key. */
  key_id: string;
  model: string;
  requests: number;
  input_tokens: number;
  cached_tokens: number;
  output_tokens: number;
  amount: bigint;
  /** Σ of the events' costs, events without a cost counting 0. */
  cost: bigint;
}

/** `billing_rollups` (primary key: tenant_id, day, model, currency, price_version, tier, output_condition, batch). */
export interface BillingRollupsTable {
  tenant_id: string;
  /** Epoch ms of the UTC day's start. */
  day: number;
  model: string;
  currency: string;
  price_version: string;
  tier: string;
  /** `''` when no output condition applied. */
  output_condition: string;
  /** 0 or 1. */
  batch: number;
  requests: number;
  input_tokens: number;
  cached_tokens: number;
  output_tokens: number;
  input_list_amount: bigint;
  cached_list_amount: bigint;
  output_list_amount: bigint;
  batch_discount: bigint;
  off_peak_discount: bigint;
  contract_discount: bigint;
  volume_discount: bigint;
  amount: bigint;
  cost: bigint;
}

/** `stream_checkpoints` */
export interface StreamCheckpointsTable {
  request_id: string;
  /** The usage event as JSON, nano amounts as decimal strings. */
  event: string;
  reservation: bigint;
  updated_at: number;
  /** The process holding `reservation` (migration 0008); null: taken without an owner. */
  reservation_owner: string | null;
}

/** `reservation_holds` (migration 0008): what one owner holds reserved on one tenant's wallet. */
export interface ReservationHoldsTable {
  owner_id: string;
  tenant_id: string;
  amount: bigint;
}

/** `reservation_owners` (migration 0008): each owner's last heartbeat. */
export interface ReservationOwnersTable {
  owner_id: string;
  heartbeat_at: number;
}

/** `price_versions` */
export interface PriceVersionsTable {
  id: string;
  effective_from: number;
  document: string;
  created_at: number;
}

/** `budgets` (primary key: scope, scope_id) */
export interface BudgetsTable {
  scope: string;
  scope_id: string;
  tenant_id: string;
  monthly_limit: bigint;
  enforcement: string;
  /** JSON array of percentages. */
  thresholds: string;
  webhook_url: string | null;
  updated_at: number;
}

/** `alert_claims` (primary key: every column) */
export interface AlertClaimsTable {
  scope: string;
  scope_id: string;
  period: string;
  threshold: number;
}

/** Every table of the store. */
export interface DatabaseSchema {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  request_log: RequestLogTable;
  settings: SettingsTable;
  wallets: WalletsTable;
  wallet_transactions: WalletTransactionsTable;
  usage_events: UsageEventsTable;
  usage_rollups: UsageRollupsTable;
  billing_rollups: BillingRollupsTable;
  stream_checkpoints: StreamCheckpointsTable;
  reservation_holds: ReservationHoldsTable;
  reservation_owners: ReservationOwnersTable;
  price_versions: PriceVersionsTable;
  budgets: BudgetsTable;
  alert_claims: AlertClaimsTable;
}
