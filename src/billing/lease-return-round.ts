/**
 * Cluster mode's settle round for wallet leases: a process about to refuse a request for want of funds (or to show a
 * tenant its balance) first has every other live process give back the funds it leased and does not use, over a
 * bus (Redis pub/sub in cluster mode), and waits until each has answered or `timeoutMs` passed. Workers on one SQLite
 * file do the same through their primary (`WorkerSettleBarrier`).
 *
 * Messages are bus subjects: `<prefix>ask:<round>:<owner>` asks every process but the asking owner to give back its
 * unused leases; each answers `<prefix>done:<round>:<owner>` once its store writes are done.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../observability/logger.js';
import type { InvalidationBus } from '../tenancy/invalidation-bus.js';

/** Options of `LeaseReturnRound`. */
export interface LeaseReturnRoundOptions {
  /** Longest wait for the other processes' answers, ms. Default 250. */
  timeoutMs?: number;
  logger: Logger;
}

const PREFIX = 'tollgate:lease-return:';

/** One process's side of lease-return rounds: answers the others' and runs its own. */
export class LeaseReturnRound {
  private readonly timeoutMs: number;
  private readonly logger: Logger;
  private readonly waiting = new Map<string, { expected: Set<string>; done: () => void }>();
  private readonly unsubscribe: () => void;
  private running: Promise<void> | undefined;

  /**
   * `returnUnused` gives back this process's unused leases; `owner` is its reservation owner; `liveOwners` lists the
   * owners whose answers a round waits for (this process's is left out).
   */
  constructor(
    private readonly bus: InvalidationBus,
    private readonly returnUnused: () => Promise<void>,
    private readonly owner: () => string | undefined,
    private readonly liveOwners: () => Promise<string[]>,
    options: LeaseReturnRoundOptions,
  ) {
    this.timeoutMs = options.timeoutMs ?? 250;
    this.logger = options.logger;
    this.unsubscribe = bus.subscribe((subject) => this.onMessage(subject));
  }

  /**
   * Gives back this process's unused leases and has every other live process do the same; never rejects. Calls
   * while a round runs join it: a tenant refused many times at once (an empty wallet) costs one round, not one each.
   */
  run(): Promise<void> {
    this.running ??= this.runRound().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async runRound(): Promise<void> {
    const me = this.owner();
    const round = randomBytes(8).toString('hex');
    try {
      const expected = new Set((await this.liveOwners()).filter((owner) => owner !== me));
      const answered = new Promise<void>((resolve) => {
        if (expected.size === 0) resolve();
        else this.waiting.set(round, { expected, done: resolve });
      });
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.timeoutMs);
        timer.unref();
      });
      await Promise.all([this.returnUnused(), this.bus.publish(`${PREFIX}ask:${round}:${me ?? ''}`)]);
      await Promise.race([answered, timedOut]);
      clearTimeout(timer);
    } catch (error: unknown) {
      this.logger.warn({ err: error }, 'lease return round failed: deciding on what this process knows');
    } finally {
      this.waiting.delete(round);
    }
  }

  close(): void {
    this.unsubscribe();
    for (const { done } of this.waiting.values()) done();
    this.waiting.clear();
  }

  private onMessage(subject: string): void {
    if (!subject.startsWith(PREFIX)) return;
    // `<kind>:<round>:<owner>`; an owner id has colons of its own.
    const rest = subject.slice(PREFIX.length);
    const first = rest.indexOf(':');
    const second = rest.indexOf(':', first + 1);
    if (first < 0 || second < 0) return;
    const kind = rest.slice(0, first);
    const round = rest.slice(first + 1, second);
    const from = rest.slice(second + 1);
    const me = this.owner();
    if (kind === 'ask') {
      if (from === (me ?? '')) return;
      void this.returnUnused().then(() =>
        this.bus.publish(`${PREFIX}done:${round}:${me ?? ''}`).catch((error: unknown) => {
          this.logger.warn({ err: error }, 'could not answer a lease return round');
        }),
      );
    } else if (kind === 'done') {
      const waiting = this.waiting.get(round);
      if (waiting === undefined) return;
      waiting.expected.delete(from);
      if (waiting.expected.size === 0) {
        this.waiting.delete(round);
        waiting.done();
      }
    }
  }
}
