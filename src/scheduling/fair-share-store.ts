/**
 * Where fair-share counters meet across processes. Each gateway process schedules its own queue with its own VTC
 * counters; every few hundred milliseconds `FairShareSync` pushes the virtual tokens it charged each tenant since the
 * last sync and takes back the totals every process charged, so a tenant served heavily through one process is
 * behind its peers in all of them. `MemoryFairShareStore` serves one process (and tests); the Redis one, a cluster.
 */

/** Shared totals of virtual tokens served, per scope (model and class) and tenant. */
export interface FairShareStore {
  /**
   * Adds `deltas` (virtual tokens this process charged each tenant since its last sync) to the scope's totals and
   * returns the totals of every tenant of the scope.
   */
  sync(scope: string, deltas: ReadonlyMap<string, number>): Promise<Map<string, number>>;
  close(): Promise<void>;
}

/** Totals kept in this process. */
export class MemoryFairShareStore implements FairShareStore {
  private readonly scopes = new Map<string, Map<string, number>>();

  async sync(scope: string, deltas: ReadonlyMap<string, number>): Promise<Map<string, number>> {
    let totals = this.scopes.get(scope);
    if (totals === undefined) {
      totals = new Map();
      this.scopes.set(scope, totals);
    }
    for (const [tenantId, delta] of deltas) {
      if (delta !== 0) totals.set(tenantId, (totals.get(tenantId) ?? 0) + delta);
    }
    return new Map(totals);
  }

  async close(): Promise<void> {}
}
