/**
 * Billing end to end through the official SDK: prepaid wallets that never overspend (on SQLite and PostgreSQL),
 * exact charges, idempotent top-ups, usage and invoices that add up to the ledger, tenant isolation, budgets,
 * repricing that never rewrites history.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { journalDirectory } from '../src/app/left-settlements.js';
import { countPromptTokens } from '../src/metering/token-counter.js';
import { readJournal } from './support/journal.js';
import { clearOfMonthEnd } from './support/month-boundary.js';
import { openAIErrors } from './support/openai-schema.js';
import { dropSchema, schemaUrl, uniqueSchema } from './support/postgres-schema.js';
import { pricedSimulatedConfig, startTestGateway, type TestGateway } from './support/test-gateway.js';
import { startWebhookReceiver } from './support/webhook-receiver.js';

const messages = [{ role: 'user' as const, content: 'Price this answer exactly, please.' }];
const promptTokens = countPromptTokens('chat', { messages });

/** Sends `count` chat requests at once; counts those that passed and those refused with `insufficient_quota`. */
async function concurrentChats(client: OpenAI, count: number, maxTokens: number) {
  const results = await Promise.allSettled(
    Array.from({ length: count }, () =>
      client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: maxTokens }),
    ),
  );
  const passed = results.filter((result) => result.status === 'fulfilled').length;
  const refused = results.filter(
    (result) => result.status === 'rejected' && (result.reason as { code?: string }).code === 'insufficient_quota',
  ).length;
  return { passed, refused };
}
/** sim-pro-32k: 0.8 yuan per million input tokens = 800 nano-yuan per token; output 2 yuan = 2000 nano-yuan. */
const costNano = (prompt: number, completion: number) => BigInt(prompt) * 800n + BigInt(completion) * 2000n;
const nanoToDecimal = (nano: bigint) => {
  const digits = nano.toString().padStart(10, '0');
  const fraction = digits.slice(-9).replace(/0+$/, '');
  return `${digits.slice(0, -9)}${fraction ? `.${fraction}` : ''}`;
};
const decimalToNano = (text: string) => {
  const [whole, fraction = ''] = text.split('.');
  return BigInt(whole!) * 1_000_000_000n + BigInt(fraction.padEnd(9, '0'));
};

async function caught(promise: Promise<unknown>) {
  try {
    await promise;
  } catch (error: unknown) {
    return error as InstanceType<typeof OpenAI.APIError>;
  }
  throw new Error('expected an error');
}

