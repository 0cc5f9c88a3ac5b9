import { type Clock, RealClock } from '../clock/clock.js';
import { InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import { type ListPage, pageOf } from '../store/list-page.js';
import type { ApiKeyRecord, CreationPageQuery, Store, TenantRecord } from '../store/store.js';
import { generateApiKey } from './api-key.js';
import type { InvalidationBus } from './invalidation-bus.js';

/** Longest tenant or key name, characters. */
const MAX_NAME_LENGTH = 200;
/** Most models one key may list. */
const MAX_MODELS = 1000;

/** What a caller may set on a new key. */
export interface CreateKeyOptions {
  /** A label for humans. Default none. */
  name?: string | null;
  /** Public model names the key may use. Default: all models (`null`). */
  models?: readonly string[] | null;
  /** Epoch ms at which the key stops working; must be in the future. Default: never (`null`). */
  expiresAt?: number | null;
}

/** A created key: the record and the secret, which is shown once and never stored. */
export interface CreatedKey {
  record: ApiKeyRecord;
  key: string;
}

/** Options of `TenantService`. */
export interface TenantServiceOptions {
  /** Where revocations are announced so every `KeyService` cache drops the key at once. */
  bus: InvalidationBus;
  /** Time source for `revokedAt` and the expiry check. Default: the wall clock. */
  clock?: Clock;
}

/** The JSON shape of a key in API responses (no hash, no secret; times in epoch seconds like OpenAI's `created_at`). */
export interface PublicKeyView {
  id: string;
  object: 'api_key';
  tenant_id: string;
  name: string | null;
  prefix: string;
  models: string[] | null;
  expires_at: number | null;
  revoked_at: number | null;
  created_at: number;
}

/** The JSON shape of a tenant in API responses (times in epoch seconds). */
export interface PublicTenantView {
  id: string;
  object: 'tenant';
  name: string;
  created_at: number;
}

/** Default page size of the admin lists of tenants and keys. */
export const DEFAULT_LIST_PAGE = 100;
/** Largest page size of the admin lists of tenants and keys. */
export const MAX_LIST_PAGE = 1000;

/** Which page of a list in creation order (oldest first) to return. */
export interface ListPageOptions {
  /** Id of the last record of the previous page; the page starts right after it. Default: from the first record. */
  after?: string;
  /** Most records in the page, at least 1. */
  limit: number;
}

/** Tenants and their API keys: the administration side of tenancy (authentication is `KeyService`). */
export class TenantService {
  private readonly bus: InvalidationBus;
  private readonly clock: Clock;

  constructor(
    private readonly store: Store,
    options: TenantServiceOptions,
  ) {
    this.bus = options.bus;
    this.clock = options.clock ?? new RealClock();
  }

  async createTenant(name: string): Promise<TenantRecord> {
    return this.store.createTenant(validateName(name, 'name', { required: true }));
  }

  /**
   * One page of tenants, oldest first. An `after` that names no tenant is an `InvalidRequestError` (param `after`):
   * tenants are never deleted, so such a cursor is always a mistake, never the end of the list.
   */
  async listTenants(page: ListPageOptions): Promise<ListPage<TenantRecord>> {
    let after: TenantRecord | undefined;
    if (page.after !== undefined) {
      after = await this.store.getTenant(page.after);
      if (after === undefined) throw invalidCursor(`No tenant with id "${page.after}" to list after.`);
    }
    return pageOf(await this.store.listTenants({ ...cursorOf(after), limit: page.limit + 1 }), page.limit);
  }

  /** The tenant, or `undefined` when there is none with this id. */
  getTenant(id: string): Promise<TenantRecord | undefined> {
    return this.store.getTenant(id);
  }

  /** Creates a key for `tenantId`; throws `NotFoundError` `tenant_not_found` or `InvalidRequestError`. */
  async createKey(tenantId: string, options: CreateKeyOptions = {}): Promise<CreatedKey> {
    const name =
      options.name === undefined || options.name === null ? null : validateName(options.name, 'name') || null;
    const models = validateModels(options.models);
    const expiresAt = this.validateExpiresAt(options.expiresAt);
    await this.requireTenant(tenantId);
    const generated = generateApiKey();
    const record = await this.store.createKey({
      tenantId,
      name,
      prefix: generated.prefix,
      hash: generated.hash,
      models,
      expiresAt,
    });
    return { record, key: generated.key };
  }

  /**
   * One page of a tenant's keys, oldest first (revoked ones included). Throws `NotFoundError` `tenant_not_found`, and
   * `InvalidRequestError` (param `after`) when `after` names no key of this tenant: keys are never deleted.
   */
  async listKeys(tenantId: string, page: ListPageOptions): Promise<ListPage<ApiKeyRecord>> {
    await this.requireTenant(tenantId);
    let after: ApiKeyRecord | undefined;
    if (page.after !== undefined) {
      after = await this.store.getKey(page.after);
      if (after === undefined || after.tenantId !== tenantId) {
        throw invalidCursor(`No API key with id "${page.after}" in tenant "${tenantId}" to list after.`);
      }
    }
    return pageOf(await this.store.listKeys(tenantId, { ...cursorOf(after), limit: page.limit + 1 }), page.limit);
  }

  /**
   * Revokes a key and announces it on the bus before returning, so no cache in this process accepts it afterwards.
   * Idempotent (the first `revokedAt` stays). With `tenantId`, a key of another tenant is reported as not found and
   * left alone. Throws `NotFoundError` `key_not_found`.
   */
  async revokeKey(keyId: string, options: { tenantId?: string } = {}): Promise<ApiKeyRecord> {
    if (options.tenantId !== undefined) {
      const existing = await this.store.getKey(keyId);
      if (existing === undefined || existing.tenantId !== options.tenantId) throw keyNotFound(keyId);
    }
    const record = await this.store.revokeKey(keyId, Math.floor(this.clock.now()));
    if (record === undefined) throw keyNotFound(keyId);
    await this.bus.publish(keyId);
    return record;
  }

  private async requireTenant(tenantId: string): Promise<TenantRecord> {
    const tenant = await this.store.getTenant(tenantId);
    if (tenant === undefined) {
      throw new NotFoundError(`No tenant with id "${tenantId}".`, 'tenant_not_found', { param: 'tenant_id' });
    }
    return tenant;
  }

  private validateExpiresAt(expiresAt: number | null | undefined): number | null {
    if (expiresAt === undefined || expiresAt === null) return null;
    if (!Number.isSafeInteger(expiresAt)) {
      throw new InvalidRequestError('expires_at must be an integer time in epoch milliseconds.', {
        param: 'expires_at',
        code: 'invalid_expires_at',
      });
    }
    if (expiresAt <= this.clock.now()) {
      throw new InvalidRequestError('expires_at must be in the future.', {
        param: 'expires_at',
        code: 'invalid_expires_at',
      });
    }
    return expiresAt;
  }
}

/** The API view of a key: never the hash. */
export function publicKeyView(record: ApiKeyRecord): PublicKeyView {
  return {
    id: record.id,
    object: 'api_key',
    tenant_id: record.tenantId,
    name: record.name,
    prefix: record.prefix,
    models: record.models === null ? null : [...record.models],
    expires_at: toEpochSeconds(record.expiresAt),
    revoked_at: toEpochSeconds(record.revokedAt),
    created_at: Math.floor(record.createdAt / 1000),
  };
}

/** The API view of a tenant. */
export function publicTenantView(record: TenantRecord): PublicTenantView {
  return { id: record.id, object: 'tenant', name: record.name, created_at: Math.floor(record.createdAt / 1000) };
}

function toEpochSeconds(ms: number | null): number | null {
  return ms === null ? null : Math.floor(ms / 1000);
}

/** The store's position of the record a page starts after. */
function cursorOf(record: { createdAt: number; id: string } | undefined): CreationPageQuery {
  return record === undefined ? {} : { after: { createdAt: record.createdAt, id: record.id } };
}

function invalidCursor(message: string): InvalidRequestError {
  return new InvalidRequestError(message, { param: 'after', code: 'invalid_value' });
}

function keyNotFound(keyId: string): NotFoundError {
  return new NotFoundError(`No API key with id "${keyId}".`, 'key_not_found', { param: 'key_id' });
}

function validateName(name: unknown, param: string, options: { required?: boolean } = {}): string {
  if (typeof name !== 'string') {
    throw new InvalidRequestError(`${param} must be a string.`, { param, code: 'invalid_name' });
  }
  const trimmed = name.trim();
  if ((options.required === true && trimmed === '') || trimmed.length > MAX_NAME_LENGTH) {
    throw new InvalidRequestError(`${param} must have 1 to ${MAX_NAME_LENGTH} characters.`, {
      param,
      code: 'invalid_name',
    });
  }
  return trimmed;
}

function validateModels(models: readonly unknown[] | null | undefined): string[] | null {
  if (models === undefined || models === null) return null;
  if (!Array.isArray(models) || models.length > MAX_MODELS) {
    throw new InvalidRequestError(`models must be an array of at most ${MAX_MODELS} model names, or null.`, {
      param: 'models',
      code: 'invalid_models',
    });
  }
  const unique = new Set<string>();
  models.forEach((model, index) => {
    if (typeof model !== 'string' || model.trim() === '') {
      throw new InvalidRequestError('Each model must be a non-empty string.', {
        param: `models[${index}]`,
        code: 'invalid_models',
      });
    }
    unique.add(model);
  });
  return [...unique];
}
