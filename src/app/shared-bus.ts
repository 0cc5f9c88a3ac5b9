/**
 * The bus between the processes of one deployment (see `InvalidationBus`): Redis pub/sub when admission shares Redis,
 * else PostgreSQL LISTEN/NOTIFY when the store is PostgreSQL, else none (an embedded store: its workers hear each
 * other through their primary). The gateway opens one for changes and one for lease returns; the CLI opens one for
 * changes, so that a key it revokes in the store stops working in running gateways at once.
 */
import type { Config } from '../config/config-schema.js';
import type { Logger } from '../observability/logger.js';
import { PostgresStore } from '../store/postgres-store.js';
import type { Store } from '../store/store.js';
import type { InvalidationBus } from '../tenancy/invalidation-bus.js';
import { PostgresListener, postgresChannel } from '../tenancy/postgres-invalidation-bus.js';
import { RedisInvalidationBus } from '../tenancy/redis-invalidation-bus.js';

/** A bus between the processes of a shared store. */
export type SharedBus = InvalidationBus & { ready(): Promise<void>; close(): Promise<void> };

/** What a shared bus carries: changes to cached state, or lease-return rounds (`LeaseReturnRound`). */
export type SharedBusPurpose = 'invalidations' | 'lease-returns';

/** Options of `openSharedBus`. */
export interface SharedBusOptions {
  logger: Logger;
  /** Called when a message could not be sent or a connection was lost, with the bus kind (a metric). */
  onFailure?: (bus: 'redis' | 'postgres') => void;
}

/**
 * How long a process waits at start for its bus to listen, ms (so that a change made right after it starts reaches
 * it): then it goes on, and the bus keeps trying. A Redis outage must not hold the start.
 */
export const BUS_READY_WAIT_MS = 5_000;

/** Opens the bus of `purpose` for this deployment, or undefined when its processes share none. */
export function openSharedBus(
  config: Pick<Config, 'admission'>,
  store: Store,
  purpose: SharedBusPurpose,
  options: SharedBusOptions,
): SharedBus | undefined {
  if (config.admission.store === 'redis') {
    return new RedisInvalidationBus({
      url: config.admission.redis_url,
      channel: purpose === 'invalidations' ? 'tg:key-invalidations' : 'tg:lease-returns',
      logger: options.logger,
      onFailure: () => options.onFailure?.('redis'),
    });
  }
  if (store instanceof PostgresStore) return listenerOf(store, options).bus(postgresChannel(store.schema, purpose));
  return undefined;
}

/** Each store's `LISTEN` connection: one per process, whatever the number of its channels. */
const listeners = new WeakMap<PostgresStore, PostgresListener>();

function listenerOf(store: PostgresStore, options: SharedBusOptions): PostgresListener {
  let listener = listeners.get(store);
  if (listener === undefined || listener.isClosed) {
    listener = new PostgresListener({
      connectionString: store.connectionString,
      logger: options.logger,
      onFailure: () => options.onFailure?.('postgres'),
    });
    listeners.set(store, listener);
  }
  return listener;
}
