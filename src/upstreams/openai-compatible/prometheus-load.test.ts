import { describe, expect, it } from 'vitest';
import { parsePrometheusLoad } from './prometheus-load.js';

describe('parsePrometheusLoad', () => {
  it('sums vLLM gauges over label sets, ignoring comments, similar names and timestamps', () => {
    const text = [
      '# HELP vllm:num_requests_running Number of requests currently running on GPU.',
      '# TYPE vllm:num_requests_running gauge',
      'vllm:num_requests_running{model_name="a b",engine="0"} 5.0',
      'vllm:num_requests_running{model_name="c",engine="1"} 2 1733000000000',
      'vllm:num_requests_waiting{model_name="a b"} 3.0',
      'vllm:num_requests_waiting_by_reason{reason="capacity"} 50',
      'vllm:num_requests_swapped{model_name="a b"} 9',
    ].join('\n');
    expect(parsePrometheusLoad(text)).toEqual({ running: 7, waiting: 3 });
  });

  it('reads SGLang gauges and label-less samples', () => {
    expect(parsePrometheusLoad('sglang:num_running_reqs 4\r\nsglang:num_queue_reqs{tp_rank="0"} 6\n')).toEqual({
      running: 4,
      waiting: 6,
    });
  });

  it('returns undefined when no known gauge is present', () => {
    expect(parsePrometheusLoad('process_cpu_seconds_total 12.5\n')).toBeUndefined();
    expect(parsePrometheusLoad('')).toBeUndefined();
  });
});
