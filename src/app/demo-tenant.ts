/** The demo tenant and key created on the very first start, so a newcomer can call the gateway at once. */
import type { Store } from '../store/store.js';
import type { TenantService } from '../tenancy/tenant-service.js';

/** Creates the demo tenant and its key once per store; returns the key only on that first call. */
export async function ensureDemoTenant(store: Store, tenants: TenantService): Promise<string | undefined> {
  if (!(await store.putSettingIfAbsent('demo_tenant', 'creating'))) return undefined;
  const tenant = await tenants.createTenant('demo');
  const created = await tenants.createKey(tenant.id, { name: 'demo key', models: null, expiresAt: null });
  return created.key;
}
