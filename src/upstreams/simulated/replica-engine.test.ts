import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../clock/clock.js';
import { ReplicaEngine, resolveSimulatedProfile } from './replica-engine.js';

// DESIGN.md defaults, written out so a changed default fails here.
const T_PREFILL_MS = 17 / 1000;
const T_FIXED = 3.4;
const T_SEQ = 0.055;

interface Trace {
  admittedAt?: number;
  tokenTimes: number[];
  doneAt?: number;
  aborted?: boolean;
}

function submit(engine: ReplicaEngine, clock: VirtualClock, promptTokens: number, outputTokens: number) {
  const trace: Trace = { tokenTimes: [] };
  const sequence = engine.submit({
    promptTokens,
    outputTokens,
    onAdmit: () => {
      trace.admittedAt = clock.now();
    },
    onToken: (index) => {
      if (index !== trace.tokenTimes.length) throw new Error(`token ${index} out of order`);
      trace.tokenTimes.push(clock.now());
    },
    onDone: () => {
      trace.doneAt = clock.now();
    },
    onAbort: () => {
      trace.aborted = true;
    },
  });
  return { trace, sequence };
}

describe('resolveSimulatedProfile', () => {
  it('fills the DESIGN.md defaults and rejects invalid values', () => {
    expect(resolveSimulatedProfile({})).toEqual({
      t_prefill_us: 17,
      t_fixed_ms: 3.4,
      t_seq_ms: 0.055,
      max_batch: 64,
      kv_tokens: 262_144,
    });
    expect(resolveSimulatedProfile({ max_batch: 8 }).max_batch).toBe(8);
    expect(() => resolveSimulatedProfile({ max_batch: 0 })).toThrow(RangeError);
  });
});

