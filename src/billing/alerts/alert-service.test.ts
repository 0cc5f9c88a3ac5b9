import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualClock } from '../../clock/clock.js';
import type { BudgetRecord, LedgerStore } from '../../store/ledger-store.js';
import { BudgetAlertService, type SettledSpendEvent } from './alert-service.js';
import type { WebhookEvent } from './budget-alert-event.js';
import { verifyWebhookSignature, WebhookNotifier } from './webhook-notifier.js';

const NANO = 1_000_000_000n;
const NOV_15 = Date.UTC(2026, 10, 15, 12);
const DEC_01 = Date.UTC(2026, 11, 1, 0, 0, 0);

/** The two ledger operations the service uses, with `claimAlert`'s first-caller-wins semantics. */
class FakeLedger implements Pick<LedgerStore, 'claimAlert' | 'listBudgets'> {
  readonly claimed = new Set<string>();
  claimCalls = 0;
  failClaims = false;
  constructor(public budgets: BudgetRecord[]) {}

  async listBudgets(tenantId?: string): Promise<BudgetRecord[]> {
    return this.budgets.filter((budget) => tenantId === undefined || budget.tenantId === tenantId);
  }

  async claimAlert(alert: { scope: 'tenant' | 'key'; scopeId: string; period: string; threshold: number }) {
    this.claimCalls += 1;
    if (this.failClaims) throw new Error('database is locked');
    const key = `${alert.scope}|${alert.scopeId}|${alert.period}|${alert.threshold}`;
    if (this.claimed.has(key)) return false;
    this.claimed.add(key);
    return true;
  }
}

class RecordingNotifier {
  readonly sent: Array<{ url: string; event: WebhookEvent }> = [];
  enqueue(url: string, event: WebhookEvent): boolean {
    this.sent.push({ url, event });
    return true;
  }
}

function captureLogs() {
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void raw.push(line) });
  const withMessage = (message: string) =>
    raw.map((line) => JSON.parse(line) as Record<string, unknown>).filter((entry) => entry.msg === message);
  return { logger, raw, withMessage };
}

const tenantBudget: BudgetRecord = {
  scope: 'tenant',
  scopeId: 'ten_a',
  tenantId: 'ten_a',
  monthlyLimit: 100n * NANO,
  enforcement: 'soft',
  thresholds: [50, 80, 100],
  webhookUrl: 'https://hooks.example.com/budget',
  updatedAt: 0,
};

const keyBudget: BudgetRecord = {
  scope: 'key',
  scopeId: 'key_1',
  tenantId: 'ten_a',
  monthlyLimit: 10n * NANO,
  enforcement: 'hard',
  thresholds: [90],
  webhookUrl: null,
  updatedAt: 0,
};

function settled(
  before: bigint,
  after: bigint,
  at = NOV_15,
  key?: { before: bigint; after: bigint },
): SettledSpendEvent {
  return {
    tenantId: 'ten_a',
    keyId: 'key_1',
    monthSpendBefore: key === undefined ? { tenant: before } : { tenant: before, key: key.before },
    monthSpendAfter: key === undefined ? { tenant: after } : { tenant: after, key: key.after },
    at,
  };
}

function setup(budgets: BudgetRecord[] = [tenantBudget, keyBudget], ledger = new FakeLedger(budgets)) {
  const notifier = new RecordingNotifier();
  const logs = captureLogs();
  const clock = new VirtualClock(NOV_15 + 5000);
  const service = new BudgetAlertService({ ledger, notifier, logger: logs.logger, clock, defaultCurrency: 'USD' });
  return { ledger, notifier, logs, service, clock };
}

