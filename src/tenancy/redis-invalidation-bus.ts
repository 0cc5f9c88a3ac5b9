/**
 * Key revocations across processes and hosts (cluster mode): published on a Redis channel; every gateway process
 * subscribes and drops the key from its cache. The publishing process drops it locally first, so its own next request
 * is refused even before the message comes back.
 *
 * Pub/sub delivers at most once: what is published while a subscriber is disconnected is lost to it. So when its
 * connection comes back the bus announces `ConfigSubject.all` (here and to the others, who may have missed what this
 * process published meanwhile), and every subscriber drops or reloads what it caches.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import {
  ConfigSubject,
  InProcessInvalidationBus,
  type InvalidationBus,
  type KeyInvalidationHandler,
} from './invalidation-bus.js';

/** Options of `RedisInvalidationBus`. */
export interface RedisInvalidationBusOptions {
  /** Redis URL. */
  url: string;
  /** Channel name. Default `tg:key-invalidations`. */
  channel?: string;
  /** Name of the bus's connections in Redis's `CLIENT LIST`. Default `tollgate-bus`. */
  connectionName?: string;
  /** Where failures to send are logged (warn). Default: not logged. */
  logger?: Logger;
  /** Called when a message could not be sent, or the subscriber's connection was lost (a metric). */
  onFailure?: () => void;
}

/** An `InvalidationBus` over Redis pub/sub. */
export class RedisInvalidationBus implements InvalidationBus {
  private readonly local = new InProcessInvalidationBus();
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  private readonly channel: string;
  private readonly options: RedisInvalidationBusOptions;
  private closing = false;

  constructor(options: RedisInvalidationBusOptions) {
    this.options = options;
    this.channel = options.channel ?? 'tg:key-invalidations';
    const connectionName = options.connectionName ?? 'tollgate-bus';
    this.publisher = new Redis(options.url, { maxRetriesPerRequest: 1, connectionName });
    this.subscriber = new Redis(options.url, { connectionName });
    // Connection errors are retried by ioredis; until Redis is back, other processes fall back on their cache TTL.
    this.publisher.on('error', () => undefined);
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('message', (channel: string, subject: string) => {
      if (channel === this.channel) void this.local.publish(subject);
    });
    let connected = false;
    let lost = false;
    this.subscriber.on('ready', () => {
      if (connected) this.announceAll();
      connected = true;
      lost = false;
    });
    // Counted once per lost connection, not at each of ioredis's attempts to reconnect; `ready` announces the recovery.
    this.subscriber.on('close', () => {
      if (!connected || lost || this.closing) return;
      lost = true;
      options.onFailure?.();
    });
    void this.subscriber.subscribe(this.channel).catch(() => undefined);
  }

  /** Resolves once the subscription is active (tests, start-up). */
  async ready(): Promise<void> {
    await this.subscriber.subscribe(this.channel);
  }

  async publish(subject: string): Promise<void> {
    await this.local.publish(subject);
    try {
      await this.publisher.publish(this.channel, subject);
    } catch (error: unknown) {
      this.options.onFailure?.();
      this.options.logger?.warn({ err: error, channel: this.channel, subject }, 'Redis invalidation bus: not sent');
    }
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    return this.local.subscribe(handler);
  }

  /** After the subscriber reconnected: it may have missed messages, and the others what this process sent. */
  private announceAll(): void {
    void this.local.publish(ConfigSubject.all);
    this.publisher.publish(this.channel, ConfigSubject.all).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.publisher.disconnect();
    this.subscriber.disconnect();
  }
}
