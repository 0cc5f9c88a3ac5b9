/**
 * The store port: everything durable the gateway keeps — tenants, keys, the request log, settings, and the ledger
 * (`LedgerStore`: wallets, usage events, rollups, checkpoints, price versions, budgets). One interface, implemented
 * for SQLite (embedded mode) and PostgreSQL (cluster mode) over one Kysely query layer, and checked by one
 * conformance suite. Times are milliseconds since the Unix epoch; money is `bigint` nano-units (see `LedgerStore`).
 */
import type { LedgerStore } from './ledger-store.js';

/** A customer of the platform. */
export interface TenantRecord {
  /** `ten_…` */
  id: string;
  name: string;
  createdAt: number;
}

/** An API key. The secret itself is never stored, only its SHA-256 hash. */
export interface ApiKeyRecord {
  /** `key_…` */
  id: string;
  tenantId: string;
  name: string | null;
  /** The first characters of the key (`tg-` and 8 more), shown in listings to recognise it. */
  prefix: string;
  /** Hex SHA-256 of the whole key. */
  hash: string;
  /** Public model names the key may use; `null` means all. */
  models: string[] | null;
  expiresAt: number | null;
  revokedAt: number | null;
  createdAt: number;
}

/** What it takes to create a key (the caller generates the secret and hashes it). */
export interface NewApiKey {
  tenantId: string;
  name: string | null;
  prefix: string;
  hash: string;
  models: string[] | null;
  expiresAt: number | null;
}

/** One record per request, success or error: the raw material of metering. */
export interface RequestLogRecord {
  requestId: string;
  tenantId: string | null;
  keyId: string | null;
  /** `chat`, `completions`, `embeddings`, or the route for other requests. */
  endpoint: string;
  /** Public model name as requested. */
  model: string | null;
  /** `upstream/model` that served it. */
  deployment: string | null;
  /** HTTP status returned to the client (200 for a stream that started, even if cut later). */
  status: number;
  /** Error code, when the request failed (also set for a stream cut mid-way). */
  errorCode: string | null;
  stream: boolean;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  /** True when the gateway counted tokens itself because the upstream gave no usage. */
  usageEstimated: boolean;
  /** Received → last byte, ms. */
  latencyMs: number;
  /** Received → first content byte, ms (streams only). */
  ttftMs: number | null;
  /** Upstream attempts made (1 without retries). */
  attempts: number;
  createdAt: number;
  /**
   * What each upstream attempt did (deployment, outcome, timing), as text the request path chooses (JSON).
   * Optional: omitted or null when not recorded; `listRequestLogs` returns the property only when a value is stored.
   */
  attemptLog?: string | null;
}

/** Filter for reading the request log. */
export interface RequestLogQuery {
  tenantId?: string;
  since?: number;
  until?: number;
  /** Default 100. */
  limit?: number;
}

/**
 * One page of a list in creation order, ascending by (`createdAt`, `id`): ties on `createdAt` (rows created in the
 * same millisecond) are broken by `id`.
 */
export interface CreationPageQuery {
  /** The position of the last row already seen: the page holds only rows strictly after it. Default: from the first. */
  after?: { createdAt: number; id: string };
  /** Most rows returned. Default: all. */
  limit?: number;
}

/** The durable state of the gateway. */
export interface Store extends LedgerStore {
  /** `sqlite` or `postgres`. */
  readonly kind: 'sqlite' | 'postgres';
  /** Creates or upgrades the schema. Idempotent; safe to run from several processes. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  createTenant(name: string): Promise<TenantRecord>;
  getTenant(id: string): Promise<TenantRecord | undefined>;
  /** Tenants in creation order; without `page`, all of them. */
  listTenants(page?: CreationPageQuery): Promise<TenantRecord[]>;

  createKey(key: NewApiKey): Promise<ApiKeyRecord>;
  getKey(id: string): Promise<ApiKeyRecord | undefined>;
  findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined>;
  /** The tenant's keys in creation order; without `page`, all of them. */
  listKeys(tenantId: string, page?: CreationPageQuery): Promise<ApiKeyRecord[]>;
  /** Marks the key revoked (idempotent: an already revoked key keeps its first `revokedAt`). */
  revokeKey(id: string, at: number): Promise<ApiKeyRecord | undefined>;

  /**
   * Appends records in one transaction; a record whose `requestId` exists already is ignored. Request-log rows
   * without ledger effects only (migrations, tools): the request path writes them through `settle`.
   */
  insertRequestLogs(records: readonly RequestLogRecord[]): Promise<void>;
  listRequestLogs(query: RequestLogQuery): Promise<RequestLogRecord[]>;

  /** A small key/value table for gateway settings (e.g. whether the demo tenant was created). */
  getSetting(key: string): Promise<string | undefined>;
  /** Sets `key` only if absent; returns true when this call set it. */
  putSettingIfAbsent(key: string, value: string): Promise<boolean>;
  /** Sets `key` to `value`, replacing any previous value. */
  putSetting(key: string, value: string): Promise<void>;
}
