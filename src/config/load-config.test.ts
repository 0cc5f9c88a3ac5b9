import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfigDocument } from './load-config.js';

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (error: unknown) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  throw new Error('expected a ConfigError');
}

const minimal = {
  upstreams: [{ name: 'sim', type: 'simulated' }],
  models: [{ name: 'm', context_window: 1000, deployments: [{ upstream: 'sim', model: 'x' }] }],
};

describe('loadConfig', () => {
  it('uses the simulated demo fleet when no file exists', () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tg-config-'));
    const loaded = loadConfig({ cwd, env: {} });
    expect(loaded.source).toEqual({ kind: 'default' });
    expect(loaded.config.server).toMatchObject({ host: '127.0.0.1', port: 8080 });
    expect(loaded.config.cache).toEqual({ ttl_ms: 5000, unknown_key_ttl_ms: 1000 });
    expect(loaded.config.log).toEqual({ level: 'info', requests: true, verbatim_errors: false });
    expect(loaded.config.models.map((model) => model.name)).toContain('sim-pro-32k');
    expect(loaded.config.models.map((model) => model.name)).toContain('sim-pro-128k');
    expect(loaded.storeUrl).toBe(`sqlite://${path.join(cwd, 'data', 'tollgate.db')}`);
    expect(Object.isFrozen(loaded.config.models[0])).toBe(true);
  });

  it('reads the issue example file, applies environment overrides and reads secrets from named variables', () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tg-config-'));
    writeFileSync(
      path.join(cwd, 'tollgate.yaml'),
      `server: { host: 127.0.0.1, port: 8080 }
store: { url: "sqlite://./data/tollgate.db" }
upstreams:
  - name: sim
    type: simulated          # the built-in replica model
    replicas: 2
    profile: { t_prefill_us: 17, t_fixed_ms: 3.4, t_seq_ms: 0.055, max_batch: 64, kv_tokens: 262144 }
  - name: vllm-local
    type: openai
    base_url: http://127.0.0.1:8000/v1
    api_key_env: VLLM_API_KEY
models:
  - name: sim-pro-32k
    context_window: 32768
    deployments: [{ upstream: sim, model: pro-32k }]
  - name: sim-pro-128k
    context_window: 131072
    deployments: [{ upstream: sim, model: pro-128k }]
`,
    );
    const loaded = loadConfig({
      cwd,
      env: { VLLM_API_KEY: 'secret', TOLLGATE_PORT: '9999', TOLLGATE_HOST: '0.0.0.0', TOLLGATE_ADMIN_TOKEN: 'adm' },
    });
    expect(loaded.config.server.port).toBe(9999);
    expect(loaded.config.server.host).toBe('0.0.0.0');
    expect(loaded.adminToken).toBe('adm');
    expect(loaded.upstreamApiKeys.get('vllm-local')).toBe('secret');
    expect(loaded.storeUrl).toBe(`sqlite://${path.join(cwd, 'data', 'tollgate.db')}`);
    const vllm = loaded.config.upstreams[1];
    expect(vllm?.type === 'openai' && vllm.timeouts.connect_ms).toBe(5000);
  });

  it('names the exact path of every bad field', () => {
    const problems = problemsOf(() =>
      parseConfigDocument({
        server: { port: 'eighty', shutdown_grace_ms: -1 },
        cache: { ttl_ms: -1, unknown_key_ttl_ms: 1.5 },
        log: { verbatim_errors: 'yes' },
        upstreams: [
          { name: 'sim', type: 'simulated', profile: { max_batch: 0 } },
          { name: 'up', type: 'openai', base_url: 'ftp://x' },
          { name: 'odd', type: 'carrier-pigeon' },
        ],
        models: [{ name: 'm', context_window: -1, deployments: [{ upstream: 'nowhere', model: 'x' }] }],
      }),
    );
    expect(problems.some((line) => line.startsWith('server.port:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('server.shutdown_grace_ms:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('cache.ttl_ms:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('cache.unknown_key_ttl_ms:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('log.verbatim_errors:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('upstreams[0].profile.max_batch:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('upstreams[1].base_url:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('upstreams[2].type:'))).toBe(true);
    expect(problems.some((line) => line.startsWith('models[0].context_window:'))).toBe(true);
  });

  it('checks the price book with paths', () => {
    const problems = problemsOf(() =>
      parseConfigDocument({
        ...minimal,
        pricing: {
          currency: 'CNY',
          versions: [{ effective_from: '2026-01-01T00:00:00Z', models: { m: { input: '-1', output: 2 } } }],
        },
      }),
    );
    expect(problems.some((line) => line.startsWith('pricing.versions[0].models.m.'))).toBe(true);
  });

  it('rejects unknown references and duplicate names', () => {
    const problems = problemsOf(() =>
      parseConfigDocument({
        ...minimal,
        models: [
          { name: 'm', context_window: 10, deployments: [{ upstream: 'nowhere', model: 'x' }] },
          { name: 'm', context_window: 10, deployments: [{ upstream: 'sim', model: 'x' }] },
        ],
      }),
    );
    expect(problems).toContain('models[0].deployments[0].upstream: unknown upstream "nowhere"');
    expect(problems).toContain('models[1].name: duplicate name "m"');
  });

  it('fails when a named secret variable is missing, and never reads secrets from the file', () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tg-config-'));
    const file = path.join(cwd, 'custom.yaml');
    writeFileSync(
      file,
      JSON.stringify({
        upstreams: [{ name: 'u', type: 'openai', base_url: 'http://127.0.0.1:1/v1', api_key_env: 'MISSING_KEY' }],
        models: [{ name: 'm', context_window: 10, deployments: [{ upstream: 'u', model: 'x' }] }],
        responses: { compaction_secret_env: 'COMPACTION_SECRET' },
      }),
    );
    expect(problemsOf(() => loadConfig({ cwd, configPath: file, env: {} }))).toEqual([
      'upstreams[0].api_key_env: environment variable MISSING_KEY is not set',
      'responses.compaction_secret_env: environment variable COMPACTION_SECRET is not set',
    ]);
    const secrets = { new: 'n'.repeat(32), old: 'o'.repeat(40) };
    const loaded = loadConfig({
      cwd,
      configPath: file,
      env: { MISSING_KEY: 'k', COMPACTION_SECRET: ` ${secrets.new}, ${secrets.old} ,` },
    });
    expect(loaded.compactionSecrets).toEqual([secrets.new, secrets.old]);
    expect(
      problemsOf(() => loadConfig({ cwd, configPath: file, env: { MISSING_KEY: 'k', COMPACTION_SECRET: 'short' } })),
    ).toEqual(['responses.compaction_secret_env: every secret in COMPACTION_SECRET must be at least 32 characters']);
    expect(
      problemsOf(() => parseConfigDocument({ ...minimal, upstreams: [{ ...minimal.upstreams[0], api_key: 'x' }] })),
    ).toHaveLength(1);
  });

  it('reports a bad environment override and a missing explicit file', () => {
    expect(problemsOf(() => parseConfigDocument(minimal, { TOLLGATE_PORT: '70000' }))[0]).toMatch(/^TOLLGATE_PORT:/);
    expect(problemsOf(() => loadConfig({ configPath: '/nonexistent/tollgate.yaml', env: {} }))).toEqual([
      'file not found',
    ]);
  });

  it('reports YAML syntax errors with a line number', () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tg-config-'));
    writeFileSync(path.join(cwd, 'tollgate.yaml'), 'server: { host: [\n');
    expect(problemsOf(() => loadConfig({ cwd, env: {} }))[0]).toMatch(/^line \d+/);
  });
});
