/**
 * The `tollgate` command line as a newcomer uses it: `serve` (banner, demo key on first start only, request log
 * surviving `kill -9`), tenant and key commands against the store and against a running gateway, bad config.
 * Runs the built CLI (`npm test` builds first).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { createStore } from '../src/store/create-store.js';
import {
  CLI_TEST_TIMEOUT_MS,
  cliPath,
  cliTestProcesses,
  workspace as cliWorkspace,
  completeThenKill,
  demoKeyOf,
  killHard,
  runCli,
} from './support/cli-process.js';
import { fastSimulatedConfig, pricedSimulatedConfig } from './support/test-gateway.js';

const { workspace, serve } = cliTestProcesses(fastSimulatedConfig);
const run = runCli;

describe('tollgate serve', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('prints the admin token, a demo key on first start only, and the key works with the SDK', async () => {
    const dir = workspace();
    const first = await serve(dir);
    expect(first.banner).toMatch(/Admin token: tga-/);
    const key = /Demo API key \(shown once, keep it\): (tg-\S+)/.exec(first.banner)?.[1];
    expect(key).toBeDefined();
    const client = new OpenAI({ baseURL: `${first.url}/v1`, apiKey: key!, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'sim-pro-32k',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 5,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text.length).toBeGreaterThan(0);
    const exited = new Promise((resolve) => first.child.once('exit', resolve));
    first.child.kill('SIGTERM');
    await exited;

    const second = await serve(dir);
    expect(second.banner).not.toMatch(/Demo API key \(shown once/);
    expect(second.banner).toContain(/Admin token: (\S+)/.exec(first.banner)![1]!);
  });

  it('keeps every completed request in the request log across kill -9', async () => {
    const dir = workspace();
    const ids = await completeThenKill(await serve(dir), 40);
    // Their responses waited for the journal, not the commit: the next start settles what the killed process
    // journaled and had not committed, before it listens.
    await killHard((await serve(dir)).child);
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    try {
      const records = await store.listRequestLogs({ limit: 1000 });
      const found = new Set(records.map((record) => record.requestId));
      expect(ids.filter((id) => !found.has(id))).toEqual([]);
    } finally {
      await store.close();
    }
  });
});

describe('tenant and key commands', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('work against the store', () => {
    const dir = workspace();
    const tenant = run(dir, ['tenants', 'create', 'acme']);
    expect(tenant.status, tenant.stderr).toBe(0);
    const tenantId = JSON.parse(tenant.stdout).id as string;
    const key = run(dir, ['keys', 'create', '--tenant', tenantId, '--models', 'sim-pro-32k', '--name', 'ci']);
    expect(key.status, key.stderr).toBe(0);
    const created = JSON.parse(key.stdout);
    expect(created.key).toMatch(/^tg-/);
    expect(created.models).toEqual(['sim-pro-32k']);
    const listed = JSON.parse(run(dir, ['keys', 'list', '--tenant', tenantId]).stdout);
    expect(listed.map((entry: { id: string }) => entry.id)).toEqual([created.id]);
    const revoked = JSON.parse(run(dir, ['keys', 'revoke', created.id]).stdout);
    expect(revoked.revoked_at).not.toBeNull();
    const tenants = JSON.parse(run(dir, ['tenants', 'list']).stdout);
    expect(tenants.map((entry: { name: string }) => entry.name)).toContain('acme');
  });

  it('stop quietly when the reader of their output stops early (| head)', async () => {
    const dir = workspace();
    expect(run(dir, ['tenants', 'create', 'first']).status).toBe(0); // creates the store
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    try {
      // Far more than a pipe holds (64 KiB), so the command is still writing when the reader goes.
      for (let index = 0; index < 3000; index++) await store.createTenant(`tenant-with-a-long-name-${index}`);
    } finally {
      await store.close();
    }
    const child = spawn(process.execPath, [cliPath, 'tenants', 'list'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.once('data', () => child.stdout.destroy());
    const [status] = (await once(child, 'exit')) as [number | null];
    expect(stderr).toBe('');
    expect(status).toBe(0);
  });

  it('list every tenant and key page by page, or one page with --limit and --after, from the store and --url', async () => {
    const dir = workspace();
    const first = run(dir, ['tenants', 'create', 'first']); // creates the store
    expect(first.status, first.stderr).toBe(0);
    const { url } = await serve(dir); // adds the demo tenant
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    let tenantIds: string[];
    let keyIds: string[];
    try {
      // More than the 1,000 records of one page of the full listing.
      for (let index = 0; index < 1500; index++) await store.createTenant(`tenant-${index}`);
      const tenantId = JSON.parse(first.stdout).id as string;
      for (let index = 0; index < 3; index++) {
        await store.createKey({
          tenantId,
          name: null,
          prefix: 'tg-x',
          hash: `hash-${index}`,
          models: null,
          expiresAt: null,
        });
      }
      tenantIds = (await store.listTenants()).map((tenant) => tenant.id);
      keyIds = (await store.listKeys(tenantId)).map((key) => key.id);
    } finally {
      await store.close();
    }
    expect(tenantIds.length).toBe(1502);
    const idsOf = (list: Array<{ id: string }>) => list.map((entry) => entry.id);
    const json = (args: string[]) => {
      const result = run(dir, args);
      expect(result.status, result.stderr).toBe(0);
      return JSON.parse(result.stdout);
    };
    for (const target of [[], ['--url', url]]) {
      expect(idsOf(json(['tenants', 'list', ...target])), target.join(' ')).toEqual(tenantIds);
      const page = json(['tenants', 'list', '--limit', '2', '--after', tenantIds[999]!, ...target]);
      expect(page).toMatchObject({
        object: 'list',
        first_id: tenantIds[1000],
        last_id: tenantIds[1001],
        has_more: true,
      });
      expect(idsOf(page.data)).toEqual(tenantIds.slice(1000, 1002));
      const last = json(['tenants', 'list', '--after', tenantIds[1499]!, ...target]);
      expect(idsOf(last.data)).toEqual(tenantIds.slice(1500));
      expect(last.has_more).toBe(false);

      const tenant = ['--tenant', JSON.parse(first.stdout).id as string];
      expect(idsOf(json(['keys', 'list', ...tenant, ...target]))).toEqual(keyIds);
      const keys = json(['keys', 'list', ...tenant, '--limit', '2', '--after', keyIds[0]!, ...target]);
      expect(keys).toMatchObject({ first_id: keyIds[1], last_id: keyIds[2], has_more: false });
    }
    const unknown = run(dir, ['tenants', 'list', '--after', 'ten_doesnotexist', '--url', url]);
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toContain('400 invalid_value');
    for (const limit of ['0', '1001']) {
      const bad = run(dir, ['tenants', 'list', '--limit', limit]);
      expect(bad.status, limit).not.toBe(0);
      expect(bad.stderr).toContain("option '--limit <n>' argument");
    }
  });

  it('work against a running gateway with --url, and revocation is immediate', async () => {
    const dir = workspace();
    const { url } = await serve(dir);
    const tenant = JSON.parse(run(dir, ['tenants', 'create', 'remote', '--url', url]).stdout);
    const created = JSON.parse(run(dir, ['keys', 'create', '--tenant', tenant.id, '--url', url]).stdout);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: created.key, maxRetries: 0 });
    expect((await client.models.list()).data.length).toBeGreaterThan(0);
    expect(run(dir, ['keys', 'revoke', created.id, '--url', url]).status).toBe(0);
    await expect(client.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("delete a tenant's stored responses, from the store and with --url", async () => {
    const dir = workspace();
    const { url, banner } = await serve(dir);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: demoKeyOf(banner), maxRetries: 0 });
    const respond = () => client.responses.create({ model: 'sim-pro-32k', input: 'Hi.', max_output_tokens: 16 });
    const [tenant] = JSON.parse(run(dir, ['tenants', 'list']).stdout) as Array<{ id: string }>;
    const first = await respond();
    const fromStore = run(dir, ['tenants', 'delete-responses', tenant!.id]);
    expect(fromStore.status, fromStore.stderr).toBe(0);
    expect(JSON.parse(fromStore.stdout)).toEqual({
      object: 'tenant.responses.deleted',
      tenant_id: tenant!.id,
      deleted: 1,
      conversations_deleted: 0,
    });
    await expect(client.responses.retrieve(first.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await respond();
    await respond();
    const remote = run(dir, ['tenants', 'delete-responses', tenant!.id, '--url', url]);
    expect(JSON.parse(remote.stdout)).toMatchObject({ deleted: 2 });
    const unknown = run(dir, ['tenants', 'delete-responses', 'ten_unknown']);
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toContain('ten_unknown');
  });

  it('--url without an admin token names --admin-token and writes no token file', () => {
    const dir = workspace();
    const { TOLLGATE_ADMIN_TOKEN: _ignored, ...env } = process.env;
    const result = run(dir, ['tenants', 'list', '--url', 'http://127.0.0.1:9'], env);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('--admin-token');
    expect(result.stderr).toContain('TOLLGATE_ADMIN_TOKEN');
    expect(existsSync(path.join(dir, 'data', 'admin-token'))).toBe(false);
  });

  it('submit a batch with --wait, then status, list and download its results', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const { url, banner } = await serve(dir);
    const key = demoKeyOf(banner);
    const input = path.join(dir, 'requests.jsonl');
    writeFileSync(
      input,
      Array.from({ length: 5 }, (_, index) =>
        JSON.stringify({
          custom_id: `r${index}`,
          method: 'POST',
          url: '/v1/chat/completions',
          body: { messages: [{ role: 'user', content: `line ${index}` }], max_tokens: 3 },
        }),
      ).join('\n'),
    );
    const submitted = run(dir, [
      'batch',
      'submit',
      input,
      '--model',
      'sim-pro-32k',
      '--wait',
      '--url',
      url,
      '--api-key',
      key,
    ]);
    expect(submitted.status, submitted.stderr).toBe(0);
    const batch = JSON.parse(submitted.stdout);
    expect(batch).toMatchObject({ status: 'completed', request_counts: { total: 5, completed: 5, failed: 0 } });
    const status = JSON.parse(run(dir, ['batch', 'status', batch.id, '--url', url, '--api-key', key]).stdout);
    expect(status.id).toBe(batch.id);
    const list = JSON.parse(run(dir, ['batch', 'list', '--url', url, '--api-key', key]).stdout);
    expect(list.data.map((entry: { id: string }) => entry.id)).toContain(batch.id);
    // A second batch, listed first (newest first): --limit 1 pages to the first batch with --after.
    const second = run(dir, ['batch', 'submit', input, '--model', 'sim-pro-32k', '--url', url, '--api-key', key]);
    expect(second.status, second.stderr).toBe(0);
    const secondId = JSON.parse(second.stdout).id as string;
    const page = (args: string[]) => {
      const result = run(dir, ['batch', 'list', '--limit', '1', ...args, '--url', url, '--api-key', key]);
      expect(result.status, result.stderr).toBe(0);
      return JSON.parse(result.stdout);
    };
    const first = page([]);
    expect(first).toMatchObject({ data: [{ id: secondId }], last_id: secondId, has_more: true });
    const next = page(['--after', first.last_id]);
    expect(next).toMatchObject({ data: [{ id: batch.id }], has_more: false });
    const unknownCursor = run(dir, ['batch', 'list', '--after', 'batch_nope', '--url', url, '--api-key', key]);
    expect(unknownCursor.status).not.toBe(0);
    expect(unknownCursor.stderr).toContain('"param":"after"');
    // The operator's view: every tenant's batches with progress, from the running gateway only.
    const adminPage = JSON.parse(
      run(dir, ['batches', 'list', '--limit', '1', '--after', secondId, '--url', url]).stdout,
    );
    expect(adminPage).toMatchObject({ data: [{ id: batch.id, status: 'completed' }], has_more: false });
    expect(adminPage.data[0].progress).toMatchObject({ lines_done: 5, lines_total: 5 });
    const adminOne = JSON.parse(run(dir, ['batches', 'get', batch.id, '--url', url]).stdout);
    expect(adminOne).toMatchObject({ id: batch.id, tenant_id: adminPage.data[0].tenant_id });
    const storeMode = run(dir, ['batches', 'list']);
    expect(storeMode.status).not.toBe(0);
    expect(storeMode.stderr).toContain('--url');
    const output = path.join(dir, 'out.jsonl');
    expect(run(dir, ['batch', 'download', batch.id, '-o', output, '--url', url, '--api-key', key]).status).toBe(0);
    const lines = readFileSync(output, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(lines.map((line: { custom_id: string }) => line.custom_id).sort()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    expect(lines.every((line: { response: { status_code: number } }) => line.response.status_code === 200)).toBe(true);
    const missing = run(dir, ['batch', 'submit', input, '--url', url]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('--api-key');
  });

  it('explains bad input with a non-zero exit', () => {
    const dir = workspace({
      models: [{ name: 'm', context_window: 'big', deployments: [{ upstream: 'x', model: 'y' }] }],
    });
    const result = run(dir, ['serve']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('models[0].context_window');
    const help = run(dir, ['--help']);
    expect(help.status).toBe(0);
    for (const command of [
      'serve',
      'tenants',
      'keys',
      'credits',
      'usage',
      'invoices',
      'invoice',
      'billing',
      'balance',
      'prices',
      'margin',
      'fleet',
      'plans',
      'batches',
      'batch',
      'sim-upstream',
    ]) {
      expect(help.stdout).toContain(command);
    }
    const missing = run(dir, ['keys', 'create']);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('--tenant');
  });
});
