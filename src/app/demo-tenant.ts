/** The demo tenant and key created on the very first start, so a newcomer can call the gateway at once. */
import { parseNano } from '../billing/nano.js';
import type { Store } from '../store/store.js';
import type { TenantService } from '../tenancy/tenant-service.js';

/**
 * Creates the demo tenant, its key and a welcome credit once per store; returns the key only on that first call.
 * The credit is in the price book's currency (CNY by default).
 */
export async function ensureDemoTenant(
  store: Store,
  tenants: TenantService,
  credit: string,
  currency = 'CNY',
): Promise<string | undefined> {
  if (!(await store.putSettingIfAbsent('demo_tenant', 'creating'))) return undefined;
  const tenant = await tenants.createTenant('demo');
  const amount = parseNano(credit);
  if (amount > 0n) {
    await store.addWalletTransaction({
      tenantId: tenant.id,
      kind: 'topup',
      amount,
      currency,
      idempotencyKey: 'demo-welcome-credit',
      note: 'welcome credit',
    });
  }
  const created = await tenants.createKey(tenant.id, { name: 'demo key', models: null, expiresAt: null });
  return created.key;
}
