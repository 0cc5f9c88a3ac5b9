import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InvalidationBus } from './invalidation-bus.js';

/** A bus as the conformance suite drives it: one process's end of a channel. */
export type BusUnderTest = InvalidationBus & { ready(): Promise<void>; close(): Promise<void> };

/** How the conformance suite reaches one cross-process `InvalidationBus` implementation. */
export interface InvalidationBusConformanceOptions {
  /** A new process's bus on `channel` (its own connections), hearing the others opened on the same channel. */
  open: (channel: string) => BusUnderTest;
  /** A bus whose server cannot be reached; `onFailure` is its failure callback (the metric). */
  openUnreachable: (channel: string, onFailure: () => void) => BusUnderTest;
}

const eventually = { timeout: 10_000, interval: 20 };

/**
 * Registers the conformance tests (Vitest) of a bus between processes: what every implementation (Redis pub/sub,
 * PostgreSQL LISTEN/NOTIFY, node:cluster IPC through the primary) guarantees to the services that cache state
 * (`KeyService`, `BillingService`, `PlanService`) and to `LeaseReturnRound`.
 */
export function describeInvalidationBusConformance(name: string, options: InvalidationBusConformanceOptions): void {
  describe(`InvalidationBus conformance: ${name}`, () => {
    const opened: BusUnderTest[] = [];
    let sequence = 0;
    const run = `${process.pid}_${Date.now().toString(36)}`;
    const channel = () => `tgtest_${run}_${sequence++}`;

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((bus) => bus.close()));
    });

    function open(on: string, unreachable?: () => void) {
      const bus = unreachable === undefined ? options.open(on) : options.openUnreachable(on, unreachable);
      opened.push(bus);
      const seen: string[] = [];
      const unsubscribe = bus.subscribe((subject) => seen.push(subject));
      return { bus, seen, unsubscribe };
    }

    it("runs the publisher's own subscribers before publish resolves, and every other process's soon after", async () => {
      const on = channel();
      const [first, second, third] = [open(on), open(on), open(on)];
      await Promise.all([first.bus.ready(), second.bus.ready(), third.bus.ready()]);
      await first.bus.publish('key_abc');
      // The publisher drops it at once (its own next request is refused); the others when the message arrives.
      expect(first.seen).toContain('key_abc');
      await vi.waitFor(() => {
        expect(second.seen).toEqual(['key_abc']);
        expect(third.seen).toEqual(['key_abc']);
      }, eventually);
    });

    it('stops delivering to a handler once it unsubscribed, here and from the others', async () => {
      const on = channel();
      const [publisher, listener] = [open(on), open(on)];
      const kept: string[] = [];
      listener.bus.subscribe((subject) => kept.push(subject));
      await Promise.all([publisher.bus.ready(), listener.bus.ready()]);
      listener.unsubscribe();
      publisher.unsubscribe();
      await publisher.bus.publish('key_1');
      // The handler still subscribed hears it: by then the other would have too.
      await vi.waitFor(() => expect(kept).toEqual(['key_1']), eventually);
      expect(listener.seen).toEqual([]);
      expect(publisher.seen).toEqual([]);
    });

    it('never fails a publish the others cannot be sent: its own subscribers hear it, and the failure is counted', async () => {
      let failures = 0;
      const down = open(channel(), () => {
        failures += 1;
      });
      const before = failures;
      await expect(down.bus.publish('key_down')).resolves.toBeUndefined();
      expect(down.seen).toEqual(['key_down']);
      expect(failures - before).toBe(1);
    });
  });
}
