/**
 * Key revocations across processes and hosts (cluster mode): published on a Redis channel; every gateway process
 * subscribes and drops the key from its cache. The publishing process drops it locally first, so its own next request
 * is refused even before the message comes back.
 */
import { Redis } from 'ioredis';
import { InProcessInvalidationBus, type InvalidationBus, type KeyInvalidationHandler } from './invalidation-bus.js';

/** Options of `RedisInvalidationBus`. */
export interface RedisInvalidationBusOptions {
  /** Redis URL. */
  url: string;
  /** Channel name. Default `tg:key-invalidations`. */
  channel?: string;
}

/** An `InvalidationBus` over Redis pub/sub. */
export class RedisInvalidationBus implements InvalidationBus {
  private readonly local = new InProcessInvalidationBus();
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  private readonly channel: string;

  constructor(options: RedisInvalidationBusOptions) {
    this.channel = options.channel ?? 'tg:key-invalidations';
    this.publisher = new Redis(options.url, { maxRetriesPerRequest: 1 });
    this.subscriber = new Redis(options.url);
    // Connection errors are retried by ioredis; until Redis is back, other processes fall back on their cache TTL.
    this.publisher.on('error', () => undefined);
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('message', (channel: string, keyId: string) => {
      if (channel === this.channel) void this.local.publish(keyId);
    });
    void this.subscriber.subscribe(this.channel).catch(() => undefined);
  }

  /** Resolves once the subscription is active (tests, start-up). */
  async ready(): Promise<void> {
    await this.subscriber.subscribe(this.channel);
  }

  async publish(keyId: string): Promise<void> {
    await this.local.publish(keyId);
    await this.publisher.publish(this.channel, keyId);
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    return this.local.subscribe(handler);
  }

  async close(): Promise<void> {
    this.publisher.disconnect();
    this.subscriber.disconnect();
  }
}
