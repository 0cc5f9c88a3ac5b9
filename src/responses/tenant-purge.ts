/**
 * Deleting every stored response and conversation of a tenant (their prompts and answers), e.g. on a customer's
 * request: the one implementation behind `DELETE /admin/v1/tenants/{id}/responses` and the CLI's
 * `tenants delete-responses` on the store. The caller checks that the tenant exists.
 */
import { KyselyConversationStore } from '../conversations/kysely-conversation-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import type { Store } from '../store/store.js';
import { KyselyResponseStore } from './kysely-response-store.js';

/** The answer of a purge: how many responses and conversations went. */
export interface TenantPurge {
  object: 'tenant.responses.deleted';
  tenant_id: string;
  deleted: number;
  conversations_deleted: number;
}

/** Deletes every stored response and conversation of `tenantId` in `store` (none on a store that keeps none). */
export async function purgeTenantResponses(store: Store, tenantId: string): Promise<TenantPurge> {
  const purged = { object: 'tenant.responses.deleted', tenant_id: tenantId } as const;
  if (!(store instanceof KyselyStore)) return { ...purged, deleted: 0, conversations_deleted: 0 };
  return {
    ...purged,
    deleted: await new KyselyResponseStore(store.kysely).deleteTenantResponses(tenantId),
    conversations_deleted: await new KyselyConversationStore(store.kysely).deleteTenantConversations(tenantId),
  };
}
