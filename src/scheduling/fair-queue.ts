/**
 * Weighted fair queuing on tokens served, in the spirit of the Virtual Token Counter (Sheng et al., "Fairness in
 * Serving Large Language Models", OSDI 2024). Written from the paper's idea:
 *
 * - every tenant has a virtual counter of the tokens it was served, each charge divided by its plan weight;
 * - the next job is the oldest one of the backlogged tenant with the smallest counter (ties: the older job);
 * - a job is charged its estimate when dispatched and corrected with its real usage when it completes;
 * - a tenant that becomes backlogged again is lifted to the smallest counter among the backlogged tenants (or, when
 *   nobody is backlogged, to the level of the last dispatch), so time spent idle is not banked as credit.
 *
 * Choosing the next job is O(backlogged tenants); adding and removing are O(1) amortised.
 */

interface QueueNode<T> {
  readonly item: T;
  /** Virtual cost charged at dispatch (cost / weight). */
  readonly virtualCost: number;
  /** Arrival order across tenants. */
  readonly order: number;
  /** False once dispatched or removed; dead nodes are skipped and compacted lazily. */
  live: boolean;
}

interface TenantLane<T> {
  readonly tenantId: string;
  /** Virtual tokens served. */
  counter: number;
  nodes: QueueNode<T>[];
  head: number;
  /** Live nodes. */
  live: number;
  /** Virtual cost of the live nodes. */
  virtualQueued: number;
}

/** One class's queue: per-tenant FIFO lanes served by smallest virtual counter. */
export class FairQueue<T> {
  private readonly lanes = new Map<string, TenantLane<T>>();
  private readonly backlogged = new Set<TenantLane<T>>();
  private readonly nodeOf = new Map<T, { lane: TenantLane<T>; node: QueueNode<T> }>();
  /** Counter level of the last dispatch: where a tenant returning to an empty queue starts. */
  private floor = 0;
  private order = 0;

  /** Jobs waiting. */
  get size(): number {
    return this.nodeOf.size;
  }

  /** Appends `item` to its tenant's lane; `virtualCost` is what its dispatch will charge. */
  enqueue(item: T, tenantId: string, virtualCost: number): void {
    const lane = this.laneOf(tenantId);
    if (lane.live === 0) {
      lane.counter = Math.max(lane.counter, this.returnLevel());
      this.backlogged.add(lane);
    }
    const node: QueueNode<T> = { item, virtualCost, order: this.order++, live: true };
    lane.nodes.push(node);
    lane.live++;
    lane.virtualQueued += virtualCost;
    this.nodeOf.set(item, { lane, node });
  }

  /** The job fair queuing would dispatch next, without removing it. */
  peek(): T | undefined {
    const lane = this.nextLane();
    return lane?.nodes[lane.head]?.item;
  }

  /** Removes `item` (normally the one `peek` returned) and charges its tenant the virtual cost given at enqueue. */
  dispatch(item: T): void {
    const entry = this.nodeOf.get(item);
    if (entry === undefined) throw new RangeError('The item is not queued');
    this.floor = Math.max(this.floor, entry.lane.counter);
    this.unlink(entry.lane, entry.node);
    entry.lane.counter += entry.node.virtualCost;
  }

  /**
   * Charges a job that was dispatched without queuing (nothing of its class was waiting), lifting its tenant first as
   * if it had been queued for an instant.
   */
  chargeDispatchedDirectly(tenantId: string, virtualCost: number): void {
    const lane = this.laneOf(tenantId);
    if (lane.live === 0) lane.counter = Math.max(lane.counter, this.returnLevel());
    this.floor = Math.max(this.floor, lane.counter);
    lane.counter += virtualCost;
  }

  /** Removes a queued `item` without charging anyone. Returns false when it was not queued. */
  remove(item: T): boolean {
    const entry = this.nodeOf.get(item);
    if (entry === undefined) return false;
    this.unlink(entry.lane, entry.node);
    return true;
  }

  /** Adds `virtualDelta` (may be negative: a refund) to a tenant's counter. */
  charge(tenantId: string, virtualDelta: number): void {
    const lane = this.lanes.get(tenantId);
    if (lane !== undefined) lane.counter += virtualDelta;
  }

  /** A tenant's counter, or undefined for a tenant never queued here. */
  counter(tenantId: string): number | undefined {
    return this.lanes.get(tenantId)?.counter;
  }

  /** Every tenant's counter. */
  counters(): Map<string, number> {
    return new Map([...this.lanes.values()].map((lane) => [lane.tenantId, lane.counter]));
  }

  /** The queued items, in no particular order. */
  items(): T[] {
    return [...this.nodeOf.keys()];
  }

  /**
   * How many queued jobs fair queuing would dispatch before a new job of `tenantId`: the
   * tenant's own queued jobs, plus, for every other backlogged tenant, the jobs it is served until its counter passes
   * the level at which the new job's tenant reaches it (counted with that tenant's mean queued job cost). An
   * estimate: it ignores later arrivals and completion-time corrections.
   */
  jobsAhead(tenantId: string): number {
    const lane = this.lanes.get(tenantId);
    const backlogged = lane !== undefined && lane.live > 0;
    const start = backlogged ? lane.counter : Math.max(lane?.counter ?? 0, this.returnLevel());
    const level = start + (backlogged ? lane.virtualQueued : 0);
    let ahead = backlogged ? lane.live : 0;
    for (const other of this.backlogged) {
      if (other === lane || level <= other.counter) continue;
      const meanCost = other.virtualQueued / other.live;
      ahead += meanCost > 0 ? Math.min(other.live, (level - other.counter) / meanCost) : other.live;
    }
    return ahead;
  }

  private laneOf(tenantId: string): TenantLane<T> {
    let lane = this.lanes.get(tenantId);
    if (lane === undefined) {
      lane = { tenantId, counter: 0, nodes: [], head: 0, live: 0, virtualQueued: 0 };
      this.lanes.set(tenantId, lane);
    }
    return lane;
  }

  private returnLevel(): number {
    let minimum = Number.POSITIVE_INFINITY;
    for (const lane of this.backlogged) minimum = Math.min(minimum, lane.counter);
    return minimum === Number.POSITIVE_INFINITY ? this.floor : minimum;
  }

  private nextLane(): TenantLane<T> | undefined {
    let best: TenantLane<T> | undefined;
    let bestOrder = 0;
    for (const lane of this.backlogged) {
      const order = lane.nodes[lane.head]!.order;
      if (best === undefined || lane.counter < best.counter || (lane.counter === best.counter && order < bestOrder)) {
        best = lane;
        bestOrder = order;
      }
    }
    return best;
  }

  private unlink(lane: TenantLane<T>, node: QueueNode<T>): void {
    node.live = false;
    this.nodeOf.delete(node.item);
    lane.live--;
    lane.virtualQueued -= node.virtualCost;
    // Keep the invariant that a backlogged lane's head is live, so `peek` and `nextLane` never skip.
    while (lane.head < lane.nodes.length && !lane.nodes[lane.head]!.live) lane.head++;
    if (lane.live === 0) {
      this.backlogged.delete(lane);
      lane.nodes = [];
      lane.head = 0;
      lane.virtualQueued = 0;
    } else if (lane.head > 1024 && lane.head * 2 > lane.nodes.length) {
      lane.nodes = lane.nodes.slice(lane.head);
      lane.head = 0;
    }
  }
}
