import { type Clock, RealClock } from '../clock/clock.js';
import { AuthenticationError, StoreUnavailableError } from '../errors/gateway-error.js';
import type { ApiKeyRecord, Store } from '../store/store.js';
import { hashApiKey, looksLikeApiKey } from './api-key.js';
import { ConfigSubject, type InvalidationBus } from './invalidation-bus.js';
import { SharedReads } from './shared-reads.js';

/** The authenticated caller of a request. */
export interface Principal {
  tenantId: string;
  keyId: string;
  /** Public model names the key may use; `null` means all. */
  models: ReadonlySet<string> | null;
  /** Epoch ms after which the key is refused; `null` means never. */
  expiresAt: number | null;
}

/**
 * Authentication failure codes (all HTTP 401). OpenAI answers `invalid_api_key` for every case; distinct codes tell
 * an operator's user why without revealing more than they already know (they hold the key).
 */
export const AuthenticationErrorCode = {
  missing: 'missing_api_key',
  invalid: 'invalid_api_key',
  revoked: 'revoked_api_key',
  expired: 'expired_api_key',
} as const;

/** Options of `KeyService`. */
export interface KeyServiceOptions {
  /** Time source for cache lifetimes and key expiry. Default: the wall clock. */
  clock?: Clock;
  /** How long a found key (valid or revoked) stays cached, ms. Default 5000. Revocations through the bus are immediate. */
  cacheTtlMs?: number;
  /** How long an unknown key stays cached, ms. Default 1000. */
  negativeTtlMs?: number;
  /** Most cached keys (known and unknown); the oldest entry is evicted first. Default 100,000. */
  maxEntries?: number;
  /** When given, the service subscribes and drops the cache entry of every key published on it. */
  bus?: InvalidationBus;
  /**
   * Told of every store failure while looking a key up. The request is then refused with 503 `store_unavailable`:
   * an entry past its lifetime is never served, so a revocation this process did not hear cannot outlive it.
   */
  onStoreFailure?: (error: unknown) => void;
}

interface CacheEntry {
  /** `undefined`: no key has this hash. */
  record: ApiKeyRecord | undefined;
  /** Built once per fill: the hot path returns it without allocating. */
  principal: Principal | undefined;
  /** Clock time after which the entry is refreshed from the store. */
  staleAt: number;
}

/**
 * Turns an `Authorization` header into a `Principal`. Keys are looked up by their SHA-256 hash: the index lookup
 * compares hashes, never the secret, so its timing reveals nothing about the key (no constant-time compare needed).
 * Results are cached (found and not found, bounded), concurrent lookups of one hash share one store call, and
 * revocation and expiry are enforced on every call: expiry against the clock, revocation through `invalidateKey`.
 */
