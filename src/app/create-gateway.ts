/**
 * Wires one gateway process: configuration → store → tenancy → upstreams → catalog → relay → HTTP server.
 */

import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Gauge } from 'prom-client';
import type { AdmissionStore } from '../admission/admission-store.js';
import { MemoryAdmissionStore } from '../admission/memory-admission-store.js';
import { createRedisAdmissionStore } from '../admission/redis-admission-store.js';
import { ConnectionSignals } from '../api/connection-signals.js';
import { createServer } from '../api/create-server.js';
import { OutstandingRequests } from '../api/outstanding-requests.js';
import { registerBatchMetrics } from '../batch/batch-metrics.js';
import { inOffPeakWindow } from '../batch/batch-planner.js';
import { BatchRunner } from '../batch/batch-runner.js';
import { BatchService } from '../batch/batch-service.js';
import { FileStorage } from '../batch/file-storage.js';
import { KyselyBatchStore } from '../batch/kysely-batch-store.js';
import { BudgetAlertService } from '../billing/alerts/alert-service.js';
import { WebhookNotifier } from '../billing/alerts/webhook-notifier.js';
import { BillingService } from '../billing/billing-service.js';
import { budgetAlertSink } from '../billing/budget-alert-sink.js';
import { RedisBudgetHolds } from '../billing/budget-holds.js';
import { LeaseReturnRound } from '../billing/lease-return-round.js';
import { parseNano } from '../billing/nano.js';
import { ReservationLeases } from '../billing/reservation-leases.js';
import { ReservationOwnerKeeper } from '../billing/reservation-owner-keeper.js';
import {
  CHECKPOINT_REFRESH_INTERVALS,
  CHECKPOINT_STALE_INTERVALS,
  recoverCheckpoints,
  StreamCheckpointer,
} from '../billing/stream-checkpointer.js';
import { RedisVolumePositionStore } from '../billing/volume-position.js';
import { Catalog } from '../catalog/catalog.js';
import { RealClock } from '../clock/clock.js';
import type { LoadedConfig } from '../config/load-config.js';
import { Conversations } from '../conversations/conversations.js';
import { KyselyConversationStore } from '../conversations/kysely-conversation-store.js';
import { UnavailableError } from '../errors/gateway-error.js';
import { RequestRecorder } from '../metering/request-recorder.js';
import { SettlementJournal } from '../metering/settlement-journal.js';
import { SettlementSpool } from '../metering/settlement-spool.js';
import { POSTGRES_WRITER_OPTIONS, SettlementWriter } from '../metering/settlement-writer.js';
import { registerFleetMetrics } from '../observability/fleet-metrics.js';
import { configuredLoggerOptions, createLogger, type Logger } from '../observability/logger.js';
import { GatewayMetrics } from '../observability/metrics.js';
import { AdmissionGate, type AdmissionGateOptions } from '../relay/admission-gate.js';
import { RelayService } from '../relay/relay-service.js';
import { BackgroundResponses } from '../responses/background-responses.js';
import { CompactionSeal } from '../responses/compaction.js';
import { KyselyResponseStore } from '../responses/kysely-response-store.js';
import { StoredResponses } from '../responses/stored-responses.js';
import { DeploymentRouter, type DeploymentRoutingSettings } from '../routing/deployment-router.js';
import { HealthProber } from '../routing/health-prober.js';
import { CapacityRefiner } from '../scheduling/capacity-refiner.js';
import { FairShareSync } from '../scheduling/fair-share-sync.js';
import { RedisFairShareStore } from '../scheduling/redis-fair-share-store.js';
import { defaultServiceClassPolicies, type TieredSchedulerOptions } from '../scheduling/tiered-scheduler.js';
import { createStore } from '../store/create-store.js';
import { KyselyStore } from '../store/kysely-store.js';
import { SqliteStore } from '../store/sqlite-store.js';
import type { Store } from '../store/store.js';
import { InProcessInvalidationBus } from '../tenancy/invalidation-bus.js';
import { KeyService } from '../tenancy/key-service.js';
import { PlanService } from '../tenancy/plan-service.js';
import { TenantService } from '../tenancy/tenant-service.js';
import { createUpstream } from '../upstreams/create-upstream.js';
import type { Upstream } from '../upstreams/upstream.js';
import { resolveSecret, storeSecret } from './admin-token.js';
import { journalDirectory, settleLeftSettlements, spoolDirectory } from './left-settlements.js';
import { BUS_READY_WAIT_MS, openSharedBus, type SharedBus, type SharedBusPurpose } from './shared-bus.js';
import { withDeadline } from './with-deadline.js';

