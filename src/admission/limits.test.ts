import { describe, expect, it } from 'vitest';
import { admissionScopes, rateWindow, resolveLimits } from './limits.js';

describe('resolveLimits', () => {
  it('lets the most specific layer win per field', () => {
    expect(
      resolveLimits({ rpm: 100, tpm: 10_000, tpd: 1_000_000 }, { rpm: 10, concurrency: 4 }, undefined, { tpm: 500 }),
    ).toEqual({ rpm: 10, tpm: 500, tpd: 1_000_000, concurrency: 4 });
  });

  it('is unlimited with no layer', () => {
    expect(resolveLimits()).toEqual({});
  });
});

describe('admissionScopes', () => {
  it('counts each field at the level that set it', () => {
    expect(
      admissionScopes({
        tenantId: 'ten_a',
        keyId: 'key_b',
        model: 'm',
        plan: { rpm: 100, tpm: 10_000, tpd: 1_000_000, concurrency: 8 },
        key: { rpm: 10 },
        keyModel: { tpm: 500, rpm: 5 },
      }),
    ).toEqual([
      { id: 'tenant:ten_a', limits: { tpd: 1_000_000, concurrency: 8 } },
      { id: 'key:key_b:model:m', limits: { rpm: 5, tpm: 500 } },
    ]);
  });

  it('counts a plan per-model override on its own tenant-and-model scope, below any key override', () => {
    expect(
      admissionScopes({
        tenantId: 'ten_a',
        keyId: 'key_b',
        model: 'm',
        plan: { rpm: 100, tpm: 10_000 },
        planModel: { rpm: 3, concurrency: 2 },
        key: { concurrency: 1 },
      }),
    ).toEqual([
      { id: 'tenant:ten_a', limits: { tpm: 10_000 } },
      { id: 'tenant:ten_a:model:m', limits: { rpm: 3 } },
      { id: 'key:key_b', limits: { concurrency: 1 } },
    ]);
  });

  it('touches no counter for an unlimited plan', () => {
    expect(admissionScopes({ tenantId: 't', keyId: 'k', model: 'm', plan: {} })).toEqual([]);
  });
});

describe('rateWindow', () => {
  it('defaults to a minute of one-second buckets', () => {
    expect(rateWindow()).toEqual({ windowMs: 60_000, bucketMs: 1000, buckets: 60 });
  });
});