export class KeyService {
  private readonly clock: Clock;
  private readonly cacheTtlMs: number;
  private readonly negativeTtlMs: number;
  private readonly onStoreFailure: ((error: unknown) => void) | undefined;
  private readonly maxEntries: number;
  /** Keyed by hash, in insertion order: the first key is the oldest (evicted first). */
  private readonly cache = new Map<string, CacheEntry>();
  private readonly hashByKeyId = new Map<string, string>();
  /** Lookups in flight, by hash. */
  private readonly lookups = new SharedReads<CacheEntry>();
  /** Bumped by every invalidation: a lookup that started before one must not fill the cache with what it read. */
  private generation = 0;
  private readonly unsubscribe: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    options: KeyServiceOptions = {},
  ) {
    this.clock = options.clock ?? new RealClock();
    this.cacheTtlMs = options.cacheTtlMs ?? 5000;
    this.negativeTtlMs = options.negativeTtlMs ?? 1000;
    this.onStoreFailure = options.onStoreFailure;
    this.maxEntries = Math.max(1, options.maxEntries ?? 100_000);
    this.unsubscribe = options.bus?.subscribe((subject) => {
      if (subject === ConfigSubject.all) this.invalidateAll();
      else this.invalidateKey(subject);
    });
  }

  /** Authenticates `Authorization: Bearer <key>`; throws `AuthenticationError` (401) with a code of `AuthenticationErrorCode`. */
  async authenticate(authorizationHeader: string | undefined): Promise<Principal> {
    const key = parseBearer(authorizationHeader);
    if (key === undefined) {
      throw new AuthenticationError(
        'Missing API key: send it as "Authorization: Bearer <key>".',
        AuthenticationErrorCode.missing,
      );
    }
    if (!looksLikeApiKey(key)) throw invalidKey();

    const hash = hashApiKey(key);
    const now = this.clock.now();
    let entry = this.cache.get(hash);
    if (entry === undefined || entry.staleAt <= now) entry = await this.lookup(hash);
    return this.check(entry);
  }

  /** Drops the cached result for one key (after a revoke or an update). */
  invalidateKey(keyId: string): void {
    this.generation++;
    const hash = this.hashByKeyId.get(keyId);
    if (hash === undefined) return;
    this.hashByKeyId.delete(keyId);
    this.cache.delete(hash);
  }

  /** Drops every cached result. */
  invalidateAll(): void {
    this.generation++;
    this.cache.clear();
    this.hashByKeyId.clear();
  }

  /** Stops listening to the invalidation bus. */
  close(): void {
    this.unsubscribe?.();
  }

  /** Number of cached entries (known and unknown keys). */
  get cacheSize(): number {
    return this.cache.size;
  }

  private check(entry: CacheEntry): Principal {
    const { record, principal } = entry;
    if (record === undefined || principal === undefined) throw invalidKey();
    if (record.revokedAt !== null) {
      throw new AuthenticationError('This API key has been revoked.', AuthenticationErrorCode.revoked);
    }
    // Checked on every call, not at cache fill: a cached key must stop working the moment it expires.
    if (record.expiresAt !== null && this.clock.now() >= record.expiresAt) {
      throw new AuthenticationError('This API key has expired.', AuthenticationErrorCode.expired);
    }
    return principal;
  }

  private lookup(hash: string): Promise<CacheEntry> {
    const generation = this.generation;
    return this.lookups.join(hash, generation, () =>
      this.store.findKeyByHash(hash).then(
        (record) => {
          const entry: CacheEntry = {
            record,
            principal: record === undefined ? undefined : toPrincipal(record),
            staleAt: this.clock.now() + (record === undefined ? this.negativeTtlMs : this.cacheTtlMs),
          };
          if (generation === this.generation) this.remember(hash, entry);
          return entry;
        },
        (error: unknown) => {
          this.onStoreFailure?.(error);
          throw new StoreUnavailableError(error, 'your API key');
        },
      ),
    );
  }

  private remember(hash: string, entry: CacheEntry): void {
    this.cache.delete(hash);
    while (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next();
      if (oldest.done === true) break;
      const evicted = this.cache.get(oldest.value);
      this.cache.delete(oldest.value);
      if (evicted?.record !== undefined) this.hashByKeyId.delete(evicted.record.id);
    }
    this.cache.set(hash, entry);
    if (entry.record !== undefined) this.hashByKeyId.set(entry.record.id, hash);
  }
}

/** The key of a `Bearer` header; `undefined` when there is none, `''` for another scheme (refused as invalid). */
/**
 * The credential of an `Authorization: Bearer <credential>` header (the scheme in any case, as RFC 9110 has it):
 * undefined when there is none, `''` for another scheme.
 */
export function parseBearer(header: string | undefined): string | undefined {
  const trimmed = header?.trim() ?? '';
  if (trimmed === '') return undefined;
  const space = trimmed.indexOf(' ');
  const scheme = space === -1 ? trimmed : trimmed.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') return '';
  const key = space === -1 ? '' : trimmed.slice(space + 1).trim();
  return key === '' ? undefined : key;
}

function invalidKey(): AuthenticationError {
  return new AuthenticationError('Incorrect API key provided.', AuthenticationErrorCode.invalid);
}

function toPrincipal(record: ApiKeyRecord): Principal {
  return {
    tenantId: record.tenantId,
    keyId: record.id,
    models: record.models === null ? null : new Set(record.models),
    expiresAt: record.expiresAt,
  };
}
