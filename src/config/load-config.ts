/**
 * Loads the configuration once at start: YAML file (or the built-in default), schema defaults, environment
 * overrides, cross-reference checks. Every problem is reported with its path; the result is deeply frozen.
 * This is the only module that reads `process.env`.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { normalizePriceBook, PriceBookError } from '../pricing/price-book.js';
import { type Config, ConfigSchema, OpenAIUpstreamSchema, SimulatedUpstreamSchema } from './config-schema.js';
import { defaultConfigDocument } from './default-config.js';

/** Where the configuration came from, for the start banner. */
export type ConfigSource = { kind: 'file'; path: string } | { kind: 'default' };

/** The loaded configuration plus the secrets and settings taken from the environment. */
export interface LoadedConfig {
  config: Config;
  source: ConfigSource;
  /** Absolute data directory. */
  dataDir: string;
  /** Store URL with `sqlite://` paths made absolute. */
  storeUrl: string;
  /** `TOLLGATE_ADMIN_TOKEN`, when set. */
  adminToken: string | undefined;
  /** API keys of upstreams, by upstream name, read from the variables their `api_key_env` names. */
  upstreamApiKeys: ReadonlyMap<string, string>;
  /** Secret signing budget-alert webhooks, from the variable `billing.webhook_secret_env` names. */
  webhookSecret: string | undefined;
  /**
   * Secrets sealing compaction summaries, newest first, from the variable `responses.compaction_secret_env` names
   * (comma-separated: the first seals, every one opens).
   */
  compactionSecrets: string[] | undefined;
}