describe('BudgetAlertService', () => {
  it('alerts once for each threshold a settlement crosses, as a log line and a webhook', async () => {
    const { notifier, logs, service } = setup();
    const sent = await service.onSettled({ ...settled(45n * NANO, 82n * NANO), currency: 'CNY' });

    expect(sent.map((alert) => alert.threshold)).toEqual([50, 80]);
    const alerts = logs.withMessage('budget_alert');
    expect(alerts).toHaveLength(2);
    expect(alerts[0]).toMatchObject({
      level: 40,
      scope: 'tenant',
      scopeId: 'ten_a',
      tenantId: 'ten_a',
      period: '2026-11',
      threshold: 50,
      limit: '100',
      spent: '82',
      currency: 'CNY',
      enforcement: 'soft',
      webhook: true,
    });
    expect(notifier.sent.map(({ url, event }) => [url, event.type, event.data.threshold])).toEqual([
      ['https://hooks.example.com/budget', 'budget.threshold_crossed', 50],
      ['https://hooks.example.com/budget', 'budget.threshold_crossed', 80],
    ]);
    const [first] = notifier.sent;
    expect(first?.event.created_at).toBe(Math.floor((NOV_15 + 5000) / 1000));
    expect(first?.event.id).toBe(alerts[0]?.eventId);
    expect(first?.event.data).toMatchObject({ period: '2026-11', limit: '100', spent: '82', currency: 'CNY' });
  });

  it('alerts at exactly the threshold and jumps over several with one alert each', async () => {
    const { notifier, service } = setup([tenantBudget]);
    expect((await service.onSettled(settled(0n, 50n * NANO))).map((alert) => alert.threshold)).toEqual([50]);
    expect((await service.onSettled(settled(50n * NANO, 150n * NANO))).map((alert) => alert.threshold)).toEqual([
      80, 100,
    ]);
    expect(notifier.sent.map(({ event }) => event.data.threshold)).toEqual([50, 80, 100]);
    // The default currency applies when the settlement names none.
    expect(notifier.sent[0]?.event.data.currency).toBe('USD');
  });

  it('sends each alert once per period, however many processes see the crossing', async () => {
    const ledger = new FakeLedger([tenantBudget]);
    const processA = setup([tenantBudget], ledger);
    const processB = setup([tenantBudget], ledger);
    await Promise.all([
      processA.service.onSettled(settled(45n * NANO, 82n * NANO)),
      processB.service.onSettled(settled(45n * NANO, 82n * NANO)),
    ]);
    // A later settlement in the same month re-crossing 80 (after a refund) is not alerted again.
    await processB.service.onSettled(settled(70n * NANO, 85n * NANO));
    const total = processA.notifier.sent.length + processB.notifier.sent.length;
    expect(total).toBe(2);
    expect(
      [...processA.notifier.sent, ...processB.notifier.sent].map(({ event }) => event.data.threshold).sort(),
    ).toEqual([50, 80]);
    expect(ledger.claimCalls).toBe(5);

    // A new month is a new period.
    await processA.service.onSettled(settled(0n, 60n * NANO, DEC_01));
    const december = processA.notifier.sent.filter(({ event }) => event.data.period === '2026-12');
    expect(december.map(({ event }) => event.data.threshold)).toEqual([50]);
  });

  it("evaluates the key's budget next to the tenant's and logs without a webhook when there is no URL", async () => {
    const { notifier, logs, service } = setup();
    const sent = await service.onSettled(
      settled(10n * NANO, 11n * NANO, NOV_15, { before: 8n * NANO, after: 9n * NANO }),
    );
    expect(sent).toEqual([
      {
        scope: 'key',
        scopeId: 'key_1',
        tenantId: 'ten_a',
        period: '2026-11',
        threshold: 90,
        limit: 10n * NANO,
        spent: 9n * NANO,
        currency: 'USD',
        enforcement: 'hard',
      },
    ]);
    expect(notifier.sent).toHaveLength(0);
    expect(logs.withMessage('budget_alert')[0]).toMatchObject({ scope: 'key', webhook: false, spent: '9' });
  });

  it('skips the key budget when the key spend is not reported, and tenants without budgets', async () => {
    const { notifier, logs, service } = setup();
    await service.onSettled(settled(0n, 1n * NANO)); // no key spend, tenant below 50%
    await service.onSettled({ ...settled(0n, 1000n * NANO), tenantId: 'ten_other', keyId: null });
    expect(notifier.sent).toHaveLength(0);
    expect(logs.withMessage('budget_alert')).toHaveLength(0);
  });

  it('caches budgets until reloadBudgets', async () => {
    const ledger = new FakeLedger([]);
    const { notifier, service } = setup([], ledger);
    await service.onSettled(settled(0n, 60n * NANO));
    expect(notifier.sent).toHaveLength(0);

    ledger.budgets = [tenantBudget];
    await service.onSettled(settled(0n, 60n * NANO));
    expect(notifier.sent).toHaveLength(0);
    expect(service.budgetsFor('ten_a', 'key_1')).toEqual({});

    await service.reloadBudgets();
    expect(service.budgetsFor('ten_a', 'key_1')).toEqual({ tenant: tenantBudget });
    await service.onSettled(settled(0n, 60n * NANO));
    expect(notifier.sent.map(({ event }) => event.data.threshold)).toEqual([50]);
  });

  it('tells the request path which settlements may alert: all until the budgets are read, then only budgeted ones', async () => {
    const { service } = setup([tenantBudget, { ...keyBudget, scopeId: 'key_b', tenantId: 'ten_b' }]);
    expect(service.mayAlert('ten_other', null)).toBe(true); // not read yet: cannot rule it out
    await service.reloadBudgets();
    expect(service.mayAlert('ten_a', null)).toBe(true);
    expect(service.mayAlert('ten_a', 'key_unbudgeted')).toBe(true);
    expect(service.mayAlert('ten_b', 'key_b')).toBe(true);
    expect(service.mayAlert('ten_b', 'key_other')).toBe(false);
    expect(service.mayAlert('ten_other', null)).toBe(false);
  });

  it('logs and skips an alert whose claim fails, without rejecting the settlement', async () => {
    const { ledger, notifier, logs, service } = setup();
    ledger.failClaims = true;
    await expect(service.onSettled(settled(45n * NANO, 82n * NANO))).resolves.toEqual([]);
    expect(notifier.sent).toHaveLength(0);
    expect(logs.withMessage('budget_alert_claim_failed')).toHaveLength(2);
  });

  it('logs a budget load failure and retries the load on the next settlement', async () => {
    const ledger = new FakeLedger([tenantBudget]);
    const { notifier, logs, service } = setup([tenantBudget], ledger);
    const listBudgets = ledger.listBudgets.bind(ledger);
    ledger.listBudgets = async () => {
      ledger.listBudgets = listBudgets;
      throw new Error('connection refused');
    };
    await expect(service.onSettled(settled(45n * NANO, 82n * NANO))).resolves.toEqual([]);
    expect(logs.withMessage('budget_alert_load_failed')).toHaveLength(1);
    await service.onSettled(settled(45n * NANO, 82n * NANO));
    expect(notifier.sent).toHaveLength(2);
  });
});

