/** Generated secrets: the admin credential (`TOLLGATE_ADMIN_TOKEN` or generated) and the webhook signing secret. */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

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
  // `wx` fails if another process created it in the meantime; then its token wins.
  try {
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return token;
  } catch (error: unknown) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8').trim();
    throw error;
  }
}
