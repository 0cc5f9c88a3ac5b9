import { hash, randomBytes } from 'node:crypto';

/** Every key starts with this. */
export const API_KEY_PREFIX = 'tg-';

/** Length of the shown prefix: `tg-` and 8 characters of the secret. */
const SHOWN_PREFIX_LENGTH = 11;
/** 32 random bytes are 43 base64url characters (no padding). */
const SECRET_LENGTH = 43;
const KEY_PATTERN = /^tg-[A-Za-z0-9_-]{43}$/;

/** A freshly generated API key: the secret is shown once, only the hash is stored. */
export interface GeneratedApiKey {
  /** The whole secret, `tg-` + 43 base64url characters. */
  key: string;
  /** `tg-` and the next 8 characters, shown in listings so a user can recognise the key. */
  prefix: string;
  /** Hex SHA-256 of `key`. */
  hash: string;
}

/** Generates a key with 256 bits of randomness. */
export function generateApiKey(): GeneratedApiKey {
  const key = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { key, prefix: key.slice(0, SHOWN_PREFIX_LENGTH), hash: hashApiKey(key) };
}

/**
 * Hex SHA-256 of a key. A fast, unsalted hash is right here, unlike for passwords: the key has 256 bits of
 * randomness, so no dictionary or brute force gets anywhere even at billions of guesses per second, and a
 * deterministic hash lets authentication find the key with one index lookup on every request (a slow KDF such as
 * bcrypt or scrypt would cost milliseconds of CPU per request and could not be indexed).
 */
export function hashApiKey(key: string): string {
  return hash('sha256', key, 'hex');
}

/** Whether `key` has the shape of a Tollgate key; cheap rejection of garbage before any hashing or lookup. */
export function looksLikeApiKey(key: string): boolean {
  return key.length === API_KEY_PREFIX.length + SECRET_LENGTH && KEY_PATTERN.test(key);
}
