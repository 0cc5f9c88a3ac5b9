/**
 * Changes to cached state across the processes of a PostgreSQL store that run without Redis: published with
 * `pg_notify` and received on one `LISTEN` connection per bus, so a key revoked through one process stops working in
 * the others at once, and lease-return rounds (`LeaseReturnRound`) reach every process. With Redis configured the
 * gateway uses `RedisInvalidationBus` instead.
 *
 * Delivery is at most once, as with Redis pub/sub: a process whose listening connection drops misses what is published
 * until it is back, and what it publishes meanwhile reaches no one. So after every reconnect the bus announces
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

/** Options of `PostgresInvalidationBus`. */
export interface PostgresInvalidationBusOptions {
  /** `postgres://…` of the store (without Tollgate's own `schema`/`pool_size` parameters). */
  connectionString: string;
  /** Notification channel; see `postgresChannel`. */
  channel: string;
  logger: Logger;
  /** Called when a message could not be sent or the listening connection failed (a metric). */
  onFailure?: () => void;
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

/** An `InvalidationBus` over PostgreSQL `LISTEN`/`NOTIFY`. */
export class PostgresInvalidationBus implements InvalidationBus {
  private readonly local = new InProcessInvalidationBus();
  private readonly options: PostgresInvalidationBusOptions;
  private readonly reconnectDelayMs: number;
  private readonly maxReconnectDelayMs: number;
  /** The listening connection, once it listens; publishing goes through it too. */
  private client: pg.Client | undefined;
  private closed = false;
  private everListened = false;
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private listening!: Promise<void>;
  private resolveListening: (() => void) | undefined;

  constructor(options: PostgresInvalidationBusOptions) {
    this.options = options;
    this.reconnectDelayMs = options.reconnectDelayMs ?? 100;
    this.maxReconnectDelayMs = options.maxReconnectDelayMs ?? 5000;
    this.awaitListening();
    void this.connect();
  }

  /** Resolves once the bus listens (start-up, tests); after a drop, once it listens again. */
  ready(): Promise<void> {
    return this.listening;
  }

  async publish(subject: string): Promise<void> {
    await this.local.publish(subject);
    const client = this.client;
    if (client === undefined) {
      // The outage was logged when the connection dropped; when it is back, the others are told to drop everything.
      this.options.onFailure?.();
      return;
    }
    try {
      await client.query('select pg_notify($1, $2)', [this.options.channel, subject]);
    } catch (error: unknown) {
      this.failed(error, 'not sent', subject);
    }
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    return this.local.subscribe(handler);
  }

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
      // Logged once per outage, not at every failed attempt to reconnect.
      if (this.failures === 0) this.failed(error, 'listening connection lost; reconnecting');
      else this.options.onFailure?.();
      this.awaitListening();
      this.scheduleReconnect();
    };
    client.on('error', drop);
    client.on('end', () => drop(new Error('connection ended')));
    client.on('notification', (message) => {
      // This process's own messages were delivered here when it published them.
      if (message.channel !== this.options.channel || message.payload === undefined) return;
      if (message.processId === backendProcessId(client)) return;
      void this.local.publish(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.options.channel.replaceAll('"', '""')}"`);
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
    if (reconnected)
      this.options.logger.info({ channel: this.options.channel }, 'PostgreSQL invalidation bus listens again');
    // What was published while this process was not listening is lost, and so is what it published itself:
    // everything cached, here and in the others, may be stale.
    if (reconnected) {
      void this.local.publish(ConfigSubject.all);
      client.query('select pg_notify($1, $2)', [this.options.channel, ConfigSubject.all]).catch(() => undefined);
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

  private failed(error: unknown, what: string, subject?: string): void {
    this.options.onFailure?.();
    this.options.logger.warn(
      { err: error, channel: this.options.channel, ...(subject === undefined ? {} : { subject }) },
      `PostgreSQL invalidation bus: ${what}`,
    );
  }
}

/** The server process of `client`'s connection (`pg` sets it from the startup's key data; its types omit it). */
function backendProcessId(client: pg.Client): number | undefined {
  return (client as unknown as { processID?: number }).processID;
}
