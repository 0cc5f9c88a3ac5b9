/**
 * Changes to cached state across the processes of a PostgreSQL store that run without Redis: published with
 * `pg_notify` and received on one `LISTEN` connection per process (`PostgresListener`, shared by every channel), so a
 * key revoked through one process stops working in the others at once, and lease-return rounds (`LeaseReturnRound`)
 * reach every process. With Redis configured the gateway uses `RedisInvalidationBus` instead.
 *
 * Delivery is at most once, as with Redis pub/sub: a process whose listening connection drops misses what is published
 * until it is back, and what it publishes meanwhile reaches no one. So after every reconnect each channel announces
 * `ConfigSubject.all`, here and to the others, whose subscribers drop or reload everything they cache; and publishing
 * never fails a caller: the change is stored, and a process that could not hear of it reads it at its next refresh.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from '../observability/logger.js';
import {
  ConfigSubject,
  InProcessInvalidationBus,
  type InvalidationBus,
  type KeyInvalidationHandler,
} from './invalidation-bus.js';

/** Options of `PostgresListener`. */
export interface PostgresListenerOptions {
  /** `postgres://…` of the store (without Tollgate's own `schema`/`pool_size` parameters). */
  connectionString: string;
  logger: Logger;
  /** Called when a message could not be sent or the listening connection failed (a metric). */
  onFailure?: () => void;
  /** The connection's `application_name` (shown in `pg_stat_activity`). Default `tollgate-bus`. */
  applicationName?: string;
  /** First wait before reconnecting, ms; doubles up to `maxReconnectDelayMs`. Default 100. */
  reconnectDelayMs?: number;
  /** Longest wait between reconnect attempts, ms. Default 5000. */
  maxReconnectDelayMs?: number;
}

/** PostgreSQL's limit on identifier length, bytes: a longer channel name fails `pg_notify`. */
const MAX_CHANNEL_BYTES = 63;

/**
 * The channel of `purpose` for the store in `schema`. Channels are database-wide, so the schema is part of the name:
 * gateways on other schemas of one database (tests, staging next to production) do not hear each other. A name too
 * long for PostgreSQL carries a hash of the schema instead.
 */
export function postgresChannel(schema: string, purpose: string): string {
  const plain = `tollgate:${schema}:${purpose}`;
  if (Buffer.byteLength(plain) <= MAX_CHANNEL_BYTES) return plain;
  const digest = createHash('sha256').update(schema).digest('hex').slice(0, 16);
  return `tollgate:${digest}:${purpose}`.slice(0, MAX_CHANNEL_BYTES);
}

/**
 * One process's `LISTEN` connection: listens on the channels of its buses (`bus`), reconnects with backoff when the
 * connection drops, and sends their messages. It ends the connection when its last bus is closed.
 */
export class PostgresListener {
  private readonly options: PostgresListenerOptions;
  private readonly reconnectDelayMs: number;
  private readonly maxReconnectDelayMs: number;
  /** Each channel's subscribers in this process, and how many open buses share them. */
  private readonly channels = new Map<string, { local: InProcessInvalidationBus; buses: number }>();
  /** The connection, once it listens on every channel. */
  private client: pg.Client | undefined;
  private closed = false;
  private everListened = false;
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private listening!: Promise<void>;
  private resolveListening: (() => void) | undefined;

  constructor(options: PostgresListenerOptions) {
    this.options = options;
    this.reconnectDelayMs = options.reconnectDelayMs ?? 100;
    this.maxReconnectDelayMs = options.maxReconnectDelayMs ?? 5000;
    this.awaitListening();
    void this.connect();
  }

  /** A bus on `channel`; asking again returns another bus on the same subscribers (each is closed on its own). */
  bus(channel: string): PostgresInvalidationBus {
    let entry = this.channels.get(channel);
    if (entry === undefined) {
      entry = { local: new InProcessInvalidationBus(), buses: 0 };
      this.channels.set(channel, entry);
      const client = this.client;
      if (client !== undefined) {
        // Until this LISTEN is in, `ready()` waits; a failure drops the connection, and the reconnect listens again.
        this.awaitListening();
        client.query(listen(channel)).then(
          () => {
            if (this.client === client) this.listened();
          },
          (error: unknown) => client.emit('error', error),
        );
      }
    }
    entry.buses += 1;
    return new PostgresInvalidationBus(this, channel, entry.local);
  }

  /** Resolves once the connection listens on every channel asked for so far; after a drop, once it listens again. */
  ready(): Promise<void> {
    return this.listening;
  }