describe('BudgetAlertService with a real webhook receiver', () => {
  const secret = 'alert-service-secret';
  let server: Server;
  let url: string;
  const received: Array<{ headers: IncomingHttpHeaders; body: string }> = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        received.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
        response.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/budget`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('delivers signed alerts that verify with the shared secret', async () => {
    const logs = captureLogs();
    const clock = new VirtualClock(NOV_15);
    const notifier = new WebhookNotifier({ secret, logger: logs.logger, clock });
    const ledger = new FakeLedger([{ ...tenantBudget, webhookUrl: url }]);
    const service = new BudgetAlertService({ ledger, notifier, logger: logs.logger, clock });
    await service.onSettled({ ...settled(0n, 100n * NANO), currency: 'CNY' });
    await notifier.close();

    expect(received).toHaveLength(3);
    for (const delivery of received) {
      const signature = delivery.headers['x-tollgate-signature'] as string;
      expect(verifyWebhookSignature(secret, signature, delivery.body, NOV_15 / 1000, 60)).toBe(true);
      expect(verifyWebhookSignature('not-the-secret', signature, delivery.body, NOV_15 / 1000, 60)).toBe(false);
    }
    const payloads = received.map((delivery) => JSON.parse(delivery.body) as WebhookEvent);
    expect(payloads.map((payload) => payload.data.threshold).sort((a, b) => a - b)).toEqual([50, 80, 100]);
    expect(payloads.every((payload) => payload.data.spent === '100' && payload.data.limit === '100')).toBe(true);
    expect(new Set(received.map((delivery) => delivery.headers['x-tollgate-event-id'])).size).toBe(3);
    expect(logs.raw.join('')).not.toContain(secret);
  });
});
