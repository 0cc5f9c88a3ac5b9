/**
 * Wires one gateway process: configuration → store → tenancy → upstreams → catalog → relay → HTTP server.
 */
import type { FastifyInstance } from 'fastify';
import { createServer } from '../api/create-server.js';
import { BudgetAlertService } from '../billing/alerts/alert-service.js';
import { WebhookNotifier } from '../billing/alerts/webhook-notifier.js';
import { BillingService } from '../billing/billing-service.js';
import { parseNano } from '../billing/nano.js';
import { recoverCheckpoints, StreamCheckpointer } from '../billing/stream-checkpointer.js';
import { Catalog } from '../catalog/catalog.js';
import type { LoadedConfig } from '../config/load-config.js';
import { RequestRecorder } from '../metering/request-recorder.js';
import { SettlementWriter } from '../metering/settlement-writer.js';
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
import { resolveSecret } from './admin-token.js';

/** A gateway process, built but not yet listening. */
export interface Gateway {
  app: FastifyInstance;
  store: Store;
  tenants: TenantService;
  keys: KeyService;
  logger: Logger;
  metrics: GatewayMetrics;
  billing: BillingService;
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
  /** Bill interrupted streams and clear reservations left by a previous process (embedded mode). Default true. */
  recoverOnStart?: boolean;
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
  const billing = new BillingService(store, {
    priceBook: config.pricing,
    logger,
    newTenants: {
      mode: config.billing.new_tenant_mode,
      creditLimit: parseNano(config.billing.new_tenant_credit_limit),
    },
  });
  await billing.init();
  // Embedded mode is one process: every checkpoint and reservation left in the store belongs to a dead one.
  if (store.kind === 'sqlite' && options.recoverOnStart !== false) {
    await recoverCheckpoints(store, { staleAfterMs: 0, now: Date.now(), logger });
    await store.resetReservations();
  }
  const writer = new SettlementWriter(store, { logger });
  metrics.observeRequestLog(() => writer.stats);
  const notifier = new WebhookNotifier({
    secret: resolveSecret(loaded.dataDir, 'webhook-secret', 'whsec_', loaded.webhookSecret),
    logger,
  });
  const alerts = new BudgetAlertService({ ledger: store, notifier, logger, defaultCurrency: billing.currency });
  billing.onBudgetsReloaded = () => alerts.reloadBudgets();
  const recorder = new RequestRecorder(writer, billing, metrics, logger, {
    logRequests: config.log.requests,
    alerts: { onSettled: (change) => void alerts.onSettled({ ...change, currency: billing.currency }) },
  });

  const upstreams = new Map<string, Upstream>();
  for (const upstreamConfig of config.upstreams) {
    const apiKey = loaded.upstreamApiKeys.get(upstreamConfig.name);
    upstreams.set(upstreamConfig.name, createUpstream(upstreamConfig, apiKey === undefined ? {} : { apiKey }));
  }
  const catalog = Catalog.fromConfig(config, upstreams);
  const relay = new RelayService(catalog, new DeploymentRouter(), recorder, billing, metrics);
  const checkpointer = new StreamCheckpointer(relay.inFlightStreams, billing, store, logger, {
    intervalMs: config.billing.checkpoint_interval_ms,
  });
  checkpointer.start();
  // Cluster mode: checkpoints of a process that died are billed by whichever process notices them first.
  const recovery =
    store.kind === 'postgres'
      ? setInterval(() => {
          recoverCheckpoints(store, { staleAfterMs: 30_000, now: Date.now(), logger }).catch((error: unknown) =>
            logger.error({ err: error }, 'checkpoint recovery failed'),
          );
        }, 10_000).unref()
      : undefined;

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
    { relay, keys, tenants, recorder, metrics, billing, store, adminToken: options.adminToken, ready },
    { bodyLimitBytes: config.server.body_limit_bytes },
  );

  return {
    app,
    store,
    tenants,
    keys,
    logger,
    metrics,
    billing,
    async listen() {
      await app.listen({ host: config.server.host, port: config.server.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : config.server.port;
      const host = config.server.host;
      const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
      return { host, port, url: `http://${urlHost}:${port}` };
    },
    async close() {
      checkpointer.stop();
      if (recovery !== undefined) clearInterval(recovery);
      await app.close();
      await notifier.close();
      await writer.close();
      await Promise.all([...upstreams.values()].map((upstream) => upstream.close()));
      if (options.store === undefined) await store.close();
    },
  };
}
