/**
 * Prometheus metrics of the gateway. Label values are bounded: models are the catalog's names (or `unknown`),
 * endpoints and statuses come from closed sets, so a hostile client cannot grow the series count.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { SettlementWriterStats } from '../metering/settlement-writer.js';

/** The writer's counters as Prometheus counters: the stat, the metric's name, its help. */
const requestLogCounters: ReadonlyArray<readonly [keyof SettlementWriterStats, string, string]> = [
  ['committed', 'tollgate_request_log_committed_total', 'Request-log records committed to the store.'],
  [
    'transactions',
    'tollgate_request_log_transactions_total',
    'Group commits of request-log records (committed ÷ transactions is the mean batch).',
  ],
  ['dropped', 'tollgate_request_log_dropped_total', 'Request-log records dropped (store down and buffer full).'],
  [
    'failedCommits',
    'tollgate_request_log_failed_commits_total',
    'Failed request-log commits (retried, or spooled to disk).',
  ],
  [
    'spooled',
    'tollgate_request_log_spooled_total',
    'Request-log records written to the local spool while the store was down (settled into it later).',
  ],
  [
    'journaled',
    'tollgate_request_log_journaled_total',
    'Request-log records appended to the settlement journal, durable there before their commit (embedded mode).',
  ],
  [
    'journalFailures',
    'tollgate_request_log_journal_failures_total',
    'Failed appends to the settlement journal (their responses waited for the commit instead).',
  ],
];

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * How often the event-loop lag histogram (`tollgate_process_nodejs_eventloop_lag_*`) samples the loop, ms. prom-client's
 * default, 10 ms, wakes an idle gateway 100 times a second; at 50 ms an idle gateway's threads woke 42 times a second
 * instead of 120-123 and used 14.8-15.0 ms of CPU a second instead of 16.8-17.4 (docs/benchmarks.md, session 18).
 * Stalls shorter than the period are sampled, not all seen; longer ones always are.
 */
const EVENT_LOOP_SAMPLE_MS = 50;

/** The gateway's metric instruments, on their own registry. */
export class GatewayMetrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'tollgate_requests_total',
    help: 'Requests answered, by endpoint, public model and HTTP status.',
    labelNames: ['endpoint', 'model', 'status'] as const,
    registers: [this.registry],
  });

  readonly requestDuration = new Histogram({
    name: 'tollgate_request_duration_seconds',
    help: 'Time from receiving a request to its last byte, seconds.',
    labelNames: ['endpoint', 'model'] as const,
    buckets: latencyBuckets,
    registers: [this.registry],
  });

  readonly timeToFirstToken = new Histogram({
    name: 'tollgate_time_to_first_token_seconds',
    help: 'Time from receiving a streamed request to its first content chunk, seconds.',
    labelNames: ['model'] as const,
    buckets: latencyBuckets,
    registers: [this.registry],
  });

  readonly tokens = new Counter({
    name: 'tollgate_tokens_total',
    help: 'Tokens metered, by public model and class (input, cached_input, output).',
    labelNames: ['model', 'class'] as const,
    registers: [this.registry],
  });

  readonly volumeCounterFallbacks = new Counter({
    name: 'tollgate_volume_counter_fallbacks_total',
    help: "Requests rated by the process's own month count because the shared volume counter (Redis) failed.",
    registers: [this.registry],
  });

  readonly budgetHoldFallbacks = new Counter({
    name: 'tollgate_budget_hold_fallbacks_total',
    help: "Admissions whose hard budgets were checked by the process's own counts because the shared holds (Redis) failed.",
    registers: [this.registry],
  });

  readonly responsesNotStored = new Counter({
    name: 'tollgate_responses_not_stored_total',
    help:
      'Responses API responses answered but not stored because the store failed: reading them back or going on ' +
      'from them will fail.',
    registers: [this.registry],
  });

  readonly compactionItemsRefused = new Counter({
    name: 'tollgate_compaction_items_refused_total',
    help:
      'Compaction items refused (400 invalid_encrypted_content): `unknown_key` when sealed with a key this gateway ' +
      "no longer has (a secret replaced without keeping the old one), `unverified` when changed or another tenant's.",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly backgroundResponsesEnded = new Counter({
    name: 'tollgate_background_responses_total',
    help:
      'Background responses (background: true) this process ran to their end, by final status: completed, ' +
      'incomplete, failed (refused, upstream failure, or the gateway stopping), cancelled.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });

  readonly invalidationBusFailures = new Counter({
    name: 'tollgate_invalidation_bus_failures_total',
    help:
      'Messages to the other processes (key revocations, configuration changes, lease returns) not sent, and ' +
      'losses of the connection they are heard on, by bus: redis, postgres, or ipc (workers on one SQLite file).',
    labelNames: ['bus'] as const,
    registers: [this.registry],
  });

  readonly walletReservationWrites = new Counter({
    name: 'tollgate_wallet_reservation_writes_total',
    help:
      'Wallet funds reserved by a store write, by kind: lease (a lease grew; its requests then reserve in memory) or ' +
      "request (one request's own reservation, written before it runs).",
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly billingStoreUnavailable = new Counter({
    name: 'tollgate_billing_store_unavailable_total',
    help: 'Priced requests refused with 503 billing_store_unavailable: the store failed their wallet reservation.',
    registers: [this.registry],
  });

  readonly storeReadFailures = new Counter({
    name: 'tollgate_store_read_failures_total',
    help:
      'Store reads on the request path that failed, by read (key, plan) and outcome: stale (the last value read was ' +
      'used) or refused (the request was answered 503 store_unavailable).',
    labelNames: ['read', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly reservationOwnerChanges = new Counter({
    name: 'tollgate_reservation_owner_changes_total',
    help:
      'Times this process took a new reservation owner id, by reason: late (another process swept it as dead while ' +
      'its heartbeats stalled) or retired (a store call on its holds failed).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly upstreamErrors = new Counter({
    name: 'tollgate_upstream_errors_total',
    help: 'Failed upstream calls, by deployment and error code.',
    labelNames: ['deployment', 'code'] as const,
    registers: [this.registry],
  });

  readonly inFlight = new Gauge({
    name: 'tollgate_requests_in_flight',
    help: 'Requests being processed, by endpoint.',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  /** Exposes the request-log writer's counters, read at scrape time. */
  observeRequestLog(stats: () => SettlementWriterStats): void {
    for (const [field, name, help] of requestLogCounters) {
      let reported = 0;
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const value = stats()[field];
          if (value > reported) this.inc(value - reported);
          reported = value;
        },
      });
    }
  }

  /** Exposes how many settlements wait in the local spool for the store (read at scrape time). */
  observeSpool(pending: () => number): void {
    new Gauge({
      name: 'tollgate_request_log_spool_pending',
      help: 'Request-log records in the local spool, waiting for the store to take them (0 when it is caught up).',
      registers: [this.registry],
      collect() {
        this.set(pending());
      },
    });
  }

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({
        register: this.registry,
        prefix: 'tollgate_process_',
        eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
      });
    }
  }
}
