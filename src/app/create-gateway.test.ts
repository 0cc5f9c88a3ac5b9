import { describe, expect, it } from 'vitest';
import { parseConfigDocument } from '../config/load-config.js';
import { gateSchedulingOptions } from './create-gateway.js';

const fleet = {
  upstreams: [{ name: 'sim', type: 'simulated' }],
  models: [{ name: 'm', context_window: 8192, deployments: [{ upstream: 'sim', model: 'm' }] }],
};

describe('gateSchedulingOptions', () => {
  it('passes the online headroom and the off-peak ceiling of the configuration to the schedulers', () => {
    const config = parseConfigDocument({
      ...fleet,
      scheduling: { low_class_ceiling: 0.8, online_headroom: { per_online_sequence: 0.3 } },
      batch: { off_peak: [{ start: '00:00', end: '06:00' }], off_peak_ceiling: 0.95 },
    });
    const options = gateSchedulingOptions(config);
    expect(options.onlineHeadroom).toEqual({ perOnlineSequence: 0.3, minimumSequences: 0 });
    expect(options.batchCeilingAt?.(Date.UTC(2026, 10, 29, 3))).toBe(0.95);
    expect(options.batchCeilingAt?.(Date.UTC(2026, 10, 29, 12))).toBe(0.8);
    expect(options.scheduling?.batch?.admissionCeiling).toBe(0.8);
  });

  it('leaves headroom and the off-peak ceiling out when not configured, and scheduling when disabled', () => {
    const options = gateSchedulingOptions(parseConfigDocument({ ...fleet, scheduling: { enabled: false } }));
    expect(options).toEqual({ scheduling: undefined });
  });
});
