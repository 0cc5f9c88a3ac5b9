/**
 * Reads an inference server's load from its Prometheus `/metrics` text (exposition format 0.0.4).
 */
import type { UpstreamLoad } from '../upstream.js';

/** Metric names of running and waiting requests, per server family. */
const runningMetrics = new Set(['vllm:num_requests_running', 'sglang:num_running_reqs']);
const waitingMetrics = new Set(['vllm:num_requests_waiting', 'sglang:num_queue_reqs']);

/**
 * Sums the running and waiting request gauges of vLLM (`vllm:num_requests_running`, `vllm:num_requests_waiting`) or
 * SGLang (`sglang:num_running_reqs`, `sglang:num_queue_reqs`) over all label sets (one per model or engine).
 * Returns `undefined` when neither gauge is present.
 */
export function parsePrometheusLoad(text: string): UpstreamLoad | undefined {
  let running = 0;
  let waiting = 0;
  let found = false;
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    const nameEnd = brace !== -1 && (space === -1 || brace < space) ? brace : space;
    if (nameEnd === -1) continue;
    const name = line.slice(0, nameEnd);
    const isRunning = runningMetrics.has(name);
    if (!isRunning && !waitingMetrics.has(name)) continue;
    // Label values may contain spaces; the sample value follows the closing brace, then an optional timestamp.
    const rest = nameEnd === brace ? line.slice(line.lastIndexOf('}') + 1) : line.slice(nameEnd);
    const token = rest.trim().split(/\s+/)[0];
    if (token === undefined || token === '') continue;
    const value = Number(token);
    if (!Number.isFinite(value)) continue;
    found = true;
    if (isRunning) running += value;
    else waiting += value;
  }
  return found ? { running, waiting } : undefined;
}
