/**
 * The `tollgate` billing commands as an operator uses them: credits, plans, billing settings, budgets, limits,
 * prices, margin, fleet and invoices, each from the store and from a running gateway (`--url`), accepting and
 * refusing the same input. Runs the built CLI (`npm test` builds first). Apart from `cli.test.ts` so that the two
 * run side by side: each command here is a process of its own, and together they were the suite's longest file.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { describe, expect, it, vi } from 'vitest';
import { stringify as stringifyYaml } from 'yaml';
import { parseNano } from '../src/billing/nano.js';
import { createStore } from '../src/store/create-store.js';
import {
  CLI_TEST_TIMEOUT_MS,
  cliTestProcesses,
  workspace as cliWorkspace,
  demoKeyOf,
  runCli,
} from './support/cli-process.js';
import { clearOfMonthEnd } from './support/month-boundary.js';
import { fastSimulatedConfig, pricedSimulatedConfig } from './support/test-gateway.js';

const { workspace, serve } = cliTestProcesses(fastSimulatedConfig);
const run = runCli;

describe('billing commands', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('add credits, set plans, report usage and print invoices', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const { url, banner } = await serve(dir);
    const tenantId = JSON.parse(run(dir, ['tenants', 'create', 'billed']).stdout).id as string;
    const credit = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '2.5', '--idempotency-key', 'k1']);
    expect(credit.status, credit.stderr).toBe(0);
    const first = JSON.parse(credit.stdout);
    expect(first).toMatchObject({ object: 'wallet_transaction', kind: 'topup', amount: '2.5', balance: '2.5' });
    // The retry is answered with the first transaction, and adds nothing.
    const again = JSON.parse(
      run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '2.5', '--idempotency-key', 'k1']).stdout,
    );
    expect(again).toMatchObject({ id: first.id, balance: '2.5' });
    const reused = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '3', '--idempotency-key', 'k1']);
    expect(reused.status).not.toBe(0);
    expect(reused.stderr).toContain('409 idempotency_key_reused');
    const zero = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '0']);
    expect(zero.status).not.toBe(0);
    expect(zero.stderr).toContain('must be positive');
    // An adjustment may take money back; a refund may not be negative; an unknown kind changes nothing.
    const adjustment = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '-0.5', '--kind', 'adjustment']);
    expect(adjustment.status, adjustment.stderr).toBe(0);
    expect(JSON.parse(adjustment.stdout)).toMatchObject({ kind: 'adjustment', amount: '-0.5', balance: '2' });
    const negativeRefund = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '-1', '--kind', 'refund']);
    expect(negativeRefund.status).not.toBe(0);
    expect(negativeRefund.stderr).toContain('400 invalid_value');
    const gift = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '1', '--kind', 'gift']);
    expect(gift.status).not.toBe(0);
    expect(gift.stderr).toContain('Allowed choices are topup, refund, adjustment');
    const refund = run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '0.5', '--kind', 'refund']);
    expect(JSON.parse(refund.stdout)).toMatchObject({ kind: 'refund', amount: '0.5', balance: '2.5' });
    const plan = run(dir, [
      'plans',
      'set',
      '--tenant',
      tenantId,
      '--rpm',
      '5',
      '--tiers',
      'default,flex',
      '--url',
      url,
    ]);
    expect(plan.status, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout)).toMatchObject({ rpm: 5, tiers: ['default', 'flex'] });
    expect(run(dir, ['plans', 'set', '--tenant', tenantId, '--tiers', 'gold']).status).not.toBe(0);

    const key = JSON.parse(run(dir, ['keys', 'create', '--tenant', tenantId, '--url', url]).stdout).key as string;
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
    // The month the request is billed in (not one that begins between the request and the invoice).
    const month = await clearOfMonthEnd(10_000);
    await client.chat.completions.create({
      model: 'sim-pro-32k',
      messages: [{ role: 'user', content: 'bill me' }],
      max_tokens: 4,
    });
    const outputTokens = () => {
      const usage = JSON.parse(run(dir, ['usage', '--tenant', tenantId, '--bucket', '1h']).stdout);
      return usage.data
        .flatMap((bucket: { results: Array<{ output_tokens: number }> }) => bucket.results)
        .reduce((sum: number, result: { output_tokens: number }) => sum + result.output_tokens, 0);
    };
    // The usage is recorded after the answer: wait until it shows, then it must be exactly the request's.
    await vi.waitFor(() => expect(outputTokens()).toBeGreaterThan(0), { timeout: 10_000, interval: 50 });
    expect(outputTokens()).toBe(4);
    // Three weeks of days are three pages of the usage API: all of them are printed, today's included.
    const weeks = new Date(Date.now() - 20 * 86_400_000).toISOString();
    for (const target of [[], ['--url', url]]) {
      const usage = run(dir, ['usage', '--tenant', tenantId, '--start', weeks, ...target]);
      expect(usage.status, usage.stderr).toBe(0);
      const page = JSON.parse(usage.stdout);
      expect(page).toMatchObject({ object: 'page', has_more: false, next_page: null });
      expect(page.data.length).toBeGreaterThanOrEqual(21);
      const tokens = page.data
        .flatMap((bucket: { results: Array<{ output_tokens: number }> }) => bucket.results)
        .reduce((sum: number, result: { output_tokens: number }) => sum + result.output_tokens, 0);
      expect(tokens, target.join(' ')).toBe(4);
    }
    const csv = run(dir, ['invoice', '--tenant', tenantId, '--month', month, '--format', 'csv']);
    expect(csv.status, csv.stderr).toBe(0);
    expect(csv.stdout).toContain('sim-pro-32k');
    const html = run(dir, ['invoice', '--tenant', tenantId, '--month', month, '--format', 'html', '--url', url]);
    expect(html.stdout).toContain('<html');
    // The invoice list and the tenant itself, the same from the store and from the gateway.
    const invoiceJson = JSON.parse(run(dir, ['invoice', '--tenant', tenantId, '--month', month]).stdout);
    for (const target of [[], ['--url', url]]) {
      const listed = run(dir, ['invoices', '--tenant', tenantId, ...target]);
      expect(listed.status, listed.stderr).toBe(0);
      const entry = JSON.parse(listed.stdout).data.find((invoice: { period: string }) => invoice.period === month);
      expect(entry).toMatchObject({ id: invoiceJson.id, amount_due: invoiceJson.totals.total.amount });
      const tenant = run(dir, ['tenants', 'get', tenantId, ...target]);
      expect(JSON.parse(tenant.stdout)).toMatchObject({ id: tenantId, object: 'tenant', name: 'billed' });
      const unknown = run(dir, ['tenants', 'get', 'ten_nope', ...target]);
      expect(unknown.status).not.toBe(0);
      expect(unknown.stderr).toContain('404 tenant_not_found');
    }
    expect(banner).toContain('Admin token');
  });

  it('plans set refuses a plan the admin API refuses, with the same error from the store and --url, storing nothing', async () => {
    const dir = workspace();
    const { url } = await serve(dir);
    const tenantId = JSON.parse(run(dir, ['tenants', 'create', 'planned']).stdout).id as string;
    for (const bad of [
      ['--weight', '0'],
      ['--weight', '-3'],
      ['--rpm', '0'],
    ]) {
      const store = run(dir, ['plans', 'set', '--tenant', tenantId, ...bad]);
      const remote = run(dir, ['plans', 'set', '--tenant', tenantId, ...bad, '--url', url]);
      expect(store.status, bad.join(' ')).not.toBe(0);
      expect(remote.status, bad.join(' ')).not.toBe(0);
      expect(store.stderr).toContain('400 invalid_value');
      expect(store.stderr).toBe(remote.stderr);
    }
    for (const bad of [
      ['--weight', 'abc'],
      ['--rpm', '1e2'],
    ]) {
      const result = run(dir, ['plans', 'set', '--tenant', tenantId, ...bad]);
      expect(result.status, bad.join(' ')).not.toBe(0);
      expect(result.stderr).toContain(`option '${bad[0]}`);
    }
    const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
    try {
      expect(await store.getSetting(`plan:tenant:${tenantId}`)).toBeUndefined();
    } finally {
      await store.close();
    }
    const good = run(dir, ['plans', 'set', '--tenant', tenantId, '--rpm', '100', '--weight', '0.5']);
    expect(good.status, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout)).toMatchObject({ rpm: 100, weight: 0.5 });
  });

  it('billing set and show, balance: the same settings and refusals from the store and --url, bad input changing nothing', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const { url, banner } = await serve(dir);
    const tenantId = JSON.parse(run(dir, ['tenants', 'create', 'billed']).stdout).id as string;
    const remote = ['--url', url];
    const json = (args: string[]) => {
      const result = run(dir, args);
      expect(result.status, `${args.join(' ')}: ${result.stderr}`).toBe(0);
      return JSON.parse(result.stdout);
    };
    const adminToken = /Admin token: (\S+)/.exec(banner)![1]!;
    const admin = async (route: string) => {
      const response = await fetch(`${url}/admin/v1${route}`, { headers: { authorization: `Bearer ${adminToken}` } });
      return { status: response.status, body: await response.json() };
    };
    const show = ['billing', 'show', '--tenant', tenantId];
    for (const [target, other] of [
      [[], remote],
      [remote, []],
    ] as const) {
      const set = json([
        'billing',
        'set',
        '--tenant',
        tenantId,
        '--mode',
        'postpaid',
        '--credit-limit',
        '50',
        '--budget',
        '100',
        '--enforcement',
        'soft',
        ...target,
      ]);
      const expected = {
        mode: 'postpaid',
        credit_limit: '50',
        budget: { monthly_limit: '100', enforcement: 'soft', thresholds: [50, 80, 100], webhook_url: null },
      };
      expect(set).toMatchObject(expected);
      // Read back the other way: the store and the running gateway agree.
      expect(json([...show, ...other])).toMatchObject(expected);
      expect((await admin(`/tenants/${tenantId}/billing`)).body).toMatchObject(expected);

      // Only the budget: the mode and credit limit are kept, the budget is replaced whole (enforcement back to hard).
      json(['billing', 'set', '--tenant', tenantId, '--budget', '20', '--thresholds', '90', ...target]);
      expect(json([...show, ...other])).toMatchObject({
        mode: 'postpaid',
        credit_limit: '50',
        budget: { monthly_limit: '20', enforcement: 'hard', thresholds: [90] },
      });

      const removed = json(['billing', 'set', '--tenant', tenantId, '--mode', 'prepaid', '--no-budget', ...target]);
      expect(removed).toMatchObject({ mode: 'prepaid', credit_limit: '0', budget: null });
      expect((await admin(`/tenants/${tenantId}/billing`)).body).toMatchObject({ mode: 'prepaid', budget: null });
    }
    // Refused input changes nothing, and both modes refuse it with the same words.
    json(['billing', 'set', '--tenant', tenantId, '--mode', 'postpaid', '--credit-limit', '50', '--budget', '20']);
    const before = json(show);
    const refusals: Array<[string[], string]> = [
      [['--budget', 'abc'], '400 invalid_value'],
      [['--credit-limit', '1e3'], '400 invalid_value'],
      [['--budget', '5', '--thresholds', '2000'], '400 invalid_value'],
      [['--mode', 'prepaid', '--credit-limit', '5'], '--credit-limit'],
      [['--enforcement', 'soft'], '--budget'],
      [['--mode', 'weekly'], "option '--mode <mode>' argument 'weekly' is invalid"],
      [[], 'nothing to set'],
    ];
    for (const [flags, message] of refusals) {
      const refused = run(dir, ['billing', 'set', '--tenant', tenantId, ...flags]);
      expect(refused.status, flags.join(' ')).not.toBe(0);
      expect(refused.stderr, flags.join(' ')).toContain(message);
      expect(run(dir, ['billing', 'set', '--tenant', tenantId, ...flags, ...remote]).stderr).toBe(refused.stderr);
    }
    expect(json([...show, ...remote])).toEqual(before);

    const unknown = run(dir, ['billing', 'show', '--tenant', 'ten_nope']);
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toContain('404 tenant_not_found');
    expect(run(dir, ['billing', 'show', '--tenant', 'ten_nope', ...remote]).stderr).toBe(unknown.stderr);

    expect(run(dir, ['credits', 'add', '--tenant', tenantId, '--amount', '2.5']).status).toBe(0);
    for (const target of [[], remote]) {
      expect(json(['balance', '--tenant', tenantId, ...target])).toMatchObject({
        object: 'billing.balance',
        tenant_id: tenantId,
        mode: 'postpaid',
        balance: '2.5',
        credit_limit: '50',
        available: '52.5',
      });
      const missing = run(dir, ['balance', '--tenant', 'ten_nope', ...target]);
      expect(missing.status).not.toBe(0);
      expect(missing.stderr).toContain('404 tenant_not_found');
    }
  });

  it('invoice refuses a month the admin API would misread (year 0000), as the admin route does', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const { url, banner } = await serve(dir);
    const tenantId = JSON.parse(run(dir, ['tenants', 'create', 'invoiced']).stdout).id as string;
    for (const month of ['0000-01', '0099-12', '2026-13', '26-01']) {
      for (const target of [[], ['--url', url]]) {
        const refused = run(dir, ['invoice', '--tenant', tenantId, '--month', month, ...target]);
        expect(refused.status, month).not.toBe(0);
        expect(refused.stderr, month).toContain("option '--month <yyyy-mm>'");
        expect(refused.stdout).toBe('');
      }
    }
    const good = run(dir, ['invoice', '--tenant', tenantId, '--month', '1970-01']);
    expect(good.status, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout).period).toMatchObject({
      start: '1970-01-01T00:00:00.000Z',
      end: '1970-02-01T00:00:00.000Z',
    });
    const adminToken = /Admin token: (\S+)/.exec(banner)![1]!;
    for (const invoice of ['0000-01', `inv_${tenantId}_000001`, '0050-06']) {
      const response = await fetch(`${url}/admin/v1/tenants/${tenantId}/invoices/${invoice}`, {
        headers: { authorization: `Bearer ${adminToken}` },
      });
      expect(response.status, invoice).toBe(400);
      expect(((await response.json()) as { error: unknown }).error).toMatchObject({
        type: 'invalid_request_error',
        param: 'invoice',
        code: 'invalid_value',
      });
    }
    const ok = await fetch(`${url}/admin/v1/tenants/${tenantId}/invoices/9999-12`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(ok.status).toBe(200);
  });

  it('keys budget and keys limits write what the admin API writes from the store and --url, refusing the same input', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const { url } = await serve(dir);
    const tenantId = JSON.parse(run(dir, ['tenants', 'create', 'limited']).stdout).id as string;
    const keyId = JSON.parse(run(dir, ['keys', 'create', '--tenant', tenantId]).stdout).id as string;
    const remote = ['--url', url];
    const readStore = async () => {
      const store = await createStore(`sqlite://${path.join(dir, 'data', 'tollgate.db')}`);
      try {
        const budget = (await store.listBudgets(tenantId)).find((entry) => entry.scope === 'key');
        const limits = await store.getSetting(`limits:key:${keyId}`);
        return { budget, limits: limits === undefined ? undefined : JSON.parse(limits) };
      } finally {
        await store.close();
      }
    };
    for (const [index, target] of [[], remote].entries()) {
      const limit = String(5 + index);
      const budget = run(dir, [
        'keys',
        'budget',
        '--key',
        keyId,
        '--budget',
        limit,
        '--enforcement',
        'soft',
        '--thresholds',
        '75,100',
        ...target,
      ]);
      expect(budget.status, budget.stderr).toBe(0);
      expect(JSON.parse(budget.stdout)).toMatchObject({
        object: 'budget',
        scope: 'key',
        scope_id: keyId,
        monthly_limit: limit,
      });
      const limits = run(dir, [
        'keys',
        'limits',
        '--key',
        keyId,
        '--rpm',
        String(7 + index),
        '--concurrency',
        '2',
        ...target,
      ]);
      expect(limits.status, limits.stderr).toBe(0);
      expect(JSON.parse(limits.stdout)).toMatchObject({
        object: 'key_limits',
        key_id: keyId,
        rpm: 7 + index,
        concurrency: 2,
      });
      const stored = await readStore();
      expect(stored.budget).toMatchObject({
        monthlyLimit: parseNano(limit),
        enforcement: 'soft',
        thresholds: [75, 100],
      });
      expect(stored.limits).toEqual({ rpm: 7 + index, concurrency: 2 });
    }
    // Refused input changes nothing, and both modes refuse it with the same words.
    const stored = await readStore();
    const refusals: Array<[string[], string]> = [
      [['keys', 'budget', '--key', keyId, '--budget', '1', '--thresholds', '0'], '400 invalid_value'],
      [['keys', 'budget', '--key', keyId, '--budget', '-1x'], '400 invalid_value'],
      [['keys', 'budget', '--key', 'key_nope', '--budget', '1'], '404 key_not_found'],
      [['keys', 'limits', '--key', keyId, '--rpm', '0'], '400 invalid_value'],
      [['keys', 'limits', '--key', 'key_nope', '--rpm', '1'], '404 key_not_found'],
    ];
    for (const [args, message] of refusals) {
      const refused = run(dir, args);
      expect(refused.status, args.join(' ')).not.toBe(0);
      expect(refused.stderr, args.join(' ')).toContain(message);
      expect(run(dir, [...args, ...remote]).stderr).toBe(refused.stderr);
    }
    const form = run(dir, ['keys', 'limits', '--key', keyId, '--tpm', '1e3']);
    expect(form.status).not.toBe(0);
    expect(form.stderr).toContain("option '--tpm <n>'");
    expect(await readStore()).toEqual(stored);

    // Without --budget the budget is shown; --no-budget removes it, in either mode.
    for (const target of [[], remote]) {
      const shown = run(dir, ['keys', 'budget', '--key', keyId, ...target]);
      expect(shown.status, shown.stderr).toBe(0);
      expect(JSON.parse(shown.stdout)).toMatchObject({ scope_id: keyId, monthly_limit: '6', enforcement: 'soft' });
    }
    const removed = run(dir, ['keys', 'budget', '--key', keyId, '--no-budget']);
    expect(JSON.parse(removed.stdout)).toMatchObject({ scope_id: keyId, deleted: true });
    expect((await readStore()).budget).toBeUndefined();
    const gone = run(dir, ['keys', 'budget', '--key', keyId, ...remote]);
    expect(gone.status).not.toBe(0);
    expect(gone.stderr).toContain('404 budget_not_found');
    const stray = run(dir, ['keys', 'budget', '--key', keyId, '--thresholds', '50']);
    expect(stray.status).not.toBe(0);
    expect(stray.stderr).toContain('--budget');
  });

  it('prices list and add, margin and fleet: from the store and --url, refusing a bad version in both', async () => {
    const dir = cliWorkspace(pricedSimulatedConfig);
    const served = await serve(dir);
    const { url } = served;
    const remote = ['--url', url];
    const json = (args: string[]) => {
      const result = run(dir, args);
      expect(result.status, `${args.join(' ')}: ${result.stderr}`).toBe(0);
      return JSON.parse(result.stdout);
    };
    const models = {
      'sim-pro-32k': { input: '1', output: '3' },
      'sim-pro-128k': { input: '6', output: '10' },
      'sim-embed': { input: '0.5', output: '0' },
    };
    writeFileSync(
      path.join(dir, 'v2.yaml'),
      stringifyYaml({ id: 'v2', effective_from: '2099-01-01T00:00:00Z', models }),
    );
    writeFileSync(
      path.join(dir, 'v3.json'),
      JSON.stringify({ id: 'v3', effective_from: '2099-06-01T00:00:00Z', models }),
    );
    const { 'sim-embed': _left, ...someModels } = models;
    writeFileSync(
      path.join(dir, 'partial.json'),
      JSON.stringify({ id: 'v4', effective_from: '2099-09-01T00:00:00Z', models: someModels }),
    );
    writeFileSync(path.join(dir, 'broken.json'), '{"id": ');

    expect(json(['prices', 'add', '--file', 'v2.yaml'])).toEqual({ object: 'price_version', id: 'v2' });
    expect(json(['prices', 'add', '--file', 'v3.json', ...remote])).toEqual({ object: 'price_version', id: 'v3' });
    for (const target of [[], remote]) {
      const book = json(['prices', 'list', ...target]);
      expect(
        book.versions.map((version: { id: string }) => version.id),
        target.join(' '),
      ).toEqual(['v2', 'v3']);
      expect(book.in_force.map((version: { id: string }) => version.id)).toEqual(['v1']);
    }
    // The gateway added v3 itself: it schedules it at once (v2, added to the store, at its next refresh).
    expect(json(['prices', 'list']).scheduled.map((version: { id: string }) => version.id)).toEqual(['v2', 'v3']);
    expect(json(['prices', 'list', ...remote]).scheduled.map((version: { id: string }) => version.id)).toContain('v3');

    for (const [file, message] of [
      ['partial.json', '400 invalid_price_version'],
      ['v2.yaml', '400 invalid_price_version'],
      ['broken.json', '--file broken.json'],
      ['missing.json', '--file missing.json'],
    ]) {
      const store = run(dir, ['prices', 'add', '--file', file!]);
      expect(store.status, file).not.toBe(0);
      expect(store.stderr, file).toContain(message);
      expect(run(dir, ['prices', 'add', '--file', file!, ...remote]).stderr).toBe(store.stderr);
    }
    expect(json(['prices', 'list']).versions.map((version: { id: string }) => version.id)).toEqual(['v2', 'v3']);

    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: demoKeyOf(served.banner), maxRetries: 0 });
    await client.chat.completions.create({
      model: 'sim-pro-32k',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 4,
    });
    const start = String(Math.floor(Date.now() / 1000) - 3_600);
    const requestsOf = (report: { data: { data: Array<{ model: string; requests: number }> } }) =>
      report.data.data.find((line) => line.model === 'sim-pro-32k')?.requests ?? 0;
    await vi.waitFor(() => expect(requestsOf(json(['margin', '--start', start]))).toBe(1), {
      timeout: 10_000,
      interval: 100,
    });
    const end = new Date().toISOString();
    const fromStore = json(['margin', '--start', start, '--end', end]);
    expect(fromStore).toMatchObject({ object: 'margin_report', start: Number(start) });
    expect(json(['margin', '--start', start, '--end', end, ...remote])).toEqual(fromStore);
    for (const flags of [
      ['--start', 'abc'],
      ['--start', end, '--end', start],
    ]) {
      const refused = run(dir, ['margin', ...flags]);
      expect(refused.status, flags.join(' ')).not.toBe(0);
      expect(refused.stderr).toContain('400 invalid_value');
      expect(run(dir, ['margin', ...flags, ...remote]).stderr).toBe(refused.stderr);
    }

    expect(json(['fleet', ...remote])).toMatchObject({ object: 'fleet' });
    const fleet = run(dir, ['fleet']);
    expect(fleet.status).not.toBe(0);
    expect(fleet.stderr).toContain('--url');
  });
});
