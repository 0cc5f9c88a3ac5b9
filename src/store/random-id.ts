import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
// 248 = 4 × 62: bytes at or above it are rejected so every character is equally likely (no modulo bias).
const REJECT_AT = 248;

/** Number of random base62 characters after the prefix (~143 bits). */
export const RANDOM_ID_LENGTH = 24;

/** `prefix` followed by 24 cryptographically random base62 characters, e.g. `randomId('ten_')`. */
export function randomId(prefix: string): string {
  let id = prefix;
  while (id.length < prefix.length + RANDOM_ID_LENGTH) {
    for (const byte of randomBytes(32)) {
      if (byte >= REJECT_AT) continue;
      id += ALPHABET[byte % 62];
      if (id.length === prefix.length + RANDOM_ID_LENGTH) break;
    }
  }
  return id;
}