function walletSuite(name: string, schema: string | undefined) {
  describe(`wallets on ${name}`, () => {
    let harness: TestGateway;
    beforeAll(async () => {
      harness = await startTestGateway(
        pricedSimulatedConfig,
        {},
        schema === undefined ? {} : { storeUrl: schemaUrl(schema) },
      );
    });
    afterAll(async () => {
      await harness?.close();
      if (schema !== undefined) await dropSchema(schema);
    });

    it('refuses a prepaid tenant without credit with 429 insufficient_quota and charges nothing', async () => {
      const { key, tenantId } = await harness.createTenantWithKey();
      const error = await caught(
        harness.client(key).chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 }),
      );
      expect(error).toBeInstanceOf(OpenAI.RateLimitError);
      expect(error.code).toBe('insufficient_quota');
      const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
      expect(balance.body).toMatchObject({ balance: '0', reserved: '0' });
    });

    it('charges the exact rated amount and releases the reservation', async () => {
      const { key, tenantId } = await harness.createTenantWithKey({ credit: '1' });
      const client = harness.client(key);
      const reply = await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 10 });
      expect(reply.usage?.prompt_tokens).toBe(promptTokens);
      const expected = 1_000_000_000n - costNano(promptTokens, 10);
      const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
      expect(balance.body.balance).toBe(nanoToDecimal(expected));
      expect(balance.body.reserved).toBe('0');
      const own = await fetch(`${harness.url}/v1/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
      expect(((await own.json()) as { balance: string }).balance).toBe(nanoToDecimal(expected));
    });

    it('lets at most 20 of 200 concurrent requests through against a wallet that covers 20', async () => {
      const maxTokens = 1000;
      const quote = costNano(promptTokens, maxTokens);
      const credit = quote * 20n + quote / 2n;
      const { key, tenantId } = await harness.createTenantWithKey({ credit: nanoToDecimal(credit) });
      const { passed, refused } = await concurrentChats(harness.client(key, { timeout: 60_000 }), 200, maxTokens);
      expect(passed).toBeLessThanOrEqual(20);
      expect(passed).toBeGreaterThan(0);
      expect(passed + refused).toBe(200);
      const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
      const left = decimalToNano(balance.body.balance);
      expect(left).toBeGreaterThanOrEqual(0n);
      expect(left).toBe(credit - quote * BigInt(passed));
      expect(balance.body.reserved).toBe('0');
    });
  });
}

walletSuite('SQLite', undefined);
walletSuite('PostgreSQL', uniqueSchema('billing'));

describe('money operations, usage, invoices', () => {
  let harness: TestGateway;
  beforeAll(async () => {
    harness = await startTestGateway(pricedSimulatedConfig);
  });
  afterAll(async () => harness?.close());

  it('top-ups are idempotent by Idempotency-Key', async () => {
    const { tenantId } = await harness.createTenantWithKey();
    const post = async () =>
      fetch(`${harness.url}/admin/v1/tenants/${tenantId}/credits`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${harness.adminToken}`,
          'content-type': 'application/json',
          'idempotency-key': 'abc',
        },
        body: JSON.stringify({ amount: '5', currency: 'CNY', note: 'invoice 42' }),
      });
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(200);
    expect((await harness.admin('GET', `/tenants/${tenantId}/balance`)).body.balance).toBe('5');
    const wrongCurrency = await harness.admin('POST', `/tenants/${tenantId}/credits`, { amount: '5', currency: 'USD' });
    expect(wrongCurrency.status).toBe(400);
    const negative = await harness.admin('POST', `/tenants/${tenantId}/credits`, { amount: '-5', currency: 'CNY' });
    expect(negative.status).toBe(400);
    expect((await harness.admin('GET', `/tenants/${tenantId}/balance`)).body.balance).toBe('5');
  });

  it('a reused Idempotency-Key with another amount is refused with 409, and changes nothing', async () => {
    const { tenantId } = await harness.createTenantWithKey();
    const post = async (body: Record<string, string>) => {
      const response = await fetch(`${harness.url}/admin/v1/tenants/${tenantId}/credits`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${harness.adminToken}`,
          'content-type': 'application/json',
          'idempotency-key': 'typo',
        },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as { id?: string; error?: { code: string } } };
    };
    const first = await post({ amount: '1', currency: 'CNY' });
    expect(first.status).toBe(201);
    const different = await post({ amount: '2', currency: 'CNY' });
    expect(different.status).toBe(409);
    expect(openAIErrors('ErrorResponse', different.body)).toEqual([]);
    expect(different.body.error?.code).toBe('idempotency_key_reused');
    const same = await post({ amount: '1', currency: 'CNY' });
    expect(same).toMatchObject({ status: 200, body: { id: first.body.id } });
    expect((await harness.admin('GET', `/tenants/${tenantId}/balance`)).body.balance).toBe('1');
  });

  it('refuses amounts and balances the ledger cannot hold with 400, and writes nothing', async () => {
    const { tenantId } = await harness.createTenantWithKey();
    const credit = (amount: string) =>
      harness.admin('POST', `/tenants/${tenantId}/credits`, { amount, currency: 'CNY' });
    const huge = await credit('99999999999999999999999');
    expect(huge.status).toBe(400);
    expect(huge.body.error).toMatchObject({ param: 'amount', code: 'invalid_value' });
    expect((await credit('9000000000')).status).toBe(201);
    const past = await credit('9000000000');
    expect(past.status).toBe(400);
    expect(past.body.error).toMatchObject({ param: 'amount', code: 'balance_limit_exceeded' });
    const postpaid = await harness.admin('PUT', `/tenants/${tenantId}/billing`, {
      mode: 'postpaid',
      credit_limit: '9000000000',
    });
    expect(postpaid.status).toBe(400);
    expect(postpaid.body.error).toMatchObject({ param: 'credit_limit', code: 'balance_limit_exceeded' });
    // The wallet still reads, and still serves.
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(balance.body).toMatchObject({ balance: '9000000000', mode: 'prepaid', credit_limit: '0' });
    expect(await harness.gateway.store.listWalletTransactions(tenantId)).toHaveLength(1);
  });

  it('a budget reads back with the billing settings, and null removes it', async () => {
    await clearOfMonthEnd(15_000); // the spend counts in one month
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const budget = { monthly_limit: nanoToDecimal(costNano(promptTokens, 5)), enforcement: 'hard' };
    const set = await harness.admin('PUT', `/tenants/${tenantId}/billing`, { mode: 'prepaid', budget });
    expect(set.status).toBe(200);
    const shown = { ...budget, thresholds: [50, 80, 100], webhook_url: null };
    expect(set.body).toMatchObject({ balance: '10', budget: shown });
    expect((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body).toMatchObject({ budget: shown });
    const client = harness.client(key);
    await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
    const used = await caught(client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 }));
    expect(used.code).toBe('insufficient_quota');

    const removed = await harness.admin('PUT', `/tenants/${tenantId}/billing`, { mode: 'prepaid', budget: null });
    expect(removed.status).toBe(200);
    expect(removed.body.budget).toBeNull();
    expect((await harness.admin('GET', `/tenants/${tenantId}/billing`)).body.budget).toBeNull();
    await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
    // Leaving `budget` out keeps whatever there is.
    await harness.admin('PUT', `/tenants/${tenantId}/billing`, { mode: 'prepaid', budget });
    const kept = await harness.admin('PUT', `/tenants/${tenantId}/billing`, { mode: 'prepaid' });
    expect(kept.body.budget).toMatchObject(shown);
  });

  it('usage buckets and the invoice add up to the ledger; other tenants see nothing', async () => {
    await clearOfMonthEnd(15_000); // one month, one invoice
    const a = await harness.createTenantWithKey({ credit: '10' });
    const b = await harness.createTenantWithKey({ credit: '10' });
    const clientA = harness.client(a.key);
    let expectedNano = 0n;
    let expectedOutput = 0;
    for (const maxTokens of [3, 7, 11]) {
      await clientA.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: maxTokens });
      expectedNano += costNano(promptTokens, maxTokens);
      expectedOutput += maxTokens;
    }
    const stream = await clientA.chat.completions.create({
      model: 'sim-pro-32k',
      messages,
      max_tokens: 4,
      stream: true,
    });
    for await (const _ of stream) {
      // drain
    }
    expectedNano += costNano(promptTokens, 4);
    expectedOutput += 4;

    const start = Math.floor(Date.now() / 1000) - 3600;
    const usage = await fetch(`${harness.url}/v1/usage?start_time=${start}&bucket_width=1h&group_by=model`, {
      headers: { authorization: `Bearer ${a.key}` },
    });
    expect(usage.status).toBe(200);
    const page = (await usage.json()) as { data: Array<{ results: Array<{ output_tokens: number; model: string }> }> };
    expect(openAIErrors('UsageResponse', page)).toEqual([]);
    const results = page.data.flatMap((bucket) => bucket.results);
    expect(results.reduce((sum, result) => sum + result.output_tokens, 0)).toBe(expectedOutput);
    expect(results.every((result) => result.model === 'sim-pro-32k')).toBe(true);

    const list = await fetch(`${harness.url}/v1/billing/invoices`, { headers: { authorization: `Bearer ${a.key}` } });
    const invoices = ((await list.json()) as { data: Array<{ id: string; amount_due: string }> }).data;
    expect(invoices).toHaveLength(1);
    const invoiceUrl = `${harness.url}/v1/billing/invoices/${invoices[0]!.id}`;
    const json = await fetch(invoiceUrl, { headers: { authorization: `Bearer ${a.key}` } });
    expect(json.status).toBe(200);
    const text = await json.text();
    const again = await (await fetch(invoiceUrl, { headers: { authorization: `Bearer ${a.key}` } })).text();
    expect(again).toBe(text);
    const invoice = JSON.parse(text) as { totals: { total: { amount_exact: string; amount: string } } };
    expect(decimalToNano(invoice.totals.total.amount_exact)).toBe(expectedNano);
    // The list shows the invoice's own total, rounded to the fen, not the ledger's nano-units.
    expect(invoices[0]!.amount_due).toBe(invoice.totals.total.amount);
    expect(invoices[0]!.amount_due).toMatch(/^\d+\.\d{2}$/);
    const ledger = await harness.gateway.store.sumUsageEvents({ tenantId: a.tenantId, start: 0, end: Date.now() + 1 });
    expect(ledger.amount).toBe(expectedNano);

    const xml = await fetch(`${invoiceUrl}?format=xml`, { headers: { authorization: `Bearer ${a.key}` } });
    expect(xml.status).toBe(400);
    expect(((await xml.json()) as { error: { param: string } }).error.param).toBe('format');
    const csv = await fetch(`${invoiceUrl}?format=csv`, { headers: { authorization: `Bearer ${a.key}` } });
    expect(csv.headers.get('content-type')).toContain('text/csv');
    const html = await fetch(`${invoiceUrl}?format=html`, { headers: { authorization: `Bearer ${a.key}` } });
    expect(html.headers.get('content-type')).toContain('text/html');

    // A month the calendar cannot hold is a 400 on `invoice`, never another month's invoice (0000-01 read as 1900).
    for (const month of ['0000-01', '1969-12']) {
      const early = await fetch(`${harness.url}/v1/billing/invoices/${month}`, {
        headers: { authorization: `Bearer ${a.key}` },
      });
      expect(early.status, month).toBe(400);
      expect(((await early.json()) as { error: { param: string } }).error.param).toBe('invoice');
    }

    // B cannot read A's invoice (404, not 403) and sees no usage of A.
    const foreign = await fetch(invoiceUrl, { headers: { authorization: `Bearer ${b.key}` } });
    expect(foreign.status).toBe(404);
    const usageB = await fetch(`${harness.url}/v1/usage?start_time=${start}&bucket_width=1h`, {
      headers: { authorization: `Bearer ${b.key}` },
    });
    const pageB = (await usageB.json()) as { data: Array<{ results: unknown[] }> };
    expect(pageB.data.flatMap((bucket) => bucket.results)).toEqual([]);
  });

  it('a hard monthly budget blocks once reached', async () => {
    await clearOfMonthEnd(15_000); // the spend counts in one month
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '10' });
    const limit = costNano(promptTokens, 5) * 2n;
    const set = await harness.admin('PUT', `/tenants/${tenantId}/billing`, {
      mode: 'prepaid',
      budget: { monthly_limit: nanoToDecimal(limit), enforcement: 'hard' },
    });
    expect(set.status).toBe(200);
    const client = harness.client(key);
    await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
    await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
    const error = await caught(client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 }));
    expect(error.code).toBe('insufficient_quota');
  });

  it("reads a key's budget back and removes it: a removed hard budget no longer refuses the key", async () => {
    const { key, keyId } = await harness.createTenantWithKey({ credit: '10' });
    const none = await harness.admin('GET', `/keys/${keyId}/budget`);
    expect(none.status).toBe(404);
    expect(none.body.error.code).toBe('budget_not_found');
    // A budget smaller than one request: the key is refused at once.
    const put = await harness.admin('PUT', `/keys/${keyId}/budget`, { monthly_limit: '0.000001', enforcement: 'hard' });
    expect(put.status).toBe(200);
    const expected = {
      object: 'budget',
      scope: 'key',
      scope_id: keyId,
      monthly_limit: '0.000001',
      enforcement: 'hard',
      thresholds: [50, 80, 100],
      webhook_url: null,
    };
    expect(put.body).toEqual(expected);
    expect((await harness.admin('GET', `/keys/${keyId}/budget`)).body).toEqual(expected);
    const client = harness.client(key);
    const refused = await caught(client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 }));
    expect(refused.code).toBe('insufficient_quota');

    const removed = await harness.admin('DELETE', `/keys/${keyId}/budget`);
    expect(removed.body).toEqual({ object: 'budget', scope: 'key', scope_id: keyId, deleted: true });
    expect((await harness.admin('DELETE', `/keys/${keyId}/budget`)).body.deleted).toBe(false);
    expect((await harness.admin('GET', `/keys/${keyId}/budget`)).status).toBe(404);
    const answer = await client.chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
    expect(answer.usage?.completion_tokens).toBe(5);
    for (const method of ['GET', 'DELETE'] as const) {
      const unknown = await harness.admin(method, '/keys/key_nope/budget');
      expect(unknown.status, method).toBe(404);
      expect(unknown.body.error.code).toBe('key_not_found');
    }
  });

  it('a soft budget sends its threshold webhook once, for the budgeted tenant only', async () => {
    await clearOfMonthEnd(15_000); // the spend counts in one month
    const receiver = await startWebhookReceiver();
    try {
      const budgeted = await harness.createTenantWithKey({ credit: '10' });
      const other = await harness.createTenantWithKey({ credit: '10' });
      const set = await harness.admin('PUT', `/tenants/${budgeted.tenantId}/billing`, {
        mode: 'prepaid',
        budget: {
          // Three requests of 5 output tokens pass 50% on the second: it covers 3.
          monthly_limit: nanoToDecimal(costNano(promptTokens, 5) * 3n),
          enforcement: 'soft',
          thresholds: [50],
          webhook_url: receiver.url,
        },
      });
      expect(set.status).toBe(200);
      for (const tenant of [budgeted, other, budgeted, other, budgeted]) {
        await harness.client(tenant.key).chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 5 });
      }
      await receiver.firstAlert(10_000);
      await new Promise((resolve) => setTimeout(resolve, 200)); // room for a wrong second alert to arrive
      expect(receiver.received.map((event) => [event.scope_id, event.threshold])).toEqual([[budgeted.tenantId, 50]]);
    } finally {
      await receiver.close();
    }
  });

  it('a hard budget lets at most 20 of 200 concurrent requests through when it covers 20', async () => {
    await clearOfMonthEnd(15_000); // the spend counts in one month
    const maxTokens = 200;
    const quote = costNano(promptTokens, maxTokens);
    // The wallet covers all 200: only the budget can refuse.
    const { key, tenantId } = await harness.createTenantWithKey({ credit: nanoToDecimal(quote * 300n) });
    const limit = quote * 20n + quote / 2n;
    const set = await harness.admin('PUT', `/tenants/${tenantId}/billing`, {
      mode: 'prepaid',
      budget: { monthly_limit: nanoToDecimal(limit), enforcement: 'hard' },
    });
    expect(set.status).toBe(200);
    const { passed, refused } = await concurrentChats(harness.client(key, { timeout: 60_000 }), 200, maxTokens);
    expect(passed).toBeLessThanOrEqual(20);
    expect(passed).toBeGreaterThan(0);
    expect(passed + refused).toBe(200);
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    const spent = quote * 300n - decimalToNano(balance.body.balance);
    expect(spent).toBe(quote * BigInt(passed));
    expect(spent).toBeLessThanOrEqual(limit);
  });

  it('repricing takes effect only in the future', async () => {
    const past = await harness.admin('POST', '/prices', {
      id: 'v0',
      effective_from: '2020-01-01T00:00:00Z',
      models: { 'sim-pro-32k': { input: '100', output: '100' } },
    });
    expect(past.status).toBe(400);
    // A version is a whole price list: one that leaves out a served model is refused, naming it.
    const partial = await harness.admin('POST', '/prices', {
      id: 'v2',
      effective_from: '2099-01-01T00:00:00Z',
      models: { 'sim-pro-32k': { input: '1', output: '3' } },
    });
    expect(partial.status).toBe(400);
    expect(partial.body.error).toMatchObject({ code: 'invalid_price_version', param: 'models' });
    expect(partial.body.error.message).toContain('sim-pro-128k, sim-embed');
    const future = await harness.admin('POST', '/prices', {
      id: 'v2',
      effective_from: '2099-01-01T00:00:00Z',
      models: {
        'sim-pro-32k': { input: '1', output: '3' },
        'sim-pro-128k': { input: '5', output: '9' },
        'sim-embed': { input: '0', output: '0' },
      },
    });
    expect(future.status).toBe(201);
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '1' });
    await harness.client(key).chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 2 });
    const balance = await harness.admin('GET', `/tenants/${tenantId}/balance`);
    expect(decimalToNano(balance.body.balance)).toBe(1_000_000_000n - costNano(promptTokens, 2));
  });

  it('names the field the client sent in a refused price version, and lists a future version as scheduled', async () => {
    const models = {
      'sim-pro-32k': { input: '1', output: '3' },
      'sim-pro-128k': { input: '5', output: '9' },
      'sim-embed': { input: '0', output: '0' },
    };
    const post = (body: Record<string, unknown>) => harness.admin('POST', '/prices', body);
    const refusedAt = async (body: Record<string, unknown>, param: string) => {
      const response = await post(body);
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({
        type: 'invalid_request_error',
        code: 'invalid_price_version',
        param,
      });
      expect(response.body.error.message).toContain(param);
      expect(response.body.error.message).not.toMatch(/version\.|versions\[/);
    };
    const from = '2097-01-01T00:00:00Z';
    await refusedAt(
      { id: 'v97', effective_from: from, models: { ...models, 'sim-pro-32k': { input: '1.0000000001', output: '3' } } },
      'models.sim-pro-32k.input',
    );
    await refusedAt(
      {
        id: 'v97',
        effective_from: from,
        models: {
          ...models,
          'sim-pro-128k': {
            tiers: [
              { input: '1', output: '1' },
              { input: '2', output: '2' },
            ],
          },
        },
      },
      'models.sim-pro-128k.tiers[0].max_prompt_tokens',
    );
    expect((await post({ id: 'v97', effective_from: from, models })).status).toBe(201);
    await refusedAt({ id: 'v97', effective_from: '2097-06-01T00:00:00Z', models }, 'id');
    await refusedAt({ id: 'v97b', effective_from: '2097-01-01T00:00:00.000Z', models }, 'effective_from');

    const book = await harness.admin('GET', '/prices');
    expect(book.status).toBe(200);
    const ids = (versions: { id: string }[]) => versions.map((version) => version.id);
    expect(ids(book.body.in_force)).not.toContain('v97');
    expect(book.body.scheduled).toContainEqual({ id: 'v97', effective_from: from });
    expect(ids(book.body.in_force).length).toBeGreaterThan(0);
    for (const version of book.body.in_force)
      expect(Date.parse(version.effective_from)).toBeLessThanOrEqual(Date.now());
  });

  it('reports margin per model', async () => {
    const backwards = await harness.admin('GET', '/margin?start=2030-01-02T00:00:00Z&end=2030-01-01T00:00:00Z');
    expect([backwards.status, backwards.body.error.param]).toEqual([400, 'start']);
    const report = await harness.admin('GET', '/margin');
    expect(report.status).toBe(200);
    expect(JSON.stringify(report.body)).toContain('sim-pro-32k');
  });
});

describe('the settlement journal (embedded mode): responses before their commit', () => {
  let harness: TestGateway;
  beforeAll(async () => {
    harness = await startTestGateway(pricedSimulatedConfig);
  });
  afterAll(async () => harness?.close());

  /** Holds the store's commits at a gate until `release`; `restore` puts the store's own `settle` back. */
  function holdCommits() {
    const store = harness.gateway.store;
    const settle = store.settle.bind(store);
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    store.settle = async (batch) => {
      await gate;
      await settle(batch);
    };
    return {
      release: () => release(),
      restore: () => {
        store.settle = settle;
        release();
      },
    };
  }

  /** Waits 100 ms of timers for `answered` to stay false: what it awaits is held at the gate. */
  async function expectStillWaiting(answered: () => boolean): Promise<void> {
    for (let wait = 0; wait < 20; wait++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(answered()).toBe(false);
  }

  it('answers before the commit, with the settlement journaled, and billing reads wait for the commit', async () => {
    const { key, tenantId } = await harness.createTenantWithKey({ credit: '1' });
    const store = harness.gateway.store;
    const held = holdCommits();
    try {
      const { response } = await harness
        .client(key)
        .chat.completions.create({ model: 'sim-pro-32k', messages, max_tokens: 10 })
        .withResponse();
      const requestId = response.headers.get('x-request-id')!;
      // The answer is out; its commit waits at the gate. The row is not in the store, the settlement is on disk.
      expect(await store.listRequestLogs({ tenantId })).toEqual([]);
      const journaled = readJournal(journalDirectory(harness.dataDir));
      expect(journaled.filter((line) => line.log.requestId === requestId).map((line) => line.log.tenantId)).toEqual([
        tenantId,
      ]);

      let answered = false;
      const tenantBalance = fetch(`${harness.url}/v1/billing/balance`, {
        headers: { authorization: `Bearer ${key}` },
      }).then(async (reply) => {
        answered = true;
        return (await reply.json()) as { balance: string; reserved: string };
      });
      await expectStillWaiting(() => answered);
      held.release();
      const expected = nanoToDecimal(1_000_000_000n - costNano(promptTokens, 10));
      expect(await tenantBalance).toMatchObject({ balance: expected, reserved: '0' });
      // The balance request has a row of its own (once its commit ends); the chat's is there now.
      expect((await store.listRequestLogs({ tenantId })).map((row) => row.requestId)).toContain(requestId);
      const metrics = await (await fetch(`${harness.url}/metrics`)).text();
      expect(Number(/^tollgate_request_log_journaled_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
      expect(metrics).toContain('tollgate_request_log_journal_failures_total 0');
    } finally {
      held.restore();
    }
  });

  it('admits a request sent as soon as the last one answered, although that one holds its reservation until its commit', async () => {
    const store = harness.gateway.store;
    // No max_tokens: the reservation covers the model's whole output cap, far more than the answer costs.
    const ask = (client: OpenAI) => client.chat.completions.create({ model: 'sim-pro-32k', messages });
    // A probe tenant measures the reservation (held while the commit waits) and the charge.
    const probe = await harness.createTenantWithKey({ credit: '100' });
    const measuring = holdCommits();
    let reserved: bigint;
    try {
      await ask(harness.client(probe.key));
      reserved = (await store.getWallet(probe.tenantId))!.reserved;
    } finally {
      measuring.restore();
    }
    await harness.gateway.settled();
    const charged = 100_000_000_000n - (await store.getWallet(probe.tenantId))!.balance;
    expect(charged).toBeGreaterThan(0n);
    expect(reserved).toBeGreaterThan(charged);

    // Enough for two requests one after the other, not for the second while the first's reservation is held.
    const { key, tenantId } = await harness.createTenantWithKey({ credit: nanoToDecimal(reserved + charged + 1n) });
    const client = harness.client(key, { maxRetries: 0 });
    const held = holdCommits();
    try {
      await ask(client);
      expect((await store.getWallet(tenantId))!.reserved).toBe(reserved);
      let answered = false;
      const second = ask(client).finally(() => {
        answered = true;
      });
      await expectStillWaiting(() => answered);
      held.release();
      await second;
    } finally {
      held.restore();
    }
    await harness.gateway.settled();
    expect((await store.getWallet(tenantId))!.balance).toBe(reserved - charged + 1n);
  });
});
