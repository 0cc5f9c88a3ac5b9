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

function submit(
  engine: ReplicaEngine,
  clock: VirtualClock,
  promptTokens: number,
  outputTokens: number,
  priority?: number,
) {
  const trace: Trace = { tokenTimes: [] };
  const sequence = engine.submit({
    promptTokens,
    outputTokens,
    ...(priority === undefined ? {} : { priority }),
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
      // Off by default: whole prompts join in one step, in arrival order.
      prefill_chunk_tokens: 0,
      background_prefill_tokens: 0,
      scheduling_policy: 'fcfs',
    });
    expect(resolveSimulatedProfile({ max_batch: 8 }).max_batch).toBe(8);
    expect(() => resolveSimulatedProfile({ max_batch: 0 })).toThrow(RangeError);
    expect(() => resolveSimulatedProfile({ prefill_chunk_tokens: -1 })).toThrow(RangeError);
    expect(() => resolveSimulatedProfile({ prefill_chunk_tokens: 1.5 })).toThrow(RangeError);
    expect(() => resolveSimulatedProfile({ scheduling_policy: 'lifo' as 'fcfs' })).toThrow(RangeError);
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

describe('ReplicaEngine, chunked prefill and priority scheduling', () => {
  it('spreads a long prompt over steps of at most prefill_chunk_tokens, decodes going on meanwhile', () => {
    const clock = new VirtualClock(0);
    const engine = new ReplicaEngine({ prefill_chunk_tokens: 512 }, { clock });
    const decoder = submit(engine, clock, 0, 20).trace;
    const long = submit(engine, clock, 1200, 3).trace;
    clock.runUntilIdle();

    // The prompt takes three steps (512 + 512 + 176); only the last one emits its first token. The decoder emits at
    // every step, each lasting fixed + emitting sequences × t_seq + that step's chunk.
    const steps = [512, 512, 176].map((chunk, index) => T_FIXED + (index < 2 ? 1 : 2) * T_SEQ + chunk * T_PREFILL_MS);
    expect(long.admittedAt).toBe(0);
    expect(decoder.tokenTimes[0]).toBeCloseTo(steps[0]!, 9);
    expect(decoder.tokenTimes[1]! - decoder.tokenTimes[0]!).toBeCloseTo(steps[1]!, 9);
    expect(long.tokenTimes[0]).toBeCloseTo(steps[0]! + steps[1]! + steps[2]!, 9);
    expect(decoder.tokenTimes[2]).toBeCloseTo(long.tokenTimes[0]!, 9);
    expect(decoder.tokenTimes[3]! - decoder.tokenTimes[2]!).toBeCloseTo(T_FIXED + 2 * T_SEQ, 9);
    expect(engine.stats.promptTokens).toBe(1200);
    expect(long.tokenTimes).toHaveLength(3);
  });

  it('finishes a prefill-only request at the end of its last chunk', () => {
    const clock = new VirtualClock(0);
    const engine = new ReplicaEngine({ prefill_chunk_tokens: 100 }, { clock });
    const { trace } = submit(engine, clock, 250, 0);
    clock.runUntilIdle();
    expect(trace.tokenTimes).toEqual([]);
    // Two steps of 100 with no emitting sequence, then one of 50 that finishes it.
    expect(trace.doneAt).toBeCloseTo(3 * T_FIXED + T_SEQ + 250 * T_PREFILL_MS, 9);
    expect(engine.stats).toMatchObject({ steps: 3, promptTokens: 250, completed: 1 });
  });

  it('under fcfs a later request prefills behind an earlier long prompt; under priority it goes first', () => {
    const firstTokenOfSecond = (policy: 'fcfs' | 'priority') => {
      const clock = new VirtualClock(0);
      const engine = new ReplicaEngine({ prefill_chunk_tokens: 256, scheduling_policy: policy }, { clock });
      const low = submit(engine, clock, 4_000, 5, 1).trace;
      clock.advance(0); // the low-priority prompt is in prefill
      const high = submit(engine, clock, 200, 5, 0).trace;
      clock.runUntilIdle();
      return { high: high.tokenTimes[0]!, low: low.tokenTimes[0]! };
    };
    const fcfs = firstTokenOfSecond('fcfs');
    const priority = firstTokenOfSecond('priority');
    // fcfs: the 4,000-token prompt (16 chunks) prefills first; priority: the 200-token prompt takes the next chunk.
    expect(fcfs.high).toBeGreaterThan(fcfs.low);
    expect(priority.high).toBeLessThan(priority.low);
    // One chunk of the low prompt alone, then a step with all 200 high tokens (which emits) and 56 low ones.
    expect(priority.high).toBeCloseTo(2 * (T_FIXED + 256 * T_PREFILL_MS) + T_SEQ, 9);
  });

  it('admits waiting requests by priority under the priority policy, by arrival under fcfs', () => {
    const order = (policy: 'fcfs' | 'priority') => {
      const clock = new VirtualClock(0);
      const engine = new ReplicaEngine({ max_batch: 1, scheduling_policy: policy }, { clock });
      const admitted: string[] = [];
      for (const [name, priority] of [
        ['a', 5],
        ['b', 5],
        ['c', 0],
        ['d', 2],
      ] as const) {
        engine.submit({ promptTokens: 1, outputTokens: 1, priority, onAdmit: () => admitted.push(name) });
      }
      clock.runUntilIdle();
      return admitted.join('');
    };
    expect(order('fcfs')).toBe('abcd');
    expect(order('priority')).toBe('cdab');
  });

  it('frees a cancelled sequence in prefill and gives its budget to the next', () => {
    const clock = new VirtualClock(0);
    const engine = new ReplicaEngine({ prefill_chunk_tokens: 100 }, { clock });
    const first = submit(engine, clock, 1_000, 5);
    const second = submit(engine, clock, 50, 5).trace;
    clock.advance(0);
    first.sequence.cancel();
    clock.runUntilIdle();
    expect(first.trace.tokenTimes).toEqual([]);
    expect(second.tokenTimes).toHaveLength(5);
    expect(engine.kvTokensInUse).toBe(0);
    expect(engine.stats.promptTokens).toBe(150);
  });

  it('limits background prefill per step; foreground prompts prefill whole, first and alone', () => {
    const clock = new VirtualClock(0);
    const profile = { scheduling_policy: 'priority', background_prefill_tokens: 100 } as const;
    const engine = new ReplicaEngine(profile, { clock });
    const background = submit(engine, clock, 350, 2, 2).trace;
    clock.advance(0); // the background prompt takes its first 100 tokens
    const foreground = submit(engine, clock, 1_000, 3, 0).trace;
    const small = submit(engine, clock, 30, 1, 0).trace;
    clock.runUntilIdle();
    const step = (prefill: number, emitting: number) => T_FIXED + emitting * T_SEQ + prefill * T_PREFILL_MS;
    // Step 1: 100 background tokens. Step 2: both foreground prompts whole (they emit), no background prefill on top.
    expect(foreground.tokenTimes[0]).toBeCloseTo(step(100, 0) + step(1_030, 2), 9);
    expect(small.tokenTimes[0]).toBeCloseTo(foreground.tokenTimes[0]!, 9);
    // Steps 3–5: 100, 100 and 50 background tokens while the foreground decodes; the background one emits after step 5.
    const afterForeground = step(100, 0) + step(1_030, 2) + step(100, 1) + step(100, 1) + step(50, 1);
    expect(background.tokenTimes[0]).toBeCloseTo(afterForeground, 9);
    // Under fcfs the option does nothing: the background prompt is prefilled whole in the first step.
    const fcfsClock = new VirtualClock(0);
    const fcfs = new ReplicaEngine({ background_prefill_tokens: 100 }, { clock: fcfsClock });
    const whole = submit(fcfs, fcfsClock, 350, 1, 2).trace;
    fcfsClock.runUntilIdle();
    expect(whole.tokenTimes[0]).toBeCloseTo(step(350, 1), 9);
  });
});
