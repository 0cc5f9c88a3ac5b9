/**
 * Wires one gateway process: configuration → store → tenancy → upstreams → catalog → relay → HTTP server.
 */
import type { FastifyInstance } from 'fastify';
import { createServer } from '../api/create-server.js';
import { Catalog } from '../catalog/catalog.js';
import type { LoadedConfig } from '../config/load-config.js';
import { RequestLogWriter } from '../metering/request-log-writer.js';
import { RequestRecorder } from '../metering/request-recorder.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { GatewayMetrics } from '../observability/metrics.js';
import { RelayService } from '../relay/relay-service.js';
import { DeploymentRouter } from '../routing/deployment-router.js';
import { createStore } from '../store/create-store.js';
import type { Store } from '../store/store.js';
import { InProcessInvalidationBus, type InvalidationBus } from '../tenancy/invalidation-bus.js';
import { KeyService } from '../tenancy/key-service.js';
import { TenantService } from '../tenancy/tenant-service.js';
import { createUpstream } from '../upstreams/create-upstream.js';
import type { Upstream } from '../upstreams/upstream.js';

/** A gateway process, built but not yet listening. */
export interface Gateway {
  app: FastifyInstance;
  store: Store;
  tenants: TenantService;
  keys: KeyService;
  logger: Logger;
  metrics: GatewayMetrics;
  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number; url: string }>;
  /** Stops accepting, drains, flushes the request log and closes everything. */
  close(): Promise<void>;
}

/** Options of `createGateway`. */
export interface CreateGatewayOptions {
  /** The admin bearer token. */
  adminToken: string;
  /** Logger to use. Default: a pino logger at the configured level. */
  logger?: Logger;
  /** Broadcasts key revocations to other processes (cluster workers). Default: in-process only. */
  invalidationBus?: InvalidationBus;
  /** An already open store (tests, the cluster primary). Default: opened from `storeUrl`. */
  store?: Store;
}

/** Builds a gateway from a loaded configuration. */
export async function createGateway(loaded: LoadedConfig, options: CreateGatewayOptions): Promise<Gateway> {
  const { config } = loaded;
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const store = options.store ?? (await createStore(loaded.storeUrl));
  await store.migrate();
  const metrics = new GatewayMetrics();
  const bus = options.invalidationBus ?? new InProcessInvalidationBus();
  const keys = new KeyService(store, { bus });
  const tenants = new TenantService(store, { bus });
  const writer = new RequestLogWriter(store, { logger });
  metrics.observeRequestLog(() => writer.stats);
  const recorder = new RequestRecorder(writer, metrics, logger, { logRequests: config.log.requests });

  const upstreams = new Map<string, Upstream>();
  for (const upstreamConfig of config.upstreams) {
    const apiKey = loaded.upstreamApiKeys.get(upstreamConfig.name);
    upstreams.set(upstreamConfig.name, createUpstream(upstreamConfig, apiKey === undefined ? {} : { apiKey }));
  }
  const catalog = Catalog.fromConfig(config, upstreams);
  const relay = new RelayService(catalog, new DeploymentRouter(), recorder, metrics);

  let storeHealthy = true;
  let lastCheck = 0;
  const ready = async (): Promise<boolean> => {
    // At most one store round trip per second, however often probes come.
    if (Date.now() - lastCheck > 1000) {
      lastCheck = Date.now();
      try {
        await store.getSetting('schema_probe');
        storeHealthy = true;
      } catch (error: unknown) {
        storeHealthy = false;
        logger.warn({ err: error }, 'store is not reachable');
      }
    }
    return storeHealthy;
  };

  const app = createServer(
    { relay, keys, tenants, recorder, metrics, adminToken: options.adminToken, ready },
    { bodyLimitBytes: config.server.body_limit_bytes },
  );

  return {
    app,
    store,
    tenants,
    keys,
    logger,
    metrics,
    async listen() {
      await app.listen({ host: config.server.host, port: config.server.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : config.server.port;
      const host = config.server.host;
      const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
      return { host, port, url: `http://${urlHost}:${port}` };
    },
    async close() {
      await app.close();
      await writer.close();
      await Promise.all([...upstreams.values()].map((upstream) => upstream.close()));
      if (options.store === undefined) await store.close();
    },
  };
}
