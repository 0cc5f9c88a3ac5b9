/**
 * `tollgate serve`: one process, or a primary with N workers sharing the port (node:cluster) when
 * `server.workers` > 1. The primary prepares the store (migrations, demo tenant) and relays what changes between
 * workers on one SQLite file (`ClusterInvalidationBus`), so a revoked key stops working in every worker at once.
 */
import cluster, { type Worker } from 'node:cluster';
import { recoverCheckpoints } from '../billing/stream-checkpointer.js';
import { type LoadedConfig, loadConfig } from '../config/load-config.js';
import { configuredLoggerOptions, createLogger } from '../observability/logger.js';
import { createStore } from '../store/create-store.js';
import { InProcessInvalidationBus } from '../tenancy/invalidation-bus.js';
import { TenantService } from '../tenancy/tenant-service.js';
import { resolveAdminToken } from './admin-token.js';
import { ClusterInvalidationBus, ipcChannel, relayInvalidation } from './cluster-invalidation-bus.js';
import { createGateway } from './create-gateway.js';
import { ensureDemoTenant } from './demo-tenant.js';
import { settleLeftSettlements } from './left-settlements.js';
import { withServingHeap } from './serving-heap.js';
import { formatStartBanner } from './start-banner.js';
import { SettleRoundCoordinator, WorkerSettleBarrier } from './worker-settle-barrier.js';

/** Options of `runServer`. */
export interface RunServerOptions {
  configPath?: string;
}

/** Starts the gateway and keeps it running until SIGINT/SIGTERM. */
export async function runServer(options: RunServerOptions): Promise<void> {
  const loaded = loadConfig(options.configPath === undefined ? {} : { configPath: options.configPath });
  const adminToken = resolveAdminToken(loaded.dataDir, loaded.adminToken);
  if (cluster.isWorker) return runWorker(loaded, adminToken);

  const workers = loaded.config.server.workers;
  const demoKey = await prepareStore(loaded);
  if (workers === 1) {
    const gateway = await createGateway(loaded, { adminToken, recoverOnStart: false });
    const address = await gateway.listen();
    printBanner(loaded, address.url, adminToken, demoKey);
    onShutdown(async () => gateway.close(), { forceOnSecondSignal: true });
    return;
  }

  cluster.setupPrimary({ args: process.argv.slice(2), execArgv: withServingHeap(process.execArgv) });
  let listening = 0;
  /** Workers that said they listen. One still starting has served nothing, and would not hear a flush request yet. */
  const serving = new Set<number>();
  const rounds = new SettleRoundCoordinator(() =>
    Object.values(cluster.workers ?? {}).filter(
      (worker): worker is Worker => worker?.isConnected() === true && serving.has(worker.id),
    ),
  );
  const fork = () => {
    const worker = cluster.fork();
    worker.on('message', (message: unknown) => {
      if (rounds.onMessage(worker, message)) return;
      if (relayInvalidation(message, Object.values(cluster.workers ?? {}))) return;
      if ((message as { type?: unknown } | null)?.type === 'tollgate:listening') {
        serving.add(worker.id);
        listening += 1;
        if (listening === workers) {
          printBanner(loaded, (message as unknown as { url: string }).url, adminToken, demoKey);
        }
      }
    });
  };
  for (let index = 0; index < workers; index++) fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    serving.delete(worker.id);
    rounds.onExit(worker.id);
    if (!stopping && code !== 0 && signal !== 'SIGTERM' && signal !== 'SIGINT') {
      // The new worker settles what the dead one journaled before it serves (its start settles orphaned segments).
      console.error(`worker ${worker.process.pid} exited (${signal ?? code}); restarting it`);
      fork();
    }
  });
  const living = () => Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
  onShutdown(
    async () => {
      stopping = true;
      // Each worker drains its own requests (server.shutdown_grace_ms) and bounds every later step, then exits. The
      // primary waits for them all: were it to exit first, the workers would lose their channel to it and exit at
      // once, cutting what they still serve. The signal goes straight to each process, not through `worker.kill`,
      // which would first close that channel and the worker's listening socket with it.
      const exited = living().map((worker) => new Promise((resolve) => worker.once('exit', resolve)));
      for (const worker of living()) worker.process.kill('SIGTERM');
      await Promise.all(exited);
    },
    {
      forceOnSecondSignal: true,
      force: () => {
        for (const worker of living()) worker.process.kill('SIGKILL');
      },
    },
  );
}

