import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateApiKey, hashApiKey, looksLikeApiKey } from './api-key.js';

describe('API keys', () => {
  it('generates tg- keys of 32 random bytes with their prefix and SHA-256 hash', () => {
    const generated = generateApiKey();
    expect(generated.key).toMatch(/^tg-[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(generated.key.slice(3), 'base64url').length).toBe(32);
    expect(generated.prefix).toBe(generated.key.slice(0, 11));
    expect(generated.prefix).toMatch(/^tg-.{8}$/);
    expect(generated.hash).toBe(createHash('sha256').update(generated.key, 'utf8').digest('hex'));
    expect(hashApiKey(generated.key)).toBe(generated.hash);
  });

  it('never repeats a key', () => {
    const keys = new Set(Array.from({ length: 1000 }, () => generateApiKey().key));
    expect(keys.size).toBe(1000);
  });

  it('recognises the shape of a key', () => {
    expect(looksLikeApiKey(generateApiKey().key)).toBe(true);
    expect(looksLikeApiKey('')).toBe(false);
    expect(looksLikeApiKey('sk-abc')).toBe(false);
    expect(looksLikeApiKey(`tg-${'a'.repeat(42)}`)).toBe(false);
    expect(looksLikeApiKey(`tg-${'a'.repeat(44)}`)).toBe(false);
    expect(looksLikeApiKey(`tg-${'a'.repeat(42)}=`)).toBe(false);
    expect(looksLikeApiKey(`xx-${'a'.repeat(43)}`)).toBe(false);
  });
});
