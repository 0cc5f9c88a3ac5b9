import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createStore } from '../store/create-store.js';
import { resolveSecret, storeSecret } from './admin-token.js';

describe('resolveSecret', () => {
  it('generates a secret once into the data directory, readable by its owner only, and reads it back', () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-secret-'));
    const first = resolveSecret(dataDir, 'webhook-secret', 'whsec_', undefined);
    expect(first).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(resolveSecret(dataDir, 'webhook-secret', 'whsec_', undefined)).toBe(first);
    expect(statSync(path.join(dataDir, 'webhook-secret')).mode & 0o777).toBe(0o600);
    // Only the secret is left: its draft was linked into place and removed.
    expect(readdirSync(dataDir)).toEqual(['webhook-secret']);
    expect(resolveSecret(dataDir, 'webhook-secret', 'whsec_', 'from-the-environment')).toBe('from-the-environment');
  });
});

describe('storeSecret', () => {
  it('generates one secret for every caller on the store, however many ask at once', async () => {
    const store = await createStore('sqlite://:memory:');
    await store.migrate();
    try {
      const secrets = await Promise.all(
        Array.from({ length: 8 }, () => storeSecret(store, 'compaction_secret', 'tgcs_')),
      );
      expect(new Set(secrets).size).toBe(1);
      expect(secrets[0]).toMatch(/^tgcs_[A-Za-z0-9_-]{43}$/);
      expect(await store.getSetting('compaction_secret')).toBe(secrets[0]);
      expect(await storeSecret(store, 'compaction_secret', 'tgcs_')).toBe(secrets[0]);
    } finally {
      await store.close();
    }
  });
});