async function prepareStore(loaded: LoadedConfig): Promise<string | undefined> {
  const store = await createStore(loaded.storeUrl);
  try {
    await store.migrate();
    if (store.kind === 'sqlite') {
      // Embedded mode: nothing of a previous process is live, so its checkpoints are billed and its reservations
      // dropped here, once, before any worker starts; what it spooled or journaled is settled before that.
      const logger = createLogger({ ...configuredLoggerOptions(loaded.config.log), sync: true });
      await settleLeftSettlements(loaded.dataDir, store, logger);
      await recoverCheckpoints(store, { staleAfterMs: 0, now: Date.now(), logger });
      await store.resetReservations();
    }
    return await ensureDemoTenant(
      store,
      new TenantService(store, { bus: new InProcessInvalidationBus() }),
      loaded.config.billing.demo_credit,
      loaded.config.pricing?.currency,
    );
  } finally {
    await store.close();
  }
}

async function runWorker(loaded: LoadedConfig, adminToken: string): Promise<void> {
  const gateway = await createGateway(loaded, {
    adminToken,
    workerBus: (options) => new ClusterInvalidationBus(ipcChannel(process), options),
    recoverOnStart: false,
    // Workers share the SQLite file: reservations must be in the wallet rows where every worker sees them.
    ownsStore: false,
    settledAcrossWorkers: (localSettled) =>
      new WorkerSettleBarrier(
        localSettled,
        {
          send: (message) => process.send?.(message),
          onMessage: (handler) => process.on('message', handler),
        },
        {
          onTimeout: () =>
            process.emitWarning('A settle round of the workers timed out: a billing read may miss recent requests'),
        },
      ).settled,
  });
  const address = await gateway.listen();
  process.send?.({ type: 'tollgate:listening', url: address.url });
  onShutdown(async () => gateway.close());
}

function printBanner(loaded: LoadedConfig, url: string, adminToken: string, demoKey: string | undefined): void {
  const store = loaded.storeUrl.startsWith('sqlite://') ? loaded.storeUrl : loaded.storeUrl.replace(/\/\/[^@]*@/, '//');
  process.stdout.write(
    `${formatStartBanner({
      url,
      adminToken,
      demoKey,
      models: loaded.config.models.map((model) => model.name),
      store,
      workers: loaded.config.server.workers,
      admissionStore: loaded.config.admission.store,
    })}\n`,
  );
}

/**
 * Closes on the first SIGINT or SIGTERM, then exits. With `forceOnSecondSignal` (a process a person may be waiting
 * on: the only one, or the primary), a second signal during the drain exits at once, after `force`; what was still
 * running is settled at the next start, as after a crash. A worker ignores it: a terminal's Ctrl-C reaches it as
 * well as the primary's SIGTERM, and those are one request to stop, not two.
 */
function onShutdown(close: () => Promise<void>, options: { forceOnSecondSignal?: boolean; force?: () => void } = {}) {
  let closing = false;
  const handler = (signal: NodeJS.Signals) => {
    if (closing) {
      if (options.forceOnSecondSignal !== true) return;
      createLogger({ sync: true }).warn({ signal }, 'second signal: exiting without waiting for requests in flight');
      options.force?.();
      process.exit(1);
    }
    closing = true;
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        createLogger({ sync: true }).error({ err: error, signal }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