/** A gateway process, built but not yet listening. */
export interface Gateway {
  app: FastifyInstance;
  store: Store;
  /** The models served and their deployments. */
  catalog: Catalog;
  tenants: TenantService;
  keys: KeyService;
  logger: Logger;
  metrics: GatewayMetrics;
  billing: BillingService;
  /** The Files and Batches API's service and runner (absent on a store that cannot hold them). */
  batches?: { service: BatchService; runner: BatchRunner };
  /**
   * Resolves once every request that ended before the call is in the store. With a settlement journal (embedded
   * mode) a response does not wait for its commit: read the store after this to see it.
   */
  settled(): Promise<void>;
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
  /**
   * Opens the bus that broadcasts changes (key revocations, prices, budgets) to the other workers on one SQLite file
   * (`ClusterInvalidationBus`). Not called when the processes share Redis or a PostgreSQL store: their bus reaches
   * every process. Default: none, changes stay in this process.
   */
  workerBus?: (options: { logger: Logger; onFailure: () => void }) => SharedBus;
  /** An already open store (tests, the cluster primary). Default: opened from `storeUrl`. */
  store?: Store;
  /** Bill interrupted streams and clear reservations left by a previous process (embedded mode). Default true. */
  recoverOnStart?: boolean;
  /**
   * This process is the only one serving from an embedded (SQLite) store, so wallet reservations may live in its
   * memory instead of a write per request. Default true; false for cluster workers sharing one SQLite file.
   */
  ownsStore?: boolean;
  /**
   * For cluster workers sharing one SQLite file, each journaling its own settlements: turns this worker's
   * `settled` (its own writer's commits) into one that waits for every worker's (see `WorkerSettleBarrier`), so a
   * billing read sees requests another worker served. Default: this process's own commits only.
   */
  settledAcrossWorkers?: (localSettled: () => Promise<void>) => () => Promise<void>;
}

/**
 * How often every process reloads the price book and budgets from the store, ms: the safety net under the
 * invalidation bus, which announces admin changes at once.
 */
const BILLING_REFRESH_MS = 30_000;

/** Routing weights and per-token costs (for cost-aware routing) of every deployment. */
function routingSettings(catalog: Catalog, billing: BillingService): Record<string, DeploymentRoutingSettings> {
  const settings: Record<string, DeploymentRoutingSettings> = {};
  const version = billing.priceBook?.versions.at(-1);
  for (const model of catalog.list()) {
    for (const deployment of model.deployments) {
      const cost = version?.costs.get(deployment.id);
      settings[deployment.id] = {
        capacityTokens: deployment.capacity.tokens,
        weight: deployment.weight,
        cost: cost?.kind === 'per_token' ? Number(cost.input + cost.output) : 0,
      };
    }
  }
  return settings;
}

/** Scheduler class policies from the configuration. */
function schedulingPolicies(config: LoadedConfig['config']): TieredSchedulerOptions['classes'] {
  const waits = config.scheduling.max_queue_wait_ms ?? {};
  const ceiling = config.scheduling.low_class_ceiling;
  // Flex sits halfway between batch and default (0.85 → 0.90), so a batch line promoted to flex gains capacity.
  const defaultCeiling = defaultServiceClassPolicies.default.admissionCeiling;
  const flexCeiling = Math.max(ceiling, (ceiling + defaultCeiling) / 2);
  return {
    priority: waits.priority === undefined ? {} : { maxQueueWaitMs: waits.priority },
    default: waits.default === undefined ? {} : { maxQueueWaitMs: waits.default },
    flex: { admissionCeiling: flexCeiling, ...(waits.flex === undefined ? {} : { maxQueueWaitMs: waits.flex }) },
    batch: { admissionCeiling: ceiling, ...(waits.batch === undefined ? {} : { maxQueueWaitMs: waits.batch }) },
  };
}