/** A configuration that cannot be used; `problems` are `path: message` lines. */
export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`Invalid configuration (${source}):\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Options of `loadConfig`. */
export interface LoadConfigOptions {
  /** Explicit `--config PATH`; wins over `TOLLGATE_CONFIG` and `./tollgate.yaml`. */
  configPath?: string;
  /** Environment to read. Default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Directory relative paths are resolved against. Default `process.cwd()`. */
  cwd?: string;
}

/** Reads, validates and freezes the configuration. Throws `ConfigError` listing every problem. */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const explicit = options.configPath ?? env.TOLLGATE_CONFIG;
  const candidate = path.resolve(cwd, explicit ?? 'tollgate.yaml');
  let document: unknown;
  let source: ConfigSource;
  if (existsSync(candidate)) {
    source = { kind: 'file', path: candidate };
    document = readDocument(candidate);
  } else if (explicit !== undefined) {
    throw new ConfigError(candidate, ['file not found']);
  } else {
    source = { kind: 'default' };
    document = structuredClone(defaultConfigDocument);
  }
  const sourceName = source.kind === 'file' ? source.path : 'built-in default';
  const config = parseConfigDocument(document, env, sourceName);
  const dataDir = path.resolve(cwd, config.data_dir);
  const storeUrl = resolveStoreUrl(config.store.url, dataDir, cwd);

  const upstreamApiKeys = new Map<string, string>();
  const problems: string[] = [];
  config.upstreams.forEach((upstream, index) => {
    if (upstream.type !== 'openai' || upstream.api_key_env === undefined) return;
    const value = env[upstream.api_key_env];
    if (value === undefined || value === '') {
      problems.push(`upstreams[${index}].api_key_env: environment variable ${upstream.api_key_env} is not set`);
    } else {
      upstreamApiKeys.set(upstream.name, value);
    }
  });
  const secretVariable = config.billing.webhook_secret_env;
  const webhookSecret = secretVariable === undefined ? undefined : nonEmpty(env[secretVariable]);
  if (secretVariable !== undefined && webhookSecret === undefined) {
    problems.push(`billing.webhook_secret_env: environment variable ${secretVariable} is not set`);
  }
  const compactionVariable = config.responses.compaction_secret_env;
  const compactionSecrets = compactionVariable === undefined ? undefined : secretList(env[compactionVariable]);
  if (compactionVariable !== undefined && compactionSecrets === undefined) {
    problems.push(`responses.compaction_secret_env: environment variable ${compactionVariable} is not set`);
  } else if (compactionSecrets?.some((secret) => secret.length < MIN_SECRET_LENGTH)) {
    problems.push(
      `responses.compaction_secret_env: every secret in ${compactionVariable} must be at least ${MIN_SECRET_LENGTH} characters`,
    );
  }
  if (problems.length > 0) throw new ConfigError(sourceName, problems);

  return deepFreeze({
    webhookSecret,
    compactionSecrets,
    config,
    source,
    dataDir,
    storeUrl,
    adminToken: nonEmpty(env.TOLLGATE_ADMIN_TOKEN),
    upstreamApiKeys,
  });
}

function readDocument(file: string): unknown {
  const text = readFileSync(file, 'utf8');
  try {
    return parseYaml(text) ?? {};
  } catch (error: unknown) {
    if (error instanceof YAMLParseError) {
      const position = error.linePos?.[0];
      const where = position === undefined ? '' : `line ${position.line}, column ${position.col}: `;
      throw new ConfigError(file, [`${where}${error.message.split('\n')[0]}`]);
    }
    throw error;
  }
}

/**
 * Validates a configuration document (already parsed from YAML) and applies defaults and environment overrides.
 * Exported for tests and for `tollgate config check`.
 */
export function parseConfigDocument(
  document: unknown,
  env: Readonly<Record<string, string | undefined>> = {},
  sourceName = 'configuration',
): Config {
  const problems: string[] = [];
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    throw new ConfigError(sourceName, ['(root): expected a mapping']);
  }
  const withOverrides = applyEnvironment(document as Record<string, unknown>, env, problems);
  const withDefaults = Value.Default(ConfigSchema, Value.Clone(withOverrides)) as Record<string, unknown>;
  // Defaults inside union members are not applied through the union: apply them with the member schema.
  if (Array.isArray(withDefaults.upstreams)) {
    withDefaults.upstreams = withDefaults.upstreams.map((upstream: unknown) => {
      const schema = upstreamSchemas[(upstream as { type?: unknown } | null)?.type as keyof typeof upstreamSchemas];
      return schema === undefined ? upstream : Value.Default(schema, upstream);
    });
  }
  collectProblems(withDefaults, problems);
  if (problems.length > 0) throw new ConfigError(sourceName, firstPerPath(problems));
  const config = withDefaults as unknown as Config;
  checkReferences(config, problems);
  if (problems.length > 0) throw new ConfigError(sourceName, problems);
  return config;
}

/**
 * Schema errors with exact paths. Upstreams are a union discriminated by `type`; TypeBox reports a failed union
 * only as "expected union value", so each upstream is checked against the schema its `type` selects.
 */
function collectProblems(document: unknown, problems: string[]): void {
  const upstreams = (document as { upstreams?: unknown }).upstreams;
  for (const error of Value.Errors(ConfigSchema, document)) {
    if (Array.isArray(upstreams) && /^\/upstreams\/\d+$/.test(error.path)) continue;
    problems.push(`${formatPointer(error.path)}: ${error.message}`);
  }
  if (!Array.isArray(upstreams)) return;
  upstreams.forEach((upstream: unknown, index) => {
    const type = (upstream as { type?: unknown } | null)?.type;
    const schema = upstreamSchemas[type as keyof typeof upstreamSchemas];
    if (schema === undefined) {
      problems.push(`upstreams[${index}].type: expected one of ${Object.keys(upstreamSchemas).join(', ')}`);
      return;
    }
    for (const error of Value.Errors(schema, upstream)) {
      problems.push(`upstreams[${index}]${formatPointer(error.path).replace(/^(?!\[)/, '.')}: ${error.message}`);
    }
  });
}

const upstreamSchemas = { simulated: SimulatedUpstreamSchema, openai: OpenAIUpstreamSchema } as const;

function applyEnvironment(
  document: Record<string, unknown>,
  env: Readonly<Record<string, string | undefined>>,
  problems: string[],
): Record<string, unknown> {
  const result: Record<string, unknown> = { ...document };
  const server = { ...((document.server as Record<string, unknown> | undefined) ?? {}) };
  const host = nonEmpty(env.TOLLGATE_HOST);
  if (host !== undefined) server.host = host;
  const port = nonEmpty(env.TOLLGATE_PORT);
  if (port !== undefined) {
    const parsed = Number(port);
    if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65_535) {
      problems.push(`TOLLGATE_PORT: expected an integer from 0 to 65535, got "${port}"`);
    } else {
      server.port = parsed;
    }
  }
  result.server = server;
  const dataDir = nonEmpty(env.TOLLGATE_DATA_DIR);
  if (dataDir !== undefined) result.data_dir = dataDir;
  return result;
}

function checkReferences(config: Config, problems: string[]): void {
  if (config.pricing !== undefined) {
    try {
      normalizePriceBook(config.pricing, { path: 'pricing' });
    } catch (error: unknown) {
      if (!(error instanceof PriceBookError)) throw error;
      for (const issue of error.issues) problems.push(`${issue.path}: ${issue.message}`);
    }
  }
  const upstreamNames = new Set<string>();
  config.upstreams.forEach((upstream, index) => {
    if (upstreamNames.has(upstream.name)) problems.push(`upstreams[${index}].name: duplicate name "${upstream.name}"`);
    upstreamNames.add(upstream.name);
  });
  const modelNames = new Set<string>();
  config.models.forEach((model, index) => {
    if (modelNames.has(model.name)) problems.push(`models[${index}].name: duplicate name "${model.name}"`);
    modelNames.add(model.name);
    if (model.max_output_tokens !== undefined && model.max_output_tokens > model.context_window) {
      problems.push(`models[${index}].max_output_tokens: must not exceed context_window (${model.context_window})`);
    }
    model.deployments.forEach((deployment, deploymentIndex) => {
      if (!upstreamNames.has(deployment.upstream)) {
        problems.push(
          `models[${index}].deployments[${deploymentIndex}].upstream: unknown upstream "${deployment.upstream}"`,
        );
      }
    });
  });
}

function resolveStoreUrl(url: string | undefined, dataDir: string, cwd: string): string {
  if (url === undefined) return `sqlite://${path.join(dataDir, 'tollgate.db')}`;
  if (!url.startsWith('sqlite://')) return url;
  const file = url.slice('sqlite://'.length);
  return file === ':memory:' ? url : `sqlite://${path.resolve(cwd, file)}`;
}

/** `/models/2/context_window` → `models[2].context_window`. */
function formatPointer(pointer: string): string {
  if (pointer === '') return '(root)';
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce(
      (formatted, part) => (/^\d+$/.test(part) ? `${formatted}[${part}]` : formatted ? `${formatted}.${part}` : part),
      '',
    );
}

/** Keeps the first problem reported for each path ("required" rather than also "expected integer"). */
function firstPerPath(lines: string[]): string[] {
  const seen = new Set<string>();
  return lines.filter((line) => {
    const key = line.slice(0, line.indexOf(': '));
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    if (!(value instanceof Map)) for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** The shortest secret a variable may hold: 32 characters, as many as the bytes of the key derived from it. */
const MIN_SECRET_LENGTH = 32;

/** The comma-separated secrets of a variable, in order; undefined when it holds none. */
function secretList(value: string | undefined): string[] | undefined {
  const secrets = (value ?? '')
    .split(',')
    .map((secret) => secret.trim())
    .filter((secret) => secret !== '');
  return secrets.length === 0 ? undefined : secrets;
}
