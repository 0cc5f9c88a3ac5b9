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
}

/** `settings` */
export interface SettingsTable {
  key: string;
  value: string;
}

/** Every table of the store. */
export interface DatabaseSchema {
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  request_log: RequestLogTable;
  settings: SettingsTable;
}