describe('ReplicaEngine', () => {
  it('times a single request: TTFT = prefill + first step, then one step per token', () => {
    const clock = new VirtualClock(1_000);
    const engine = new ReplicaEngine({}, { clock });
    const { trace, sequence } = submit(engine, clock, 1000, 100);
    expect(engine.waiting).toBe(1);
    expect(engine.pendingOutputTokens).toBe(100);
    clock.advance(0);
    expect(engine.running).toBe(1);
    expect(engine.waiting).toBe(0);
    expect(engine.kvTokensInUse).toBe(1100);
    clock.runUntilIdle();

    const firstStep = 1000 * T_PREFILL_MS + T_FIXED + T_SEQ; // 20.455 ms
    expect(trace.admittedAt).toBe(1_000);
    expect(trace.tokenTimes).toHaveLength(100);
    expect(trace.tokenTimes[0]! - 1_000).toBeCloseTo(firstStep, 9);
    expect(trace.tokenTimes[1]! - trace.tokenTimes[0]!).toBeCloseTo(T_FIXED + T_SEQ, 9);
    expect(trace.doneAt! - 1_000).toBeCloseTo(firstStep + 99 * (T_FIXED + T_SEQ), 9); // 362.5 ms
    expect(sequence.state).toBe('done');
    expect(engine.running).toBe(0);
    expect(engine.kvTokensInUse).toBe(0);
    expect(engine.stats).toMatchObject({ steps: 100, promptTokens: 1000, generatedTokens: 100, completed: 1 });
  });

  it('decodes ≈290 tok/s at batch 1 and ≈9,000 tok/s at batch 64', () => {
    const rate = (batch: number, tokens: number) => {
      const clock = new VirtualClock();
      const engine = new ReplicaEngine({}, { clock });
      for (let index = 0; index < batch; index++) submit(engine, clock, 0, tokens);
      const elapsedMs = clock.runUntilIdle();
      expect(engine.stats.generatedTokens).toBe(batch * tokens);
      return (batch * tokens) / (elapsedMs / 1000);
    };
    const batch1 = rate(1, 1000);
    expect(batch1).toBeCloseTo(1000 / (T_FIXED + T_SEQ), 6);
    expect(batch1).toBeGreaterThan(285);
    expect(batch1).toBeLessThan(295);
    const batch64 = rate(64, 1000);
    expect(batch64).toBeCloseTo((64 * 1000) / (T_FIXED + 64 * T_SEQ), 6);
    expect(batch64).toBeGreaterThan(8_500);
    expect(batch64).toBeLessThan(9_500);
  });

  it('queues the 65th request until a batch slot frees', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({}, { clock });
    const traces = Array.from({ length: 65 }, () => submit(engine, clock, 0, 10).trace);
    clock.advance(0);
    expect(engine.running).toBe(64);
    expect(engine.waiting).toBe(1);
    clock.runUntilIdle();
    const fullStep = T_FIXED + 64 * T_SEQ;
    expect(traces[0]!.doneAt).toBeCloseTo(10 * fullStep, 9);
    const last = traces[64]!;
    expect(last.admittedAt).toBeCloseTo(10 * fullStep, 9);
    expect(last.tokenTimes[0]).toBeCloseTo(10 * fullStep + T_FIXED + T_SEQ, 9);
  });

  it('queues on the KV budget (prompt + whole output reserved)', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({ kv_tokens: 1000 }, { clock });
    const first = submit(engine, clock, 500, 100).trace;
    const second = submit(engine, clock, 500, 100).trace;
    const small = submit(engine, clock, 10, 10).trace;
    clock.advance(0);
    expect(engine.running).toBe(1);
    // Strict FIFO: the small request waits behind the one that does not fit.
    expect(engine.waiting).toBe(2);
    clock.runUntilIdle();
    const firstStep = 500 * T_PREFILL_MS + T_FIXED + T_SEQ;
    const firstDone = firstStep + 99 * (T_FIXED + T_SEQ);
    expect(first.doneAt).toBeCloseTo(firstDone, 9);
    expect(second.admittedAt).toBeCloseTo(firstDone, 9);
    expect(small.admittedAt).toBeCloseTo(firstDone, 9);
    expect(second.tokenTimes[0]).toBeCloseTo(firstDone + 510 * T_PREFILL_MS + T_FIXED + 2 * T_SEQ, 9);
  });

  it('rejects a request that can never fit', () => {
    const engine = new ReplicaEngine({ kv_tokens: 100 }, { clock: new VirtualClock() });
    expect(engine.canFit(60, 40)).toBe(true);
    expect(engine.canFit(60, 41)).toBe(false);
    expect(() => engine.submit({ promptTokens: 60, outputTokens: 41 })).toThrow(RangeError);
    expect(() => engine.submit({ promptTokens: -1, outputTokens: 1 })).toThrow(RangeError);
  });

  it('frees a cancelled sequence’s slot at the next step and emits nothing after cancel', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({ max_batch: 1 }, { clock });
    const long = submit(engine, clock, 0, 1000);
    const next = submit(engine, clock, 0, 5).trace;
    clock.advance(10); // steps end at 3.455, 6.91, 10.365
    expect(long.trace.tokenTimes).toHaveLength(2);
    long.sequence.cancel();
    expect(long.sequence.state).toBe('cancelled');
    expect(engine.running).toBe(0);
    clock.runUntilIdle();
    expect(long.trace.tokenTimes).toHaveLength(2);
    expect(long.trace.doneAt).toBeUndefined();
    expect(next.admittedAt).toBeCloseTo(3 * (T_FIXED + T_SEQ), 9);
    expect(next.doneAt).toBeCloseTo(8 * (T_FIXED + T_SEQ), 9);
    expect(engine.stats.cancelled).toBe(1);
    expect(engine.pendingOutputTokens).toBe(0);
  });

  it('drops a cancelled waiting request from the queue', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({ max_batch: 1 }, { clock });
    submit(engine, clock, 0, 3);
    const waiting = submit(engine, clock, 0, 3);
    const third = submit(engine, clock, 0, 3).trace;
    clock.advance(0);
    expect(engine.waiting).toBe(2);
    waiting.sequence.cancel();
    expect(engine.waiting).toBe(1);
    clock.runUntilIdle();
    expect(waiting.trace.admittedAt).toBeUndefined();
    expect(third.admittedAt).toBeCloseTo(3 * (T_FIXED + T_SEQ), 9);
  });

  it('runs a prefill-only request (0 output tokens) for one step', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({}, { clock });
    const { trace } = submit(engine, clock, 200, 0);
    clock.runUntilIdle();
    expect(trace.tokenTimes).toHaveLength(0);
    expect(trace.doneAt).toBeCloseTo(200 * T_PREFILL_MS + T_FIXED + T_SEQ, 9);
  });

  it('accepts submissions from inside callbacks without a second timer', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({}, { clock });
    let chained = 0;
    const chain = () => {
      if (++chained < 5) engine.submit({ promptTokens: 0, outputTokens: 2, onDone: chain });
    };
    engine.submit({ promptTokens: 0, outputTokens: 2, onDone: chain });
    const end = clock.runUntilIdle();
    expect(chained).toBe(5);
    expect(end).toBeCloseTo(10 * (T_FIXED + T_SEQ), 9);
    expect(clock.pendingTimers).toBe(0);
  });

  it('aborts unfinished sequences on close', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({ max_batch: 1 }, { clock });
    const running = submit(engine, clock, 0, 10);
    const waiting = submit(engine, clock, 0, 10);
    clock.advance(5);
    engine.close();
    expect(running.trace.aborted).toBe(true);
    expect(waiting.trace.aborted).toBe(true);
    expect(running.sequence.state).toBe('aborted');
    expect(clock.pendingTimers).toBe(0);
    expect(() => engine.submit({ promptTokens: 1, outputTokens: 1 })).toThrow(RangeError);
  });

  it('replays 100k requests on a virtual clock in a few seconds', () => {
    const clock = new VirtualClock();
    const engine = new ReplicaEngine({}, { clock });
    let state = 12345;
    const random = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    const total = 100_000;
    let completed = 0;
    let expectedTokens = 0;
    let arrival = 0;
    const started = performance.now();
    for (let index = 0; index < total; index++) {
      // ~70 requests/s of ~128 output tokens: close to the replica's ~9,000 tok/s capacity.
      arrival += -Math.log(1 - random()) * (1000 / 70);
      const outputTokens = 1 + Math.floor(random() * 256);
      const promptTokens = Math.floor(random() * 2000);
      expectedTokens += outputTokens;
      clock.advanceTo(arrival);
      engine.submit({
        promptTokens,
        outputTokens,
        onDone: () => {
          completed++;
        },
      });
    }
    clock.runUntilIdle();
    const wallMs = performance.now() - started;
    expect(completed).toBe(total);
    expect(engine.stats.generatedTokens).toBe(expectedTokens);
    expect(wallMs).toBeLessThan(5_000);
  });
});
