import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../clock/clock.js';
import { CircuitBreaker } from './circuit-breaker.js';

function breaker(options: ConstructorParameters<typeof CircuitBreaker>[1] = {}) {
  const clock = new VirtualClock(1_000_000);
  return { clock, breaker: new CircuitBreaker(clock, options) };
}

describe('CircuitBreaker', () => {
  it('opens after failureThreshold consecutive failures, not when a success breaks the run', () => {
    const { breaker: circuit } = breaker({ failureThreshold: 3, errorRateMinimumRequests: 1000 });
    circuit.recordFailure(false);
    circuit.recordFailure(false);
    circuit.recordSuccess(false);
    circuit.recordFailure(false);
    circuit.recordFailure(false);
    expect(circuit.state).toBe('closed');
    expect(circuit.snapshot().consecutiveFailures).toBe(2);
    circuit.recordFailure(false);
    expect(circuit.state).toBe('open');
    expect(circuit.admits()).toBe(false);
  });

  it('opens when the failure rate over the window exceeds the threshold once enough requests were seen', () => {
    const { breaker: circuit } = breaker({
      failureThreshold: 100,
      errorRateThreshold: 0.5,
      errorRateMinimumRequests: 10,
    });
    // F F S F F S F F S: 6 failures of 9 — above 50% but under the minimum of 10 outcomes.
    const pattern = [false, false, true, false, false, true, false, false, true];
    for (const ok of pattern) {
      if (ok) circuit.recordSuccess(false);
      else circuit.recordFailure(false);
    }
    expect(circuit.state).toBe('closed');
    expect(circuit.snapshot().errorRate).toBeCloseTo(6 / 9, 10);
    circuit.recordFailure(false); // 7 of 10
    expect(circuit.state).toBe('open');
  });

  it('forgets outcomes older than the window', () => {
    const { clock, breaker: circuit } = breaker({
      failureThreshold: 100,
      errorRateWindowMs: 10_000,
      errorRateMinimumRequests: 4,
    });
    for (let index = 0; index < 3; index++) circuit.recordFailure(false);
    clock.advance(11_000);
    expect(circuit.snapshot().windowRequests).toBe(0);
    circuit.recordSuccess(false);
    circuit.recordSuccess(false);
    circuit.recordSuccess(false);
    circuit.recordFailure(false); // 1 of 4 in the window: 25%
    expect(circuit.state).toBe('closed');
  });

  it('goes open → half-open after the cool-down, lets exactly one probe through, and closes on its success', () => {
    const { clock, breaker: circuit } = breaker({ failureThreshold: 2, openMs: 5_000 });
    circuit.recordFailure(false);
    circuit.recordFailure(false);
    const openedAt = clock.now();
    expect(circuit.snapshot().openUntil).toBe(openedAt + 5_000);
    clock.advance(4_999);
    expect(circuit.state).toBe('open');
    clock.advance(1);
    expect(circuit.state).toBe('half-open');
    expect(circuit.admits()).toBe(true);
    expect(circuit.start()).toBe(true);
    expect(circuit.admits()).toBe(false);
    expect(circuit.start()).toBe(false);
    // Outcomes of requests that are not the probe do not decide anything.
    circuit.recordSuccess(false);
    expect(circuit.state).toBe('half-open');
    circuit.recordSuccess(true);
    expect(circuit.state).toBe('closed');
    expect(circuit.snapshot().consecutiveFailures).toBe(0);
    // Closed again with a clean slate: one failure does not reopen it.
    circuit.recordFailure(false);
    expect(circuit.state).toBe('closed');
  });

  it('goes half-open → open on a failed probe, doubling the cool-down up to maxOpenMs', () => {
    const { clock, breaker: circuit } = breaker({ failureThreshold: 1, openMs: 1_000, maxOpenMs: 3_000 });
    circuit.recordFailure(false);
    const expectedCoolDowns = [2_000, 3_000, 3_000];
    clock.advance(1_000);
    for (const coolDown of expectedCoolDowns) {
      expect(circuit.state).toBe('half-open');
      expect(circuit.start()).toBe(true);
      circuit.recordFailure(true);
      expect(circuit.state).toBe('open');
      expect(circuit.snapshot().openUntil).toBe(clock.now() + coolDown);
      clock.advance(coolDown - 1);
      expect(circuit.state).toBe('open');
      clock.advance(1);
    }
    expect(circuit.start()).toBe(true);
    circuit.recordSuccess(true);
    expect(circuit.state).toBe('closed');
    // After closing, the cool-down starts again from openMs.
    circuit.recordFailure(false);
    expect(circuit.snapshot().openUntil).toBe(clock.now() + 1_000);
  });

  it('frees the probe slot when the probe is abandoned', () => {
    const { clock, breaker: circuit } = breaker({ failureThreshold: 1, openMs: 1_000 });
    circuit.recordFailure(false);
    clock.advance(1_000);
    expect(circuit.start()).toBe(true);
    circuit.releaseProbe(true);
    expect(circuit.state).toBe('half-open');
    expect(circuit.admits()).toBe(true);
  });

  it('ignores late failures of requests sent before it opened', () => {
    const { breaker: circuit } = breaker({ failureThreshold: 1, openMs: 1_000 });
    circuit.recordFailure(false);
    const openUntil = circuit.snapshot().openUntil;
    circuit.recordFailure(false);
    circuit.recordSuccess(false);
    expect(circuit.state).toBe('open');
    expect(circuit.snapshot().openUntil).toBe(openUntil);
  });
});
