/**
 * Scheduler and routing metrics, read at scrape time: queue depth and wait per class, shed and refused counts by
 * reason, and per deployment in-flight / capacity / circuit state.
 */
import { Gauge, Histogram } from 'prom-client';
import type { AdmissionGate } from '../relay/admission-gate.js';
import type { DeploymentRouter } from '../routing/deployment-router.js';
import { refusalReasons } from '../scheduling/scheduler.js';
import { serviceClasses } from '../scheduling/service-class.js';
import type { GatewayMetrics } from './metrics.js';

const circuitValue = { closed: 0, 'half-open': 1, open: 2 } as const;

/** Registers the fleet metrics on the gateway's registry. */
export function registerFleetMetrics(metrics: GatewayMetrics, router: DeploymentRouter, gate: AdmissionGate): void {
  const registers = [metrics.registry];
  const waits = new Histogram({
    name: 'tollgate_queue_wait_seconds',
    help: 'Time requests waited for capacity, by model and service class, seconds.',
    labelNames: ['model', 'class'] as const,
    buckets: [0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
    registers,
  });
  new Gauge({
    name: 'tollgate_queue_depth',
    help: 'Requests waiting for capacity, by model and service class.',
    labelNames: ['model', 'class'] as const,
    registers,
    collect() {
      for (const [model, scheduler] of gate.modelSchedulers) {
        const stats = scheduler.stats();
        const samples = scheduler.takeWaitSamples();
        for (const serviceClass of serviceClasses) {
          this.labels(model, serviceClass).set(stats.classes[serviceClass].queued);
          for (const wait of samples[serviceClass]) waits.labels(model, serviceClass).observe(wait / 1000);
        }
      }
    },
  });
  new Gauge({
    name: 'tollgate_scheduler_refused',
    help: 'Requests refused by the scheduler since start, by model, class and reason (shed, queue_wait, …).',
    labelNames: ['model', 'class', 'reason'] as const,
    registers,
    collect() {
      for (const [model, scheduler] of gate.modelSchedulers) {
        const stats = scheduler.stats();
        for (const serviceClass of serviceClasses) {
          for (const reason of refusalReasons) {
            this.labels(model, serviceClass, reason).set(stats.classes[serviceClass].refused[reason]);
          }
        }
      }
    },
  });
  new Gauge({
    name: 'tollgate_model_utilisation',
    help: "Share of a model's capacity in use (sequences or tokens, whichever is larger).",
    labelNames: ['model'] as const,
    registers,
    collect() {
      for (const [model, scheduler] of gate.modelSchedulers) this.labels(model).set(scheduler.stats().utilisation);
    },
  });
  const deploymentGauge = (
    name: string,
    help: string,
    read: (snapshot: ReturnType<DeploymentRouter['fleetSnapshot']>[number]) => number,
  ) =>
    new Gauge({
      name,
      help,
      labelNames: ['deployment'] as const,
      registers,
      collect() {
        for (const snapshot of router.fleetSnapshot()) this.labels(snapshot.id).set(read(snapshot));
      },
    });
  deploymentGauge('tollgate_deployment_in_flight_tokens', 'Tokens in flight on a deployment.', (s) => s.inFlightTokens);
  deploymentGauge(
    'tollgate_deployment_in_flight_requests',
    'Requests in flight on a deployment.',
    (s) => s.inFlightRequests,
  );
  deploymentGauge(
    'tollgate_deployment_capacity_tokens',
    'Capacity of a deployment, tokens in flight.',
    (s) => s.capacityTokens,
  );
  deploymentGauge(
    'tollgate_deployment_circuit_state',
    'Circuit breaker of a deployment: 0 closed, 1 half-open, 2 open.',
    (s) => circuitValue[s.circuit],
  );
}
