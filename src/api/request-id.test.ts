import { describe, expect, it } from 'vitest';
import { newRequestId } from './request-id.js';

describe('newRequestId', () => {
  it('starts with the instant, in 12 hex digits, then 20 random ones', () => {
    const at = Date.UTC(2026, 10, 29, 12, 0, 0, 123);
    const id = newRequestId(at);
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    expect(Number.parseInt(id.slice(4, 16), 16)).toBe(at);
  });

  it('sorts ids of later instants after earlier ones, as text', () => {
    const instants = [0, 1, 15, 16, 255, 256, Date.UTC(2026, 0, 1), Date.UTC(2026, 0, 1) + 1, Date.UTC(9999, 0, 1)];
    const ids = instants.map((at) => newRequestId(at));
    expect([...ids].sort()).toEqual(ids);
  });

  it('never repeats within one millisecond', () => {
    const ids = new Set(Array.from({ length: 20_000 }, () => newRequestId(1_700_000_000_000)));
    expect(ids.size).toBe(20_000);
  });
});