/** The admission gate's scheduling settings from the configuration: class policies, off-peak ceiling, headroom. */
export function gateSchedulingOptions(
  config: LoadedConfig['config'],
): Pick<AdmissionGateOptions, 'scheduling' | 'batchCeilingAt' | 'onlineHeadroom'> {
  const options: Pick<AdmissionGateOptions, 'scheduling' | 'batchCeilingAt' | 'onlineHeadroom'> = {
    scheduling: config.scheduling.enabled ? schedulingPolicies(config) : undefined,
  };
  if (config.batch.off_peak.length > 0) {
    options.batchCeilingAt = (now: number) =>
      inOffPeakWindow(now, config.batch.off_peak) ? config.batch.off_peak_ceiling : config.scheduling.low_class_ceiling;
  }
  const headroom = config.scheduling.online_headroom;
  if (headroom !== undefined) {
    options.onlineHeadroom = {
      perOnlineSequence: headroom.per_online_sequence,
      minimumSequences: headroom.minimum_sequences ?? 0,
    };
  }
  return options;
}

/** Builds a gateway from a loaded configuration. */
export async function createGateway(loaded: LoadedConfig, options: CreateGatewayOptions): Promise<Gateway> {
  const { config } = loaded;
  const logger = options.logger ?? createLogger(configuredLoggerOptions(config.log));
  const store = options.store ?? (await createStore(loaded.storeUrl));
  await store.migrate();
  // The sole process of an embedded store holds wallet reservations in memory. Every process of an embedded store
  // journals its settlements (see SettlementJournal), so responses do not wait for the commit: billing reads wait
  // for what was journaled, in this process or, through `settledAcrossWorkers`, in every worker.
  const soleOwner = store instanceof SqliteStore && options.ownsStore !== false;
  const journaled = store instanceof SqliteStore;
  if (store instanceof SqliteStore) {
    if (soleOwner) store.useProcessReservations();
    // Group commits run on a worker thread: the event loop serves requests while SQLite writes on the other core.
    store.settleOnThread();
  }
  const metrics = new GatewayMetrics();
  // Several processes on a shared store: what changes through one (a revoked key, a price version, a budget) reaches
  // the others at once over Redis pub/sub, or over PostgreSQL LISTEN/NOTIFY without Redis. Workers on one SQLite
  // file tell each other through their primary (`options.workerBus`).
  const sharedBus = (purpose: SharedBusPurpose) =>
    openSharedBus(config, store, purpose, {
      logger,
      onFailure: (kind) => metrics.invalidationBusFailures.inc({ bus: kind }),
    });
  const changeBus =
    sharedBus('invalidations') ??
    options.workerBus?.({ logger, onFailure: () => metrics.invalidationBusFailures.inc({ bus: 'ipc' }) });
  // Lease-return rounds (below) have a channel of their own, on processes sharing PostgreSQL.
  const leaseBus = store.kind === 'postgres' ? sharedBus('lease-returns') : undefined;
  // Both buses connect at once, and the start waits for them together (at most one deadline, not one each).
  const listening = Promise.all([changeBus?.ready(), leaseBus?.ready()]);
  await withDeadline(listening, BUS_READY_WAIT_MS, 'listening to the other processes', logger);
  const bus = changeBus ?? new InProcessInvalidationBus();
  const storeReadFailed = storeReadFailureReporter(metrics, logger);
  const keys = new KeyService(store, {
    bus,
    cacheTtlMs: config.cache.ttl_ms,
    negativeTtlMs: config.cache.unknown_key_ttl_ms,
    onStoreFailure: (error) => storeReadFailed('key', 'refused', error),
  });
  const tenants = new TenantService(store, { bus });
  // Cluster mode: month counters shared by every process — tenants' tokens for volume tiers, budgets' spend for alerts.
  const volumePositions =
    config.admission.store === 'redis' ? new RedisVolumePositionStore({ url: config.admission.redis_url }) : undefined;
  // Cluster mode: hard budgets count every process's admitted requests, not only this one's.
  const budgetHolds =
    config.admission.store === 'redis' ? new RedisBudgetHolds({ url: config.admission.redis_url }) : undefined;
  const billing = new BillingService(store, {
    priceBook: config.pricing,
    logger,
    bus,
    onStoreUnavailable: () => metrics.billingStoreUnavailable.inc(),
    ...(volumePositions === undefined ? {} : { volumePositions }),
    ...(budgetHolds === undefined
      ? {}
      : { budgetHolds, onBudgetHoldFallback: () => metrics.budgetHoldFallbacks.inc() }),
    newTenants: {
      mode: config.billing.new_tenant_mode,
      creditLimit: parseNano(config.billing.new_tenant_credit_limit),
    },
  });
  await billing.init();
  billing.startRefresh(BILLING_REFRESH_MS);
  // What dead processes spooled or journaled goes in before their checkpoints are recovered.
  await settleLeftSettlements(loaded.dataDir, store, logger);
  const spool = new SettlementSpool(spoolDirectory(loaded.dataDir), logger);
  // Embedded mode is one process: every checkpoint and reservation left in the store belongs to a dead one.
  if (store.kind === 'sqlite' && options.recoverOnStart !== false) {
    await recoverCheckpoints(store, { staleAfterMs: 0, now: Date.now(), logger });
    await store.resetReservations();
  }
  const writer = new SettlementWriter(store, {
    logger,
    spool,
    ...(store.kind === 'postgres' ? POSTGRES_WRITER_OPTIONS : {}),
    ...(journaled ? { journal: new SettlementJournal(journalDirectory(loaded.dataDir), { logger }) } : {}),
  });
  // Workers on one SQLite file, and cluster processes sharing PostgreSQL, lease wallet funds in chunks instead of
  // writing every reservation. A settle round (a billing read, a refusal's second try) has every process give back
  // what it leased and does not use, so the read shows only what requests in flight hold and the retry can use the
  // rest: workers through their primary, cluster processes over a Redis or PostgreSQL channel of their own
  // (`LeaseReturnRound`).
  const leases =
    (journaled && !soleOwner) || leaseBus !== undefined
      ? new ReservationLeases(store, () => billing.reservationOwner, {
          logger,
          onStoreFailure: () => ownerKeeper?.retire(),
          onLeaseGrown: () => metrics.walletReservationWrites.inc({ kind: 'lease' }),
        })
      : undefined;
  billing.leases = leases;
  // The sole process of an embedded store reserves in memory: only shared stores write requests' reservations.
  if (!soleOwner) billing.onRequestReserved = () => metrics.walletReservationWrites.inc({ kind: 'request' });
  const ownerTimeoutMs = config.billing.reservation_owner_timeout_ms;
  const leaseRound =
    leaseBus !== undefined && leases !== undefined
      ? new LeaseReturnRound(
          leaseBus,
          () => leases.returnUnused(),
          () => billing.reservationOwner,
          // Owners that beat in the last two heartbeats: a dead one not yet swept is not waited for.
          () => store.listReservationOwners(Date.now() - ownerTimeoutMs / 3),
          { logger, timeoutMs: config.billing.lease_return_timeout_ms },
        )
      : undefined;
  const localSettled = async () => {
    await Promise.all([leaseRound !== undefined ? leaseRound.run() : leases?.returnUnused(), writer.flushed()]);
  };
  const settled =
    journaled && options.settledAcrossWorkers !== undefined ? options.settledAcrossWorkers(localSettled) : localSettled;
  if (journaled || leaseRound !== undefined) billing.settled = settled;
  // Several processes on one store: each reserves under an owner kept alive by heartbeats, so the reservations of
  // one that dies are released by the others (a process alone on its store drops them all at its start instead).
  const ownerKeeper = soleOwner
    ? undefined
    : new ReservationOwnerKeeper(store, billing, {
        timeoutMs: ownerTimeoutMs,
        logger,
        // Embedded mode: every worker runs on this host, so one that exited is known at once.
        sameHost: store.kind === 'sqlite',
        onOwnerChange: (reason) => metrics.reservationOwnerChanges.inc({ reason }),
      });
  billing.onReservationStoreFailure = () => ownerKeeper?.retire();
  await ownerKeeper?.start();
  leases?.start();
  metrics.observeRequestLog(() => writer.stats);
  metrics.observeSpool(() => spool.pending);
  const notifier = new WebhookNotifier({
    secret: resolveSecret(loaded.dataDir, 'webhook-secret', 'whsec_', loaded.webhookSecret),
    logger,
  });
  const alerts = new BudgetAlertService({ ledger: store, notifier, logger, defaultCurrency: billing.currency });
  billing.onBudgetsReloaded = (budgets) => alerts.useBudgets(budgets);
  const recorder = new RequestRecorder(writer, billing, metrics, logger, {
    logRequests: config.log.requests,
    alerts: budgetAlertSink({ alerts, billing, logger }),
  });

  const upstreams = new Map<string, Upstream>();
  for (const upstreamConfig of config.upstreams) {
    const apiKey = loaded.upstreamApiKeys.get(upstreamConfig.name);
    upstreams.set(upstreamConfig.name, createUpstream(upstreamConfig, apiKey === undefined ? {} : { apiKey }));
  }
  const catalog = Catalog.fromConfig(config, upstreams);
  const clock = new RealClock();
  const router = new DeploymentRouter({
    clock,
    catalog,
    mode: config.routing.strategy,
    deployments: routingSettings(catalog, billing),
  });
  const prober =
    config.routing.probe_interval_ms > 0
      ? new HealthProber(router, catalog, { clock, intervalMs: config.routing.probe_interval_ms })
      : undefined;
  prober?.start();
  const limits: AdmissionStore =
    config.admission.store === 'redis'
      ? await createRedisAdmissionStore({
          redis: config.admission.redis_url,
          failurePolicy: config.admission.failure_policy,
          commandTimeoutMs: config.admission.command_timeout_ms,
          logger,
        })
      : new MemoryAdmissionStore({ clock });
  const plans = new PlanService(
    store,
    {
      limits: {
        ...(config.default_plan.rpm === undefined ? {} : { rpm: config.default_plan.rpm }),
        ...(config.default_plan.tpm === undefined ? {} : { tpm: config.default_plan.tpm }),
        ...(config.default_plan.tpd === undefined ? {} : { tpd: config.default_plan.tpd }),
        ...(config.default_plan.concurrency === undefined ? {} : { concurrency: config.default_plan.concurrency }),
      },
      tiers: [...config.default_plan.tiers],
      weight: config.default_plan.weight,
    },
    {
      bus,
      cacheTtlMs: config.cache.ttl_ms,
      onStoreFailure: (error, outcome) => storeReadFailed('plan', outcome, error),
    },
  );
  const gate = new AdmissionGate(plans, limits, billing, catalog.list(), {
    ...gateSchedulingOptions(config),
    clock,
    logger,
  });
  const relay = new RelayService(catalog, router, gate, recorder, metrics, {
    maxAttempts: config.routing.max_attempts,
    logger,
  });
  registerFleetMetrics(metrics, router, gate);
  const refiner =
    config.scheduling.capacity_refresh_ms > 0
      ? new CapacityRefiner(catalog.list(), gate.modelSchedulers, {
          clock,
          logger,
          intervalMs: config.scheduling.capacity_refresh_ms,
        })
      : undefined;
  refiner?.start();
  // Cluster mode: VTC fair-share counters meet in Redis, so fairness holds across processes.
  const fairShareStore =
    config.admission.store === 'redis'
      ? new RedisFairShareStore({
          redis: config.admission.redis_url,
          commandTimeoutMs: config.admission.command_timeout_ms,
        })
      : undefined;
  const fairShare =
    fairShareStore === undefined
      ? undefined
      : new FairShareSync(gate.modelSchedulers, fairShareStore, { clock, logger });
  fairShare?.start();
  // Seals the summaries of compacted conversations (Responses requests, conversations and batch lines open them).
  const compaction = new CompactionSeal(
    loaded.compactionSecrets ?? [await storeSecret(store, 'compaction_secret', 'tgcs_')],
    (reason) => metrics.compactionItemsRefused.labels(reason).inc(),
  );
  // Files and batches share the gateway's database; a store of another kind (none today) disables them.
  let batches: { service: BatchService; runner: BatchRunner } | undefined;
  if (store instanceof KyselyStore) {
    const batchStore = new KyselyBatchStore(store.kysely);
    const files = new FileStorage(path.join(loaded.dataDir, 'files'));
    const runner = new BatchRunner({
      store: batchStore,
      files,
      relay,
      recorder,
      billing,
      keys: store,
      compaction,
      logger,
      concurrency: config.batch.concurrency,
      batchConcurrency: config.batch.batch_concurrency,
      offPeak: config.batch.off_peak,
      offPeakFactor: config.batch.off_peak_concurrency_factor,
      maxLineBytes: config.batch.max_line_bytes,
      maxLines: config.batch.max_lines,
      pollIntervalMs: config.batch.poll_interval_ms,
      // Embedded mode is one process: every running line belongs to a dead one. In cluster mode, only old ones.
      staleRunningMs: store.kind === 'sqlite' ? 0 : 15 * 60_000,
      schedulers: gate.modelSchedulers,
    });
    const service = new BatchService(batchStore, files, {
      completionWindows: config.batch.completion_windows,
      maxFileBytes: config.batch.max_file_bytes,
      onChange: () => runner.wake(),
    });
    registerBatchMetrics(metrics, runner, gate);
    batches = { service, runner };
  }
  // Stored responses (the Responses API's `store`) share the gateway's database too.
  const responses =
    store instanceof KyselyStore
      ? new StoredResponses(new KyselyResponseStore(store.kysely), {
          enabled: config.responses.store,
          retentionMs: config.responses.retention_days * 86_400_000,
          logger,
          onSaveFailure: () => metrics.responsesNotStored.inc(),
        })
      : undefined;
  const conversations =
    store instanceof KyselyStore
      ? new Conversations(new KyselyConversationStore(store.kysely), { compaction })
      : undefined;
  // Background responses (`background: true`) need stored responses: a client polls them.
  const background =
    store instanceof KyselyStore && config.responses.store
      ? new BackgroundResponses({
          store: new KyselyResponseStore(store.kysely),
          relay,
          recorder,
          logger,
          retentionMs: config.responses.retention_days * 86_400_000,
          retryForMs: config.responses.background_retry_minutes * 60_000,
          maxRuns: config.responses.background_max_runs,
          maxRunsPerTenant: config.responses.background_max_runs_per_tenant,
          onSaveFailure: () => metrics.responsesNotStored.inc(),
          onEnded: (status) => metrics.backgroundResponsesEnded.labels(status).inc(),
        })
      : undefined;
  if (background !== undefined) {
    new Gauge({
      name: 'tollgate_background_responses_running',
      help: 'Background responses (background: true) this process is running now.',
      registers: [metrics.registry],
      collect() {
        this.set(background.size);
      },
    });
  }
  const checkpointer = new StreamCheckpointer(relay.inFlightStreams, billing, store, logger, {
    intervalMs: config.billing.checkpoint_interval_ms,
  });
  checkpointer.start();
  // Several processes on one store (cluster mode, or workers on one SQLite file): checkpoints of a process that died
  // are billed by whichever process notices them first. A process alone on its store bills them at its start.
  const checkpointMs = config.billing.checkpoint_interval_ms;
  const recovery = !soleOwner
    ? setInterval(() => {
        recoverCheckpoints(store, {
          staleAfterMs: CHECKPOINT_STALE_INTERVALS * checkpointMs,
          now: Date.now(),
          logger,
        }).catch((error: unknown) => logger.error({ err: error }, 'checkpoint recovery failed'));
      }, CHECKPOINT_REFRESH_INTERVALS * checkpointMs).unref()
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

  const outstanding = new OutstandingRequests();
  const connections = new ConnectionSignals();
  const app = createServer(
    {
      relay,
      keys,
      tenants,
      recorder,
      metrics,
      billing,
      store,
      plans,
      router,
      gate,
      outstanding,
      connections,
      compaction,
      adminToken: options.adminToken,
      logger,
      ready,
      settled,
      ...(batches === undefined ? {} : { batches }),
      ...(responses === undefined ? {} : { responses }),
      ...(conversations === undefined ? {} : { conversations }),
      ...(background === undefined ? {} : { background }),
    },
    {
      bodyLimitBytes: config.server.body_limit_bytes,
      cors: { origins: config.server.cors.origins, maxAgeSeconds: config.server.cors.max_age_s },
    },
  );
  await batches?.runner.start();
  responses?.start();
  background?.start();

  /**
   * Lets the requests in flight finish for up to `server.shutdown_grace_ms` after `app.close()` (`serverClosed`),
   * closing each keep-alive connection once it falls idle. Those still running at the end of the grace are stopped:
   * each ends its answer with a 503 `server_shutting_down` (a stream with that error event), billed for what it
   * delivered and logged; a connection still open 5 s later is cut. Resolves once the last request's record is on its
   * way to the writer.
   */
  const drain = async (serverClosed: Promise<unknown>) => {
    // A connection whose response ended during the drain would otherwise stay open for its keep-alive timeout.
    const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
    try {
      const graceMs = config.server.shutdown_grace_ms;
      if (await withDeadline(serverClosed, graceMs, 'requests in flight finishing (shutdown grace)', logger)) return;
      connections.stopAll(
        new UnavailableError('The gateway is shutting down: this request was stopped.', 'server_shutting_down'),
      );
      if (await withDeadline(serverClosed, 5_000, 'stopped requests ending their answers', logger)) return;
      app.server.closeAllConnections();
      await withDeadline(serverClosed, 5_000, 'HTTP server close', logger);
    } finally {
      clearInterval(sweep);
      await withDeadline(outstanding.idle(), 5_000, 'recording the last requests', logger);
    }
  };

  return {
    app,
    store,
    catalog,
    tenants,
    keys,
    logger,
    metrics,
    billing,
    ...(batches === undefined ? {} : { batches }),
    settled,
    async listen() {
      await app.listen({ host: config.server.host, port: config.server.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : config.server.port;
      const host = config.server.host;
      const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
      return { host, port, url: `http://${urlHost}:${port}` };
    },
    async close() {
      // Shutdown never hangs on one part: each slow step gets a deadline, then the rest closes anyway.
      // First the HTTP server stops taking work (new connections are refused, requests on open ones get 503) and the
      // requests in flight run on, for up to the grace period, with everything they use still running.
      const serverClosed = app.close();
      await withDeadline(batches?.runner.stop(), 5_000, 'batch runner stop', logger);
      await withDeadline(responses?.stop(), 5_000, 'stored responses sweep', logger);
      // Background runs are aborted and marked failed, while the store is open.
      await withDeadline(background?.stop(), 5_000, 'background responses stop', logger);
      await drain(serverClosed);
      checkpointer.stop();
      await ownerKeeper?.stop();
      billing.stop();
      prober?.stop();
      refiner?.stop();
      fairShare?.stop();
      await fairShareStore?.close();
      await changeBus?.close();
      await volumePositions?.close();
      if (recovery !== undefined) clearInterval(recovery);
      // After the last request: what this process leased and no longer uses goes back to the wallets.
      await leases?.stop();
      leaseRound?.close();
      await leaseBus?.close();
      // After the last request: its budget hold settles before this process's owner key goes.
      await budgetHolds?.close();
      await notifier.close();
      await limits.close();
      await writer.close();
      await Promise.all([...upstreams.values()].map((upstream) => upstream.close()));
      if (options.store === undefined) await store.close();
    },
  };
}

/**
 * Counts a failed request-path store read (key lookup, plan refresh) and logs it, at most once a second: during an
 * outage every request would otherwise log the same failure.
 */
function storeReadFailureReporter(
  metrics: GatewayMetrics,
  logger: Logger,
): (read: 'key' | 'plan', outcome: 'stale' | 'refused', error: unknown) => void {
  let loggedAt = 0;
  return (read, outcome, error) => {
    metrics.storeReadFailures.inc({ read, outcome });
    const now = Date.now();
    if (now - loggedAt < 1000) return;
    loggedAt = now;
    logger.warn(
      { err: error, read, outcome },
      outcome === 'stale'
        ? 'the store failed a request-path read: serving the last value read'
        : 'the store failed a request-path read: requests are refused with 503',
    );
  };
}