  /** Sends `payload` on `channel`; never rejects (a failure is counted and the others catch up at the reconnect). */
  async notify(channel: string, payload: string): Promise<void> {
    const client = this.client;
    if (client === undefined) {
      // The outage was logged when the connection dropped; when it is back, every channel announces everything.
      this.options.onFailure?.();
      return;
    }
    try {
      await client.query('select pg_notify($1, $2)', [channel, payload]);
    } catch (error: unknown) {
      this.options.onFailure?.();
      this.options.logger.warn({ err: error, channel, subject: payload }, 'PostgreSQL invalidation bus: not sent');
    }
  }

  /** One bus on `channel` closed: with the last, stops listening on it; the connection ends with the last channel. */
  async release(channel: string): Promise<void> {
    const entry = this.channels.get(channel);
    if (entry === undefined) return;
    entry.buses -= 1;
    if (entry.buses > 0) return;
    this.channels.delete(channel);
    if (this.channels.size === 0) {
      await this.close();
      return;
    }
    await this.client?.query(`UNLISTEN ${quoted(channel)}`).catch(() => undefined);
  }

  /** True once closed (its last bus released): a new bus needs a new listener. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Ends the connection and every bus on it. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    this.listened();
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.options.connectionString,
      application_name: this.options.applicationName ?? 'tollgate-bus',
      connectionTimeoutMillis: 10_000,
      // A server that vanished is found by keepalive probes, not after the system's two-hour default.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    let dropped = false;
    const drop = (error: unknown) => {
      if (dropped) return;
      dropped = true;
      if (this.client === client) this.client = undefined;
      void client.end().catch(() => undefined);
      if (this.closed) return;
      // Counted and logged once per outage, not at every failed attempt to reconnect.
      if (this.failures === 0) {
        this.options.onFailure?.();
        this.options.logger.warn(
          { err: error },
          'PostgreSQL invalidation bus: listening connection lost; reconnecting',
        );
      }
      this.awaitListening();
      this.scheduleReconnect();
    };
    client.on('error', drop);
    client.on('end', () => drop(new Error('connection ended')));
    client.on('notification', (message) => {
      // This process's own messages were delivered here when it published them.
      if (message.payload === undefined || message.processId === backendProcessId(client)) return;
      void this.channels.get(message.channel)?.local.publish(message.payload);
    });
    try {
      await client.connect();
      for (const channel of this.channels.keys()) await client.query(listen(channel));
    } catch (error: unknown) {
      drop(error);
      return;
    }
    if (this.closed || dropped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.failures = 0;
    const reconnected = this.everListened;
    this.everListened = true;
    this.listened();
    if (!reconnected) return;
    this.options.logger.info('PostgreSQL invalidation bus listens again');
    // What was published while this process was not listening is lost, and so is what it published itself:
    // everything cached, here and in the others, may be stale.
    for (const [channel, { local }] of this.channels) {
      void local.publish(ConfigSubject.all);
      void this.notify(channel, ConfigSubject.all);
    }
  }

  /** Makes `ready()` wait for the next `LISTEN` (unless it already does). */
  private awaitListening(): void {
    if (this.resolveListening !== undefined) return;
    this.listening = new Promise((resolve) => {
      this.resolveListening = resolve;
    });
  }

  private listened(): void {
    this.resolveListening?.();
    this.resolveListening = undefined;
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer !== undefined) return;
    const delay = Math.min(this.maxReconnectDelayMs, this.reconnectDelayMs * 2 ** this.failures);
    this.failures += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }
}

/** An `InvalidationBus` on one channel of a `PostgresListener`. */
export class PostgresInvalidationBus implements InvalidationBus {
  private closed = false;

  constructor(
    private readonly listener: PostgresListener,
    private readonly channel: string,
    private readonly local: InProcessInvalidationBus,
  ) {}

  /** Resolves once the listener listens on this channel (start-up, tests). */
  ready(): Promise<void> {
    return this.listener.ready();
  }

  async publish(subject: string): Promise<void> {
    await this.local.publish(subject);
    await this.listener.notify(this.channel, subject);
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    return this.local.subscribe(handler);
  }

  /** Closes this bus; the listener stops listening on the channel with its last bus (and ends with its last channel). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.listener.release(this.channel);
  }
}

function listen(channel: string): string {
  return `LISTEN ${quoted(channel)}`;
}

function quoted(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}

/** The server process of `client`'s connection (`pg` sets it from the startup's key data; its types omit it). */
function backendProcessId(client: pg.Client): number | undefined {
  return (client as unknown as { processID?: number }).processID;
}
