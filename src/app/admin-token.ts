/**
 * Generated secrets: the admin credential (`TOLLGATE_ADMIN_TOKEN` or generated) and the webhook signing secret, kept
 * in the data directory; the secret sealing compaction summaries, kept in the store.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Store } from '../store/store.js';

/** Returns the admin token, creating `<dataDir>/admin-token` (mode 0600) when neither it nor the variable exists. */
export function resolveAdminToken(dataDir: string, fromEnvironment: string | undefined): string {
  return resolveSecret(dataDir, 'admin-token', 'tga-', fromEnvironment);
}

/**
 * A secret from the environment, or generated once into `<dataDir>/<name>` (mode 0600) and read back on every
 * later start, so all processes sharing the data dir agree on it.
 */
export function resolveSecret(
  dataDir: string,
  name: string,
  prefix: string,
  fromEnvironment: string | undefined,
): string {
  if (fromEnvironment !== undefined) return fromEnvironment;
  const file = path.join(dataDir, name);
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing !== '') return existing;
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  mkdirSync(dataDir, { recursive: true });
  const token = `${prefix}${randomBytes(32).toString('base64url')}`;
  // Written whole under a name of its own, then linked into place: a process that starts at the same time reads
  // either no file or the whole token, never an empty one. The link fails if another process's came first; its wins.
  const draft = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(draft, `${token}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(draft, file);
    return token;
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8').trim();
    throw error;
  } finally {
    rmSync(draft, { force: true });
  }
}

/**
 * A secret generated once and kept in the store's settings under `key`, so that every process on the store, on any
 * host, agrees on it; the first process to store one wins.
 */
export async function storeSecret(
  store: Pick<Store, 'getSetting' | 'putSettingIfAbsent'>,
  key: string,
  prefix: string,
) {
  const existing = await store.getSetting(key);
  if (existing !== undefined && existing !== '') return existing;
  const generated = `${prefix}${randomBytes(32).toString('base64url')}`;
  if (await store.putSettingIfAbsent(key, generated)) return generated;
  const stored = await store.getSetting(key);
  if (stored === undefined || stored === '') throw new Error(`the setting ${key} was stored empty`);
  return stored;
}
