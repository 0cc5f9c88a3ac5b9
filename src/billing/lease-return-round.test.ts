import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { InProcessInvalidationBus } from '../tenancy/invalidation-bus.js';
import { LeaseReturnRound } from './lease-return-round.js';

const logger = pino({ level: 'silent' });

/** A round of owner `host:1:aa` among `owners` that counts its own returns; `host:9:…` owners never answer. */
function countingRound(bus: InProcessInvalidationBus, owners: string[], timeoutMs: number) {
  const counts = { returns: 0 };
  const round = new LeaseReturnRound(
    bus,
    async () => {
      counts.returns += 1;
    },
    () => 'host:1:aa',
    async () => owners,
    { logger, timeoutMs },
  );
  return { round, counts };
}

describe('LeaseReturnRound', () => {
  it('has every other live process give back its unused leases before the round ends', async () => {
    const bus = new InProcessInvalidationBus();
    const owners = ['host:1:aa', 'host:2:bb', 'host:3:cc'];
    const returned: string[] = [];
    const rounds = owners.map(
      (owner) =>
        new LeaseReturnRound(
          bus,
          async () => {
            // A store write: the answer goes out only after it.
            await new Promise((resolve) => setTimeout(resolve, 20));
            returned.push(owner);
          },
          () => owner,
          async () => owners,
          // Longer than the test may take: the round must end by the answers.
          { logger, timeoutMs: 600_000 },
        ),
    );
    await rounds[0]!.run();
    expect(returned.sort()).toEqual([...owners].sort());
    for (const round of rounds) round.close();
  });

  it('has calls made while a round runs join it', async () => {
    const bus = new InProcessInvalidationBus();
    let asks = 0;
    bus.subscribe((subject) => {
      if (subject.includes(':ask:')) asks += 1;
    });
    const { round, counts } = countingRound(bus, ['host:1:aa', 'host:9:slow'], 50);
    await Promise.all(Array.from({ length: 10 }, () => round.run()));
    expect({ asks, returns: counts.returns }).toEqual({ asks: 1, returns: 1 });
    await round.run();
    expect({ asks, returns: counts.returns }).toEqual({ asks: 2, returns: 2 });
    round.close();
  });

  it('stops waiting after its timeout for a process that never answers', async () => {
    const { round, counts } = countingRound(new InProcessInvalidationBus(), ['host:1:aa', 'host:9:gone'], 100);
    const started = Date.now();
    await round.run();
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(counts.returns).toBe(1);
    round.close();
  });
});
